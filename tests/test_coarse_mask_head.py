"""The coarse head's 2x2/2 convolution (one matmul over patches) against a convolution from its
definition, and the patch order of the grid its input is sampled on."""
import numpy as np
import mindspore as ms
from mindspore import nn, ops

from src.layers.point_sample import patch_grid_points
from src.pointrend.coarse_mask_head import CoarseMaskHead, PatchConv


def numpy_patch_conv(x, weight, bias):
    """x (R, H, W, C) channels last; weight (O, C, k, k); stride k, no padding -> (R, H/k, W/k, O)."""
    r, h, w, _ = x.shape
    o, _, k, _ = weight.shape
    out = np.zeros((r, h // k, w // k, o), np.float64)
    for i in range(h // k):
        for j in range(w // k):
            patch = x[:, i * k:(i + 1) * k, j * k:(j + 1) * k, :]  # (R, k, k, C)
            out[:, i, j, :] = np.einsum("rabc,ocab->ro", patch, weight) + bias
    return out


def by_patch(x, k):
    """(R, H, W, C) map -> (R, H/k, W/k, k, k, C), PatchConv's input (works on numpy and MindSpore)."""
    r, h, w, c = x.shape
    return x.reshape(r, h // k, k, w // k, k, c).transpose(0, 1, 3, 2, 4, 5)


def test_patch_conv_matches_definition_and_conv2d_gradient():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 6, 4, 5)).astype(np.float32)
    conv = PatchConv(5, 7, 2, "normal")
    conv.bias.set_data(ms.Tensor(rng.standard_normal(7).astype(np.float32)))
    got = conv(ms.Tensor(np.ascontiguousarray(by_patch(x, 2)))).asnumpy()
    assert got.shape == (3, 3, 2, 7)
    np.testing.assert_allclose(got, numpy_patch_conv(x, conv.weight.asnumpy(), conv.bias.asnumpy()),
                               rtol=1e-4, atol=1e-5)

    # gradients (input and weight) equal those of MindSpore's Conv2D with the same parameters
    ref = nn.Conv2d(5, 7, 2, stride=2, pad_mode="valid", has_bias=True)
    ref.weight.set_data(conv.weight.data)
    ref.bias.set_data(conv.bias.data)
    upstream = ms.Tensor(rng.standard_normal((3, 3, 2, 7)).astype(np.float32))

    def loss_patch(inp):
        return (conv(by_patch(inp, 2)) * upstream).sum()

    def loss_ref(inp):
        out = ref(ops.transpose(inp, (0, 3, 1, 2)))
        return (ops.transpose(out, (0, 2, 3, 1)) * upstream).sum()

    g_patch = ms.value_and_grad(loss_patch, 0, conv.trainable_params())(ms.Tensor(x))[1]
    g_ref = ms.value_and_grad(loss_ref, 0, ref.trainable_params())(ms.Tensor(x))[1]
    np.testing.assert_allclose(g_patch[0].asnumpy(), g_ref[0].asnumpy(), rtol=1e-4, atol=1e-5)
    for a, b in zip(g_patch[1], g_ref[1]):
        np.testing.assert_allclose(a.asnumpy(), b.asnumpy(), rtol=1e-4, atol=1e-5)


def test_coarse_head_shapes_and_parameter_names():
    head = CoarseMaskHead(in_channels=8, conv_dim=6, fc_dim=16, num_fc=2, out_resolution=3, num_classes=4)
    out = head(ms.Tensor(np.ones((2, 3, 3, 2, 2, 8), np.float32)))
    assert out.shape == (2, 4, 3, 3)
    shapes = {p.name: p.shape for p in head.get_parameters()}
    # nn.Conv2d's names and layout, so checkpoints keep their meaning
    assert shapes["reduce_spatial_dim_conv.weight"] == (6, 8, 2, 2)
    assert shapes["reduce_spatial_dim_conv.bias"] == (6,)


def test_patch_grid_points_are_the_regular_grid_grouped_by_patch():
    side, k = 6, 2
    points = patch_grid_points(side, k).reshape(side // k, side // k, k, k, 2)
    for oy in range(side // k):
        for ox in range(side // k):
            for ky in range(k):
                for kx in range(k):
                    row, col = oy * k + ky, ox * k + kx  # cell of the row-major grid
                    np.testing.assert_allclose(points[oy, ox, ky, kx], [(col + 0.5) / side, (row + 0.5) / side])
