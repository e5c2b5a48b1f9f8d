"""ResNet blocks against their definition: basic block vs numpy, parameter counts of ResNet-18/50."""
import numpy as np
import pytest
import mindspore as ms

from src.config import ConfigError
from src.demo.synthetic_batch import small_config
from src.layers.frozen_batch_norm import folding_saves_memory
from src.maskrcnn.resnet50 import BasicBlock, ResNetFea


def conv2d(x, w, stride, pad):
    """Cross-correlation of x (C, H, W) with w (O, C, k, k), zero padding ``pad``: (O, H', W')."""
    c, h, wd = x.shape
    k = w.shape[-1]
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    out = np.zeros((w.shape[0], oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, i * stride:i * stride + k, j * stride:j * stride + k]
            out[:, i, j] = np.tensordot(w, patch, axes=([1, 2, 3], [0, 1, 2]))
    return out


def frozen_bn(x, cell):
    g, b = cell.gamma.asnumpy(), cell.beta.asnumpy()
    m, v = cell.moving_mean.asnumpy(), cell.moving_variance.asnumpy()
    return (x - m[:, None, None]) / np.sqrt(v[:, None, None] + 1e-5) * g[:, None, None] + b[:, None, None]


def randomise(cell, rng):
    for p in cell.get_parameters():
        if "moving_variance" in p.name:
            p.set_data(ms.Tensor(rng.uniform(0.5, 2.0, p.shape).astype(np.float32)))
        else:
            p.set_data(ms.Tensor(rng.normal(0, 0.3, p.shape).astype(np.float32)))


# the last size is large enough for the frozen BatchNorms to fold into the convolutions
@pytest.mark.parametrize("cin,cout,stride,size", [(8, 16, 2, (9, 10)), (16, 16, 1, (9, 10)), (4, 8, 2, (24, 22))])
def test_basic_block_is_two_3x3_convs_with_a_projection_shortcut(cin, cout, stride, size):
    rng = np.random.default_rng(cin + stride)
    block = BasicBlock(cin, cout, stride, "frozen_bn")
    block.set_train(True)  # frozen BatchNorms fold only in training; they normalise the same in both modes
    randomise(block, rng)
    x = rng.normal(0, 1, (1, cin) + size).astype(np.float32)
    folds = folding_saves_memory(block.conv1, x.shape)
    assert folds == (size == (24, 22)) and (not folds or folding_saves_memory(block.conv_down_sample, x.shape))
    got = block(ms.Tensor(x)).asnumpy()[0]
    w = lambda conv: conv.weight.asnumpy()  # noqa: E731
    relu = lambda a: np.maximum(a, 0)  # noqa: E731
    out = relu(frozen_bn(conv2d(x[0], w(block.conv1), stride, 1), block.bn1))
    out = frozen_bn(conv2d(out, w(block.conv2), 1, 1), block.bn2)
    identity = x[0]
    if cin != cout or stride != 1:
        identity = frozen_bn(conv2d(x[0], w(block.conv_down_sample), stride, 0), block.bn_down_sample)
    else:
        assert not hasattr(block, "conv_down_sample")
    np.testing.assert_allclose(got, relu(out + identity), rtol=1e-4, atol=1e-4)


def trainable_count(net):
    return sum(int(np.prod(p.shape)) for p in net.trainable_params())


def test_parameter_counts_match_resnet18_and_resnet50():
    # torchvision's resnet18 / resnet50 have 11,689,512 / 25,557,032 parameters, of which the
    # 1000-way classifier takes 512 x 1000 + 1000 / 2048 x 1000 + 1000
    r18 = ResNetFea([2, 2, 2, 2], [64, 64, 128, 256], [64, 128, 256, 512], "bn", block_type="basic")
    assert trainable_count(r18) == 11_689_512 - 513_000
    r50 = ResNetFea([3, 4, 6, 3], [64, 256, 512, 1024], [256, 512, 1024, 2048], "bn")
    assert trainable_count(r50) == 25_557_032 - 2_049_000


def test_resnet_config_is_checked():
    with pytest.raises(ConfigError, match="resnet_in_channels"):
        small_config(resnet_in_channels=[64, 64, 512, 1024])
    with pytest.raises(ConfigError, match="resnet_block_type"):
        small_config(resnet_block_type="wide")
    with pytest.raises(ValueError, match="resnet_block_type"):
        ResNetFea([1, 1, 1, 1], [8, 8, 16, 32], [8, 16, 32, 64], "bn", block_type="wide")
