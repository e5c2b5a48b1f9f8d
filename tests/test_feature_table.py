"""Flat-table RoIAlign and point sampling (src/layers) against MindSpore's ROIAlign kernel and a numpy sampler."""
import numpy as np
import mindspore as ms
from mindspore import ops

from src.layers.feature_table import LevelLayout, flatten_levels, weighted_gather
from src.layers.point_sample import LevelPointSampler
from src.layers.roi_align import MultiLevelRoIAlign


def numpy_bilinear_zero_pad(feat, px, py):
    """feat (C, H, W); px, py (P,) in pixel index space; zero outside. Written from the definition."""
    c, h, w = feat.shape
    out = np.zeros((c, len(px)), np.float64)
    for p, (x, y) in enumerate(zip(px, py)):
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
            for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                if 0 <= yy < h and 0 <= xx < w:
                    out[:, p] += wy * wx * feat[:, yy, xx]
    return out


def test_level_point_sampler_matches_numpy_including_outside_points():
    rng = np.random.default_rng(0)
    shapes = [(12, 16), (6, 8)]
    feats = [rng.standard_normal((2, 5, h, w)).astype(np.float32) for h, w in shapes]
    layout = LevelLayout(shapes, 2)
    table = flatten_levels(tuple(ms.Tensor(f) for f in feats))
    sampler = LevelPointSampler(layout, level=1, stride=8)
    # image is 48 x 64 pixels; points include some well outside [0, 1] of the image
    pts = rng.uniform(-0.3, 1.3, size=(3, 40, 2)) * np.array([64, 48])
    batch_index = np.array([0, 1, 1], np.int32)
    got = sampler(table, ms.Tensor(batch_index), ms.Tensor(pts.astype(np.float32))).asnumpy()
    assert got.shape == (3, 40, 5)
    got = got.transpose(0, 2, 1)
    for k in range(3):
        ref = numpy_bilinear_zero_pad(feats[1][batch_index[k]], pts[k, :, 0] / 8 - 0.5, pts[k, :, 1] / 8 - 0.5)
        np.testing.assert_allclose(got[k], ref, rtol=1e-4, atol=1e-5)
    # and against grid_sample (align_corners=False, zeros), the op PointRend's point_sample is defined by
    grid = ms.Tensor((pts / np.array([64, 48]) * 2 - 1)[:, None].astype(np.float32))
    ref = ops.grid_sample(ms.Tensor(feats[1][batch_index]), grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False).asnumpy()[:, :, 0]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def _rois(rng, n, img_w, img_h, min_side, max_side):
    side = rng.uniform(min_side, max_side, size=(n, 2))
    x1 = rng.uniform(-10, img_w - 5, n)
    y1 = rng.uniform(-10, img_h - 5, n)
    return np.stack([x1, y1, x1 + side[:, 0], y1 + side[:, 1]], 1).astype(np.float32)


def test_roi_align_matches_mindspore_kernel_on_each_level():
    rng = np.random.default_rng(1)
    strides = [4, 8, 16, 32]
    img_h, img_w = 128, 160
    shapes = [(img_h // s, img_w // s) for s in strides]
    feats = [rng.standard_normal((2, 3, h, w)).astype(np.float32) for h, w in shapes]
    boxes = np.concatenate([_rois(rng, 30, img_w, img_h, 4, 40), _rois(rng, 20, img_w, img_h, 40, 150), _rois(rng, 20, img_w, img_h, 150, 400)])
    batch = rng.integers(0, 2, size=len(boxes)).astype(np.float32)
    rois = np.concatenate([batch[:, None], boxes], 1)
    align = MultiLevelRoIAlign(shapes, strides, 2, out_size=7, sample_num=2, finest_scale=56)
    got = align(flatten_levels(tuple(ms.Tensor(f) for f in feats)), ms.Tensor(rois)).asnumpy()
    assert got.shape == (70, 3, 7, 7)
    # independent level rule and MindSpore's own ROIAlign kernel per level
    scale = np.sqrt((boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1))
    level = np.clip(np.floor(np.log2(scale / 56 + 1e-6)), 0, 3).astype(int)
    assert len(set(level)) >= 3, "test RoIs should cover several levels"
    for lvl, s in enumerate(strides):
        ref = ops.ROIAlign(7, 7, 1.0 / s, 2, 1)(ms.Tensor(feats[lvl]), ms.Tensor(rois)).asnumpy()
        sel = level == lvl
        np.testing.assert_allclose(got[sel], ref[sel], rtol=1e-4, atol=1e-5)


def test_roi_align_gradient_reaches_only_the_assigned_level():
    strides = [4, 8]
    shapes = [(16, 16), (8, 8)]
    feats = tuple(ms.Tensor(np.ones((1, 2, h, w), np.float32)) for h, w in shapes)
    align = MultiLevelRoIAlign(shapes, strides, 1, out_size=2, sample_num=2, finest_scale=56)
    rois = ms.Tensor(np.array([[0, 10, 10, 30, 30]], np.float32))  # small: level 0

    def f(a, b):
        return align(flatten_levels((a, b)), rois).sum()

    ga, gb = ms.grad(f, grad_position=(0, 1))(*feats)
    assert float(ga.asnumpy().sum()) > 0
    assert float(np.abs(gb.asnumpy()).sum()) == 0
    # total gradient = number of outputs (each output is a convex combination of inputs)
    np.testing.assert_allclose(ga.asnumpy().sum(), 2 * 2 * 2, rtol=1e-5)


def test_weighted_gather_value_and_table_gradient_match_numpy():
    # rows repeat within and across points, so that the table gradient has to accumulate
    rng = np.random.default_rng(2)
    table = rng.standard_normal((9, 4)).astype(np.float32)
    rows = rng.integers(0, 9, size=(5, 3, 6)).astype(np.int32)
    rows[0, 0, :3] = 7
    weights = rng.uniform(-1, 1, size=(5, 3, 6)).astype(np.float32)
    upstream = rng.standard_normal((5, 3, 4)).astype(np.float32)

    def f(t):
        return (weighted_gather(t, ms.Tensor(rows), ms.Tensor(weights)) * ms.Tensor(upstream)).sum()

    got = weighted_gather(ms.Tensor(table), ms.Tensor(rows), ms.Tensor(weights)).asnumpy()
    np.testing.assert_allclose(got, np.einsum("abj,abjc->abc", weights, table[rows]), rtol=1e-5, atol=1e-6)
    grad = ms.jit(ms.grad(f))(ms.Tensor(table)).asnumpy()
    expected = np.zeros_like(table, dtype=np.float64)
    for a, b, j in np.ndindex(rows.shape):
        expected[rows[a, b, j]] += weights[a, b, j] * upstream[a, b]
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-5)


def test_roi_align_gradient_matches_mindspore_kernel():
    rng = np.random.default_rng(3)
    strides = [4, 8]
    img_h, img_w = 64, 96
    shapes = [(img_h // s, img_w // s) for s in strides]
    feats = [rng.standard_normal((2, 3, h, w)).astype(np.float32) for h, w in shapes]
    boxes = np.concatenate([_rois(rng, 12, img_w, img_h, 4, 40), _rois(rng, 8, img_w, img_h, 70, 120)])
    rois = np.concatenate([rng.integers(0, 2, size=(len(boxes), 1)).astype(np.float32), boxes], 1)
    upstream = ms.Tensor(rng.standard_normal((len(boxes), 3, 7, 7)).astype(np.float32))
    align = MultiLevelRoIAlign(shapes, strides, 2, out_size=7, sample_num=2, finest_scale=56)

    def ours(a, b):
        return (align(flatten_levels((a, b)), ms.Tensor(rois)) * upstream).sum()

    got = ms.grad(ours, grad_position=(0, 1))(*(ms.Tensor(f) for f in feats))
    scale = np.sqrt((boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1))
    level = np.clip(np.floor(np.log2(scale / 56 + 1e-6)), 0, 1).astype(int)
    assert set(level) == {0, 1}

    def kernel_loss(stride, keep):
        pool = ops.ROIAlign(7, 7, 1.0 / stride, 2, 1)
        return lambda x: (pool(x, ms.Tensor(rois)) * upstream * keep).sum()

    for lvl, s in enumerate(strides):
        keep = ms.Tensor((level == lvl).astype(np.float32).reshape(-1, 1, 1, 1))
        ref = ms.grad(kernel_loss(s, keep))(ms.Tensor(feats[lvl])).asnumpy()
        np.testing.assert_allclose(got[lvl].asnumpy(), ref, rtol=1e-4, atol=1e-5)
