"""The taps backward of ``src.layers.conv2d`` (conv_backward): input and weight gradients against
numpy written from the convolution's definition and against MindSpore's own gradient kernels;
which convolutions take it; how ``auto`` resolves; the network's convolutions that run it."""
import numpy as np
import pytest

import mindspore as ms
from mindspore import nn, ops

from src.config import config_from_dict
from src.layers.conv2d import Conv2d, resolve_conv_backward, set_conv_backward, takes_tap_backward


def numpy_conv_grads(x, w, dout, stride=1):
    """Gradients of sum(conv2d(x, w) * dout) (zero padding k // 2), from the definition
    out[n, o, y, x] = sum_{c, i, j} w[o, c, i, j] xp[n, c, s y + i, s x + j] (xp: x zero-padded)."""
    k = w.shape[2]
    p = k // 2
    h, wd = x.shape[2:]
    oh, ow = dout.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))).astype(np.float64)
    dw = np.zeros(w.shape)
    dxp = np.zeros_like(xp)
    for i in range(k):
        for j in range(k):
            rows, cols = slice(i, i + stride * (oh - 1) + 1, stride), slice(j, j + stride * (ow - 1) + 1, stride)
            dw[:, :, i, j] = np.einsum("noyx,ncyx->oc", dout, xp[:, :, rows, cols])
            dxp[:, :, rows, cols] += np.einsum("noyx,oc->ncyx", dout, w[:, :, i, j])
    return dxp[:, :, p:p + h, p:p + wd], dw


def conv_grads(cell, x, dout):
    """(d input, d weight, d bias) of sum(cell(x) * dout), in graph mode."""
    class Grads(nn.Cell):
        def __init__(self):
            super().__init__()
            self.cell = cell
            self.weights = ms.ParameterTuple(cell.trainable_params())
            self.grad = ops.GradOperation(get_all=True, get_by_list=True)

        def loss(self, x, dout):
            return (self.cell(x) * dout).sum()

        def construct(self, x, dout):
            return self.grad(self.loss, self.weights)(x, dout)

    (dx, _), (dw, db) = Grads()(ms.Tensor(x), ms.Tensor(dout))
    return dx.asnumpy(), dw.asnumpy(), db.asnumpy()


@pytest.mark.parametrize("kernel, pad_mode, stride, shape", [
    (3, "same", 1, (2, 3, 7, 9)), (5, "pad", 1, (1, 4, 6, 5)),
    # stride 2: even and odd sizes (the last phase row / column outside), a 5 x 5 kernel, an image
    # smaller than the kernel
    (3, "pad", 2, (2, 3, 8, 10)), (3, "pad", 2, (1, 4, 7, 9)), (5, "pad", 2, (2, 3, 9, 6)), (3, "pad", 2, (1, 2, 1, 2))])
def test_tap_gradients_equal_the_definition_and_mindspore_kernels(kernel, pad_mode, stride, shape):
    ms.set_context(mode=ms.GRAPH_MODE)
    rng = np.random.default_rng(kernel + shape[2])
    x = rng.standard_normal(shape).astype(np.float32)
    cout = 6
    out_hw = tuple(-(-size // stride) for size in shape[2:])
    dout = rng.standard_normal((shape[0], cout) + out_hw).astype(np.float32)
    kwargs = dict(stride=stride, pad_mode=pad_mode, padding=kernel // 2 if pad_mode == "pad" else 0, has_bias=True,
                  weight_init="normal", bias_init="normal")
    taps = Conv2d(shape[1], cout, kernel, **kwargs)
    assert set_conv_backward(taps, "taps") == 1 and taps.tap_grad_conv is not None
    native = nn.Conv2d(shape[1], cout, kernel, **kwargs)
    native.weight.set_data(taps.weight.value())
    native.bias.set_data(taps.bias.value())

    dx, dw, db = conv_grads(taps, x, dout)
    ref_dx, ref_dw = numpy_conv_grads(x, taps.weight.asnumpy(), dout, stride)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dw, ref_dw, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(db, dout.sum((0, 2, 3)), rtol=1e-5, atol=1e-4)
    # MindSpore's own gradient kernels (oneDNN here) agree, and the forward pass is unchanged
    nat_dx, nat_dw, _ = conv_grads(native, x, dout)
    np.testing.assert_allclose(dx, nat_dx, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dw, nat_dw, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(taps(ms.Tensor(x)).asnumpy(), native(ms.Tensor(x)).asnumpy(), rtol=1e-5, atol=1e-5)


def test_tap_gradients_of_a_float16_layer():
    """Mixed precision (the cell computes in float16, ``to_float`` as amp_level O2 does): the taps
    backward runs and its gradients match the definition to float16 precision."""
    ms.set_context(mode=ms.GRAPH_MODE)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    dout = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
    taps = Conv2d(3, 4, 3, pad_mode="same", has_bias=True, weight_init="normal", bias_init="normal")
    set_conv_backward(taps, "taps")
    taps.to_float(ms.float16)
    dx, dw, _ = conv_grads(taps, x, dout)
    ref_dx, ref_dw = numpy_conv_grads(x, taps.weight.asnumpy(), dout)
    np.testing.assert_allclose(dx.astype(np.float32), ref_dx, rtol=2e-2, atol=2e-2)
    np.testing.assert_allclose(dw.astype(np.float32), ref_dw, rtol=2e-2, atol=5e-2)


def test_which_convolutions_take_the_tap_backward():
    assert takes_tap_backward(Conv2d(4, 4, 3, pad_mode="same"))
    assert takes_tap_backward(Conv2d(4, 4, 3, pad_mode="pad", padding=1))
    assert takes_tap_backward(Conv2d(4, 4, 5, pad_mode="pad", padding=(2, 2, 2, 2)))
    assert takes_tap_backward(Conv2d(4, 4, 3, stride=2, pad_mode="pad", padding=1))
    assert not takes_tap_backward(Conv2d(4, 4, 1))  # no im2col in a 1 x 1 backward
    assert not takes_tap_backward(Conv2d(4, 4, 3, stride=2, pad_mode="same"))  # pads even sizes on one side
    assert not takes_tap_backward(Conv2d(4, 4, 3, stride=3, pad_mode="pad", padding=1))
    assert not takes_tap_backward(Conv2d(4, 4, 3, stride=(1, 2), pad_mode="pad", padding=1))
    assert not takes_tap_backward(Conv2d(4, 4, 3, pad_mode="pad", padding=(1, 0, 1, 0)))
    assert not takes_tap_backward(Conv2d(4, 4, 3, pad_mode="valid"))
    assert not takes_tap_backward(Conv2d(4, 4, 3, pad_mode="same", dilation=2))
    assert not takes_tap_backward(Conv2d(4, 4, 3, pad_mode="same", group=2))
    assert not takes_tap_backward(Conv2d(4, 4, (3, 1), pad_mode="same"))

    cells = nn.SequentialCell([Conv2d(4, 4, 3, pad_mode="same"), Conv2d(4, 4, 3, stride=2, pad_mode="same"),
                               Conv2d(4, 4, 1), nn.Conv2d(4, 4, 3, pad_mode="same"),
                               Conv2d(4, 4, 3, stride=2, pad_mode="pad", padding=1)])
    assert set_conv_backward(cells, "taps") == 2
    assert set_conv_backward(cells, "native") == 0 and cells[0].tap_grad_conv is None
    with pytest.raises(ValueError, match="'auto'"):
        set_conv_backward(cells, "auto")


def test_auto_is_taps_on_cpu_only_from_the_size_threshold_and_the_config_checks_the_values():
    assert resolve_conv_backward("auto", "CPU", 64) == ("taps", 64)
    assert resolve_conv_backward("auto", "GPU", 64) == ("native", 0)
    assert resolve_conv_backward("native", "CPU", 64) == ("native", 0)
    assert resolve_conv_backward("taps", "GPU", 64) == ("taps", 0)
    with pytest.raises(ValueError, match="conv_backward: 'tap'"):
        resolve_conv_backward("tap", "CPU", 64)
    with pytest.raises(Exception, match="conv_backward"):
        config_from_dict({"conv_backward": "fast"})
    with pytest.raises(Exception, match="conv_taps_min_mib"):
        config_from_dict({"conv_taps_min_mib": -1})

    # one image's im2col: Cin x 3 x 3 x H x W float32 values; 1 MiB = 2 ** 18 of them
    conv = Conv2d(64, 64, 3, pad_mode="same")
    set_conv_backward(conv, "taps", min_mib=1)
    assert conv.uses_taps((2, 64, 22, 22))  # 64 * 9 * 484 = 278,784 >= 262,144
    assert not conv.uses_taps((2, 64, 21, 21))  # 254,016: below
    strided = Conv2d(64, 64, 3, stride=2, pad_mode="pad", padding=1)
    set_conv_backward(strided, "taps", min_mib=1)
    assert strided.uses_taps((2, 64, 43, 44))  # the output's pixels: 64 * 9 * 22 * 22 = 278,784
    assert not strided.uses_taps((2, 64, 42, 42))  # 21 x 21: below
    set_conv_backward(conv, "taps")
    assert conv.uses_taps((1, 64, 1, 1))
    set_conv_backward(conv, "native")
    assert not conv.uses_taps((2, 64, 512, 512))


def test_the_network_runs_the_tap_backward_in_backbone_fpn_and_rpn_on_cpu():
    from src.demo.synthetic_batch import small_config
    from src.maskrcnn_pointrend_r50 import MaskRcnnPointRend
    for backward, expected in (("auto", True), ("native", False)):
        cfg = small_config(resnet_block=[1, 1, 1, 1], conv_backward=backward)
        net = MaskRcnnPointRend(cfg, cfg.batch_size)
        taps = {name for name, cell in net.cells_and_names() if isinstance(cell, Conv2d) and cell.tap_grad_conv}
        if not expected:
            assert not taps
            continue
        # every 3x3 conv of the backbone (one block per stage here; stride 2 from layer2 on), its 7x7
        # stride-2 stem (frozen: no backward runs), FPN outputs and RPN
        assert taps == {"backbone.conv1"} | {f"backbone.layer{i}.0.conv2" for i in (1, 2, 3, 4)} | {
            f"fpn_ncek.fpn_convs_list.{i}" for i in range(4)} | {"rpn_with_loss.rpn_convs_list.0.rpn_conv"}


def test_backbone_fpn_and_rpn_gradients_by_taps_equal_the_native_ones():
    """The whole pyramid (frozen stem, 3x3 convs at every level, the RPN conv shared by the five
    levels) at every size with the taps backward, against MindSpore's gradient kernels."""
    from src.demo.synthetic_batch import small_config
    from src.maskrcnn.fpn_neck import FeatPyramidNeck
    from src.maskrcnn.resnet50 import ResNetFea
    from src.maskrcnn.rpn import RPN

    ms.set_context(mode=ms.GRAPH_MODE)
    cfg = small_config(resnet_block=[1, 2, 1, 1], resnet_block_type="basic", resnet_in_channels=[16, 16, 16, 32],
                       resnet_out_channels=[16, 16, 32, 64], fpn_in_channels=[16, 16, 32, 64], fpn_out_channels=32,
                       rpn_in_channels=32, rcnn_in_channels=32, rpn_feat_channels=32)

    class Pyramid(nn.Cell):
        def __init__(self):
            super().__init__()
            self.backbone = ResNetFea(cfg.resnet_block, cfg.resnet_in_channels, cfg.resnet_out_channels, "frozen_bn",
                                      frozen_stages=1, block_type=cfg.resnet_block_type)
            self.fpn = FeatPyramidNeck(cfg.fpn_in_channels, cfg.fpn_out_channels, cfg.fpn_num_outs)
            self.rpn = RPN(cfg.rpn_in_channels, cfg.rpn_feat_channels, cfg.num_anchors, cfg.rpn_cls_out_channels)

        def construct(self, img):
            cls, reg = self.rpn(self.fpn(self.backbone(img)))
            return (cls * cls).sum() + (reg * reg).sum()

    net = Pyramid()
    weights = ms.ParameterTuple(net.trainable_params())
    grad = ops.GradOperation(get_by_list=True)
    img = ms.Tensor(np.random.default_rng(0).standard_normal((2, 3, 64, 96)).astype(np.float32))

    # the 3x3 convs of the basic blocks: both of each block (the first of layer2.0, layer3.0 and
    # layer4.0 with stride 2); the frozen stem; FPN x4; RPN
    assert set_conv_backward(net, "taps") == 10 + 1 + 4 + 1
    by_taps = [g.asnumpy() for g in ms.jit(grad(net, weights))(img)]
    set_conv_backward(net, "native")
    native = [g.asnumpy() for g in ms.jit(grad(net, weights))(img)]
    for param, a, b in zip(weights, by_taps, native):
        scale = max(np.abs(b).max(), 1e-6)
        np.testing.assert_allclose(a / scale, b / scale, atol=2e-4, err_msg=param.name)
