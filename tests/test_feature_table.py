"""Flat-table RoIAlign and point sampling (src/layers) against MindSpore's ROIAlign kernel and a numpy sampler."""
import os
import subprocess
import sys

import numpy as np
import pytest
import mindspore as ms
from mindspore import ops

from bench.graph_liveness import alive_at_peak
from src.config import config_from_dict
from src.layers.feature_table import ChunkedWeightedGather, LevelLayout, flatten_levels, weighted_gather
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


@pytest.mark.parametrize("channels_last", [False, True])
def test_roi_align_matches_mindspore_kernel_on_each_level(channels_last):
    rng = np.random.default_rng(1)
    strides = [4, 8, 16, 32]
    img_h, img_w = 128, 160
    shapes = [(img_h // s, img_w // s) for s in strides]
    feats = [rng.standard_normal((2, 3, h, w)).astype(np.float32) for h, w in shapes]
    boxes = np.concatenate([_rois(rng, 30, img_w, img_h, 4, 40), _rois(rng, 20, img_w, img_h, 40, 150), _rois(rng, 20, img_w, img_h, 150, 400)])
    batch = rng.integers(0, 2, size=len(boxes)).astype(np.float32)
    rois = np.concatenate([batch[:, None], boxes], 1)
    align = MultiLevelRoIAlign(shapes, strides, 2, out_size=7, sample_num=2, finest_scale=56,
                               channels_last=channels_last)
    got = align(flatten_levels(tuple(ms.Tensor(f) for f in feats)), ms.Tensor(rois)).asnumpy()
    if channels_last:
        assert got.shape == (70, 7, 7, 3)
        got = got.transpose(0, 3, 1, 2)
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


def _gather_case():
    """A table, rows that repeat within and across points (so that the table gradient has to
    accumulate), weights and an upstream gradient; and numpy's value and table gradient of
    sum(weighted_gather(table, rows, weights) * upstream), written from the definition."""
    rng = np.random.default_rng(2)
    table = rng.standard_normal((9, 4)).astype(np.float32)
    rows = rng.integers(0, 9, size=(5, 3, 6)).astype(np.int32)
    rows[0, 0, :3] = 7
    rows[4, 2, :2] = 7
    weights = rng.uniform(-1, 1, size=(5, 3, 6)).astype(np.float32)
    upstream = rng.standard_normal((5, 3, 4)).astype(np.float32)
    value = np.einsum("abj,abjc->abc", weights, table[rows])
    grad = np.zeros_like(table, dtype=np.float64)
    for a, b, j in np.ndindex(rows.shape):
        grad[rows[a, b, j]] += weights[a, b, j] * upstream[a, b]
    return table, rows, weights, upstream, value, grad


def _check_gather(gather):
    table, rows, weights, upstream, value, expected = _gather_case()

    def f(t):
        return (gather(t, ms.Tensor(rows), ms.Tensor(weights)) * ms.Tensor(upstream)).sum()

    got = ms.jit(gather)(ms.Tensor(table), ms.Tensor(rows), ms.Tensor(weights)).asnumpy()
    np.testing.assert_allclose(got, value, rtol=1e-5, atol=1e-6)
    grad = ms.jit(ms.grad(f))(ms.Tensor(table)).asnumpy()
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-5)


def test_weighted_gather_value_and_table_gradient_match_numpy():
    _check_gather(weighted_gather)


@pytest.mark.parametrize("points", [1, 4, 14, 15, 40])
def test_chunked_weighted_gather_matches_numpy_for_any_chunking(points):
    # 15 points of 6 neighbours x 4 channels: 15 chunks, 4 uneven ones, two, one, one (the plain look-up)
    gather = ChunkedWeightedGather(points * 6 * 4 * 4 / 2 ** 20)
    assert gather.points_per_chunk(6, 4) == points
    _check_gather(gather)


def test_chunked_gather_rejects_a_chunk_of_nothing():
    with pytest.raises(ValueError, match="gather chunk must be > 0 MiB, got 0"):
        ChunkedWeightedGather(0)
    assert ChunkedWeightedGather(1e-9).points_per_chunk(16, 256) == 1
    with pytest.raises(Exception, match="gather_chunk_mib"):
        config_from_dict({"gather_chunk_mib": -1})


LIVENESS_CHILD = """
import sys
sys.path.insert(0, sys.argv[2])
from src.utils.runtime import cap_onednn_isa
cap_onednn_isa()
import numpy as np
import mindspore as ms
from mindspore import nn, ops
from src.layers.feature_table import ChunkedWeightedGather, weighted_gather

ms.set_context(mode=ms.GRAPH_MODE)
ms.set_device("CPU")
chunk_mib = float(sys.argv[1])


class Loss(nn.Cell):
    def __init__(self):
        super().__init__()
        self.chunked = ChunkedWeightedGather(chunk_mib) if chunk_mib > 0 else None

    def construct(self, table, rows, weights):
        out = weighted_gather(table, rows, weights) if self.chunked is None else self.chunked(table, rows, weights)
        return (out * out).sum()


class TableGrad(nn.Cell):
    def __init__(self):
        super().__init__()
        self.loss = Loss()
        self.grad = ops.GradOperation()

    def construct(self, table, rows, weights):
        return self.grad(self.loss)(table, rows, weights)


rng = np.random.default_rng(0)
table = ms.Tensor(rng.standard_normal((1000, 64)).astype(np.float32))
rows = ms.Tensor(rng.integers(0, 1000, (4096, 16)).astype(np.int32))
weights = ms.Tensor(rng.random((4096, 16)).astype(np.float32))
TableGrad()(table, rows, weights).asnumpy()
"""


def _replayed_peak(tmp_path, chunk_mib):
    """(peak bytes, largest tensor alive then in bytes) of the compiled table-gradient graph of
    4096 points x 16 neighbours x 64 channels (16 MiB of neighbours), replayed in launch order."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    work = tmp_path / f"chunk_{chunk_mib}"
    work.mkdir()
    script = work / "child.py"
    script.write_text(LIVENESS_CHILD)
    ir_dir, tracker_dir = str(work / "ir"), str(work / "tracker")
    env = dict(os.environ, MS_DEV_SAVE_GRAPHS="1", MS_DEV_SAVE_GRAPHS_PATH=ir_dir, GLOG_v="3",
               MS_ALLOC_CONF=f"memory_tracker:True,memory_tracker_path:{tracker_dir}")
    out = subprocess.run([sys.executable, str(script), str(chunk_mib), root], cwd=str(work), env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    peak, _, rows = alive_at_peak(ir_dir, os.path.join(tracker_dir, "task.csv"), root)
    return peak, max(4 * int(np.prod(_dims(largest_shape))) for *_, largest_shape in rows)


def _dims(shape):
    """The dimensions of a shape as the replay prints it: 'Float32 (4096, 16, 64)' -> [4096, 16, 64]."""
    return [int(v) for v in shape.split("(")[-1].rstrip(")").split(",") if v.strip()]


def test_chunked_gather_keeps_one_chunk_of_neighbours_alive(tmp_path):
    full = 4096 * 16 * 64 * 4  # 16 MiB of gathered neighbours (and as much of their gradient)
    plain_peak, plain_largest = _replayed_peak(tmp_path, 0)
    chunked_peak, chunked_largest = _replayed_peak(tmp_path, 2)  # 8 chunks of 2 MiB
    assert plain_largest >= full
    assert chunked_largest <= 2 * 2 ** 20
    assert chunked_peak < plain_peak - full / 2, (plain_peak, chunked_peak)


@pytest.mark.parametrize("gather_chunk_mib, channels_last", [(0, False), (0.05, False), (0.05, True)])
def test_roi_align_gradient_matches_mindspore_kernel(gather_chunk_mib, channels_last):
    # 0.05 MiB: chunks of 273 of the 980 bins (16 neighbours x 3 channels each)
    rng = np.random.default_rng(3)
    strides = [4, 8]
    img_h, img_w = 64, 96
    shapes = [(img_h // s, img_w // s) for s in strides]
    feats = [rng.standard_normal((2, 3, h, w)).astype(np.float32) for h, w in shapes]
    boxes = np.concatenate([_rois(rng, 12, img_w, img_h, 4, 40), _rois(rng, 8, img_w, img_h, 70, 120)])
    rois = np.concatenate([rng.integers(0, 2, size=(len(boxes), 1)).astype(np.float32), boxes], 1)
    upstream_np = rng.standard_normal((len(boxes), 3, 7, 7)).astype(np.float32)
    upstream = ms.Tensor(upstream_np)
    align = MultiLevelRoIAlign(shapes, strides, 2, out_size=7, sample_num=2, finest_scale=56,
                               gather_chunk_mib=gather_chunk_mib, channels_last=channels_last)
    # the same upstream gradient in the output's layout
    ours_upstream = ms.Tensor(upstream_np.transpose(0, 2, 3, 1).copy()) if channels_last else upstream

    def ours(a, b):
        return (align(flatten_levels((a, b)), ms.Tensor(rois)) * ours_upstream).sum()

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
