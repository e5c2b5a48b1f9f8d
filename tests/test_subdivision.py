"""Adaptive subdivision on a synthetic logit field with a known circular boundary.

The fine features encode pixel positions and the heads compute the analytic logit
k * (r0 - |p - c|), so every re-predicted point is exact and we can see where points go.
"""
import numpy as np
import mindspore as ms
from mindspore import nn
from mindspore.ops import ResizeBilinearV2

from src.layers.feature_table import LevelLayout, flatten_levels
from src.pointrend.mask_branch import PointRendMaskBranch
from src.demo.synthetic_batch import small_config

IMG = 64
CENTRE = np.array([30.0, 33.0])
RADIUS = 13.0
BOX = np.array([[12.0, 15.0, 50.0, 52.0]], np.float32)  # contains the circle, away from the border


def analytic(x, y):
    return 2.0 * (RADIUS - np.sqrt((x - CENTRE[0]) ** 2 + (y - CENTRE[1]) ** 2))


class FakeCoarseHead(nn.Cell):
    """(R, 14, 14, C) sampled position features (channels last) -> analytic logits on the 7x7 cells."""

    def __init__(self, num_classes):
        super().__init__()
        self.num_classes = num_classes

    def construct(self, x):
        pos = x.asnumpy()[..., :2].transpose(0, 3, 1, 2).reshape(x.shape[0], 2, 7, 2, 7, 2).mean(axis=(3, 5))
        logits = analytic(pos[:, 0], pos[:, 1]).astype(np.float32)
        return ms.Tensor(np.repeat(logits[:, None], self.num_classes, 1))


class FakePointHead(nn.Cell):
    def __init__(self):
        super().__init__()
        self.calls = []

    def fine_projection(self, rows):
        return rows * 2.0  # predict_class undoes it: positions come out wrong if the branch skips it

    def predict_class(self, fine, coarse, classes):
        pos = fine.asnumpy()[:, :2] / 2.0  # (R, 2, P) image positions
        self.calls.append(pos)
        return ms.Tensor(analytic(pos[:, 0], pos[:, 1]).astype(np.float32))


def run_branch(steps):
    ms.set_context(mode=ms.PYNATIVE_MODE)
    cfg = small_config(img_height=IMG, img_width=IMG, subdivision_steps=steps, subdivision_num_points=784)
    shapes = cfg.feature_shapes[:4]
    layout = LevelLayout(shapes, 1)
    levels = []
    for (h, w), stride in zip(shapes, cfg.roi_align_featmap_strides):
        ys, xs = np.meshgrid((np.arange(h) + 0.5) * stride, (np.arange(w) + 0.5) * stride, indexing="ij")
        levels.append(ms.Tensor(np.stack([xs, ys])[None].astype(np.float32)))
    table = flatten_levels(tuple(levels))
    point_head = FakePointHead()
    branch = PointRendMaskBranch(cfg, layout, FakeCoarseHead(cfg.num_classes), point_head)
    probs = branch.predict(table, ms.Tensor(BOX), ms.Tensor(np.zeros(1, np.int32)),
                           ms.Tensor(np.ones(1, np.int32))).asnumpy()[0]
    return probs, point_head.calls


def analytic_mask(side):
    c = (np.arange(side) + 0.5) / side
    xs = BOX[0, 0] + c[None, :] * (BOX[0, 2] - BOX[0, 0])
    ys = BOX[0, 1] + c[:, None] * (BOX[0, 3] - BOX[0, 1])
    return analytic(xs, ys) > 0


def test_subdivision_refines_the_boundary():
    probs, calls = run_branch(5)
    assert probs.shape == (224, 224)
    # 7 -> 14 skipped (784 points cover 28x28 entirely), then 28 (all cells), 56, 112, 224
    assert len(calls) == 4
    assert calls[0].shape[2] == 28 * 28
    for pos, side in zip(calls[1:], (56, 112, 224)):
        dist = np.abs(np.hypot(pos[0, 0] - CENTRE[0], pos[0, 1] - CENTRE[1]) - RADIUS)
        cell = (BOX[0, 2] - BOX[0, 0]) / side
        # the 784 most uncertain cells form a thin band on the circle
        assert dist.max() < 4 * cell + 1.0, (side, dist.max())
        assert np.median(dist) < 2 * cell, (side, np.median(dist))

    probs28, _ = run_branch(2)
    assert probs28.shape == (28, 28)
    truth = analytic_mask(224)
    err_fine = np.mean((probs > 0.5) != truth)
    logits28 = ms.Tensor(np.log(np.clip(probs28, 1e-7, 1 - 1e-7) / np.clip(1 - probs28, 1e-7, 1))[None, None].astype(np.float32))
    up = ResizeBilinearV2(align_corners=False, half_pixel_centers=True)(logits28, (224, 224)).asnumpy()[0, 0]
    err_coarse = np.mean((up > 0) != truth)
    assert err_fine < 0.5 * err_coarse, (err_fine, err_coarse)
    assert err_fine < 0.002
