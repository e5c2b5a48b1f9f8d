"""Box coder and IoU against MindSpore's BoundingBoxEncode/Decode kernels and numpy; the IoU's
memory on its replayed graph."""
import os
import subprocess
import sys

import numpy as np
import mindspore as ms
from mindspore import ops

from bench.graph_liveness import alive_at_peak
from src.layers.box_utils import bbox_overlaps, clip_boxes, decode_deltas, encode_deltas


def random_boxes(rng, n, size=200.0):
    xy = rng.uniform(0, size, (n, 2))
    wh = rng.uniform(2, size / 2, (n, 2))
    return np.concatenate([xy, xy + wh], 1).astype(np.float32)


def numpy_iou(a, b):
    """Pairwise IoU of (N, 4) and (M, 4) float32 boxes from the definition, in float32: (N, M)."""
    a3, b3 = a[:, None, :], b[None, :, :]
    iw = np.maximum(np.minimum(a3[..., 2], b3[..., 2]) - np.maximum(a3[..., 0], b3[..., 0]), np.float32(0))
    ih = np.maximum(np.minimum(a3[..., 3], b3[..., 3]) - np.maximum(a3[..., 1], b3[..., 1]), np.float32(0))
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    assert inter.dtype == union.dtype == np.float32
    return inter / union


def test_encode_decode_match_mindspore_kernels():
    rng = np.random.default_rng(0)
    anchors, gts = random_boxes(rng, 50), random_boxes(rng, 50)
    means, stds = (0.0, 0.0, 0.0, 0.0), (0.1, 0.1, 0.2, 0.2)
    ours = encode_deltas(ms.Tensor(anchors), ms.Tensor(gts), means, stds).asnumpy()
    ref = ops.BoundingBoxEncode(means=means, stds=stds)(ms.Tensor(anchors), ms.Tensor(gts)).asnumpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)
    deltas = rng.normal(0, 1, (50, 4)).astype(np.float32)
    decoded = decode_deltas(ms.Tensor(anchors), ms.Tensor(deltas), means, stds).asnumpy()
    big = (10000, 10000)  # the kernel always clips at 0 and at max_shape - 1
    ref = ops.BoundingBoxDecode(max_shape=big, means=means, stds=stds, wh_ratio_clip=0.016)(
        ms.Tensor(anchors), ms.Tensor(deltas)).asnumpy()
    decoded = clip_boxes(ms.Tensor(decoded), ms.Tensor(10000.0), ms.Tensor(10000.0)).asnumpy()
    np.testing.assert_allclose(decoded, ref, rtol=1e-4, atol=1e-3)
    # round trip
    back = decode_deltas(ms.Tensor(anchors), ms.Tensor(ours), means, stds).asnumpy()
    np.testing.assert_allclose(back, gts, rtol=1e-4, atol=1e-3)


def test_iou_against_numpy_and_clip():
    rng = np.random.default_rng(1)
    a, b = random_boxes(rng, 7), random_boxes(rng, 5)
    got = bbox_overlaps(ms.Tensor(a), ms.Tensor(b)).asnumpy()
    assert np.all(np.abs(got - numpy_iou(a, b)) < 1e-5)
    clipped = clip_boxes(ms.Tensor(np.array([[-5, 3, 300, 90]], np.float32)), ms.Tensor(np.array([[50.0]])),
                         ms.Tensor(np.array([[100.0]]))).asnumpy()
    np.testing.assert_allclose(clipped.reshape(-1), [0, 3, 99, 49])


def test_iou_is_the_float32_quotient():
    """IoU is inter / union rounded once, as float32 division (detectron2's pairwise_iou) gives it,
    not a product with a rounded reciprocal; disjoint pairs give exactly 0."""
    rng = np.random.default_rng(3)
    a, b = random_boxes(rng, 300), random_boxes(rng, 40)
    b[0] = [1000, 1000, 1010, 1010]  # meets no box of a
    got = bbox_overlaps(ms.Tensor(a), ms.Tensor(b)).asnumpy()
    np.testing.assert_array_equal(got, numpy_iou(a, b))
    assert np.all(got[:, 0] == 0.0)


def test_iou_marks_invalid_boxes_and_broadcasts_leading_axes():
    rng = np.random.default_rng(2)
    a = np.stack([random_boxes(rng, 6), random_boxes(rng, 6)])  # (2, 6, 4)
    b = np.stack([random_boxes(rng, 4), random_boxes(rng, 4)])  # (2, 4, 4)
    valid = np.array([[True, False, True, True], [False, False, True, False]])
    got = bbox_overlaps(ms.Tensor(a), ms.Tensor(b), ms.Tensor(valid)).asnumpy()
    assert got.shape == (2, 6, 4)
    for k in range(2):
        plain = bbox_overlaps(ms.Tensor(a[k]), ms.Tensor(b[k])).asnumpy()
        np.testing.assert_allclose(got[k][:, valid[k]], plain[:, valid[k]], atol=1e-6)
        assert np.all(got[k][:, ~valid[k]] == -1.0)


IOU_LIVENESS_CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import mindspore as ms
from mindspore import nn
from src.layers.box_utils import bbox_overlaps

ms.set_context(mode=ms.GRAPH_MODE)
ms.set_device("CPU")


class Iou(nn.Cell):
    def construct(self, a, b, valid):
        return bbox_overlaps(a, b, valid).max(axis=2)


rng = np.random.default_rng(0)
xy = rng.uniform(0, 500, (1, 20000, 2)).astype(np.float32)
a = np.concatenate([xy, xy + 20], 2)
b = np.concatenate([xy[:, :64], xy[:, :64] + 30], 2)
Iou()(ms.Tensor(a), ms.Tensor(b), ms.Tensor(np.ones((1, 64), bool))).asnumpy()
"""


def test_iou_keeps_few_tensors_of_the_pairs_shape_alive(tmp_path):
    """The runtime launches every ready kernel: without its chain of steps the IoU would hold all
    eight expanded coordinates of the pairs' shape at once."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = tmp_path / "child.py"
    script.write_text(IOU_LIVENESS_CHILD)
    ir_dir, tracker_dir = str(tmp_path / "ir"), str(tmp_path / "tracker")
    env = dict(os.environ, MS_DEV_SAVE_GRAPHS="1", MS_DEV_SAVE_GRAPHS_PATH=ir_dir, GLOG_v="3",
               MS_ALLOC_CONF=f"memory_tracker:True,memory_tracker_path:{tracker_dir}")
    out = subprocess.run([sys.executable, str(script), root], cwd=str(tmp_path), env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    peak, _, _ = alive_at_peak(ir_dir, os.path.join(tracker_dir, "task.csv"), root)
    pairs = 20000 * 64 * 4  # bytes of one float32 tensor of the pairs' shape
    assert 2 * pairs < peak <= 5.5 * pairs, peak / pairs  # without the chain: 9.3
