"""A frozen BatchNorm folded into the convolution before it (``src.layers.frozen_batch_norm``):
values and the gradients of input, kernel, gamma and beta against numpy written from the
definition of convolution and BatchNorm on moving statistics; which of the backbone's norms fold."""
import numpy as np
import pytest

import mindspore as ms
from mindspore import nn, ops

from src.layers.conv2d import Conv2d, set_conv_backward
from src.layers.frozen_batch_norm import conv_frozen_batch_norm
from src.maskrcnn.resnet50 import Bottleneck
from test_conv2d_taps import numpy_conv_grads

EPS = 1e-5


def windows(x, k, stride, pad):
    """x (N, C, H, W) -> (N, C, H', W', k, k): the input under each output pixel, zero padded."""
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    return np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]


def numpy_conv_bn_and_grads(x, w, gamma, beta, mean, var, dout, stride):
    """y = BN(conv(x, w)) on moving statistics (zero padding k // 2), and the gradients of
    sum(y * dout) by x, w, gamma, beta, in float64, from the definitions z[n, o] = sum_{c, i, j}
    w[o, c, i, j] xp[n, c, s y + i, s x + j], y = (z - mean) / sqrt(var + eps) * gamma + beta: the
    convolution's gradients are those of sum(z * dz), dz = dout * gamma / sqrt(var + eps)."""
    x, w, dout = (a.astype(np.float64) for a in (x, w, dout))
    k = w.shape[2]
    z = np.einsum("ncyxij,ocij->noyx", windows(x, k, stride, k // 2), w)
    inv = 1.0 / np.sqrt(var.astype(np.float64) + EPS)
    per = lambda v: v[None, :, None, None]  # noqa: E731
    y = (z - per(mean)) * per(inv * gamma) + per(beta)
    dx, dw = numpy_conv_grads(x, w, dout * per(inv * gamma), stride)
    dgamma = (dout * (z - per(mean)) * per(inv)).sum((0, 2, 3))
    dbeta = dout.sum((0, 2, 3))
    return y, dx, dw, dgamma, dbeta


class FoldedGrads(nn.Cell):
    """(y, dx, (dw, dgamma, dbeta)) of sum(conv_frozen_batch_norm(conv, norm, x) * dout)."""

    def __init__(self, conv, norm):
        super().__init__()
        self.conv, self.norm = conv, norm
        self.weights = ms.ParameterTuple([conv.weight, norm.gamma, norm.beta])
        self.grad = ops.GradOperation(get_all=True, get_by_list=True)

    def forward(self, x):
        return conv_frozen_batch_norm(self.conv, self.norm, x)

    def loss(self, x, dout):
        return (self.forward(x) * dout).sum()

    def construct(self, x, dout):
        (dx, _), dparams = self.grad(self.loss, self.weights)(x, dout)
        return self.forward(x), dx, dparams


@pytest.mark.parametrize("kernel, stride, taps", [(3, 1, False), (3, 1, True), (1, 2, False), (3, 2, False)])
def test_folded_norm_equals_conv_then_frozen_batch_norm(kernel, stride, taps):
    ms.set_context(mode=ms.GRAPH_MODE)
    rng = np.random.default_rng(kernel * 10 + stride)
    cin, cout, shape = 3, 5, (2, 3, 9, 8)
    x = rng.standard_normal(shape).astype(np.float32)
    conv = Conv2d(cin, cout, kernel, stride=stride, pad_mode="pad", padding=kernel // 2, has_bias=False,
                  weight_init="normal")
    if taps:
        assert set_conv_backward(conv, "taps") == 1
    norm = nn.BatchNorm2d(cout, eps=EPS, use_batch_statistics=False)
    stats = {"gamma": rng.normal(1, 0.5, cout), "beta": rng.normal(0, 0.5, cout),
             "moving_mean": rng.normal(0, 0.5, cout), "moving_variance": rng.uniform(0.3, 2.0, cout)}
    for name, value in stats.items():
        getattr(norm, name).set_data(ms.Tensor(value.astype(np.float32)))
    w = conv.weight.asnumpy()
    out_shape = (2, cout, (9 - 1) // stride + 1, (8 - 1) // stride + 1)  # padding k // 2, odd k
    dout = rng.standard_normal(out_shape).astype(np.float32)
    ref = numpy_conv_bn_and_grads(x, w, *(stats[k].astype(np.float32) for k in stats), dout, stride)
    y, dx, (dw, dgamma, dbeta) = FoldedGrads(conv, norm)(ms.Tensor(x), ms.Tensor(dout))
    for got, want in zip((y, dx, dw, dgamma, dbeta), ref):
        np.testing.assert_allclose(got.asnumpy(), want, rtol=1e-4, atol=1e-4)


def test_backbone_blocks_fold_frozen_batch_norm_only():
    """Only a norm with fixed statistics is an affine map that folds: batch-statistics BatchNorm and
    GroupNorm normalise by statistics of the activations."""
    assert Bottleneck(64, 128, 1, "frozen_bn").fold_norm
    assert not Bottleneck(64, 128, 1, "bn").fold_norm
    assert not Bottleneck(64, 128, 1, "gn").fold_norm
