"""The PointRend mask branch's points, in training and in the adaptive subdivision, on a synthetic
logit field with a known circular boundary.

The fine features encode pixel positions and the heads compute the analytic logit
k * (r0 - |p - c|), so every re-predicted point is exact and we can see where points go. The fake
point head also checks what the branch hands it: the coarse logits sampled at the same points
(against a numpy sampler) and the predicted classes.
"""
import numpy as np
import mindspore as ms
from mindspore import nn
from mindspore.ops import ResizeBilinearV2

from src.dataset.transforms import packed_mask_bytes
from src.layers.feature_table import LevelLayout, flatten_levels
from src.pointrend.mask_branch import PointRendMaskBranch
from src.demo.synthetic_batch import small_config
from test_point_selection import numpy_point_sample

IMG = 64
PREDICTED_CLASS = 1
CENTRE = np.array([30.0, 33.0])
RADIUS = 13.0
BOX = np.array([[12.0, 15.0, 50.0, 52.0]], np.float32)  # contains the circle, away from the border


def analytic(x, y):
    return 2.0 * (RADIUS - np.sqrt((x - CENTRE[0]) ** 2 + (y - CENTRE[1]) ** 2))


class FakeCoarseHead(nn.Cell):
    """(R, 7, 7, 2, 2, C) sampled position features (each 7x7 cell's 2x2 patch, channels last) ->
    analytic logits on the 7x7 cells, shifted by 20 x class so that a wrong class shows."""

    def __init__(self, num_classes):
        super().__init__()
        self.num_classes = num_classes
        self.logits = None

    def construct(self, x):
        pos = x.asnumpy()[..., :2].mean(axis=(3, 4)).transpose(0, 3, 1, 2)  # (R, 2, 7, 7) cell centres
        logits = analytic(pos[:, 0], pos[:, 1]).astype(np.float32)
        shift = 20.0 * (np.arange(self.num_classes, dtype=np.float32) - PREDICTED_CLASS)
        self.logits = logits[:, None] + shift[None, :, None, None]  # the predicted class holds the analytic logits
        return ms.Tensor(self.logits)


class FakePointHead(nn.Cell):
    def __init__(self, coarse_head):
        super().__init__()
        self.coarse_head = coarse_head
        self.calls = []

    def fine_projection(self, rows):
        return rows * 2.0  # predict_class undoes it: positions come out wrong if the branch skips it

    def predict_class(self, fine, coarse, classes):
        pos = fine.asnumpy()[:, :2] / 2.0  # (R, 2, P) image positions
        self.calls.append(pos)
        assert classes.asnumpy().tolist() == [PREDICTED_CLASS]
        # the coarse features of each point: every class's coarse logit, sampled at that point
        u = (pos[0, 0] - BOX[0, 0]) / (BOX[0, 2] - BOX[0, 0])
        v = (pos[0, 1] - BOX[0, 1]) / (BOX[0, 3] - BOX[0, 1])
        expected = numpy_point_sample(self.coarse_head.logits[0], np.stack([u, v], 1))
        np.testing.assert_allclose(coarse.asnumpy()[0], expected, rtol=1e-4, atol=1e-3)
        return ms.Tensor(analytic(pos[:, 0], pos[:, 1]).astype(np.float32))


def position_table(cfg):
    """The flat table of one image whose two channels are the image (x, y) of each pixel centre, and its layout."""
    shapes = cfg.feature_shapes[:4]
    levels = []
    for (h, w), stride in zip(shapes, cfg.roi_align_featmap_strides):
        ys, xs = np.meshgrid((np.arange(h) + 0.5) * stride, (np.arange(w) + 0.5) * stride, indexing="ij")
        levels.append(ms.Tensor(np.stack([xs, ys])[None].astype(np.float32)))
    return flatten_levels(tuple(levels)), LevelLayout(shapes, 1)


def run_branch(steps):
    ms.set_context(mode=ms.PYNATIVE_MODE)
    cfg = small_config(img_height=IMG, img_width=IMG, subdivision_steps=steps, subdivision_num_points=784)
    table, layout = position_table(cfg)
    coarse_head = FakeCoarseHead(cfg.num_classes)
    point_head = FakePointHead(coarse_head)
    branch = PointRendMaskBranch(cfg, layout, coarse_head, point_head)
    probs = branch.predict(table, ms.Tensor(BOX), ms.Tensor(np.zeros(1, np.int32)),
                           ms.Tensor(np.full(1, PREDICTED_CLASS, np.int32))).asnumpy()[0]
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


class RecordingPointHead(nn.Cell):
    """Training forward of a point head that records the positions and coarse features it gets."""

    def __init__(self, num_classes):
        super().__init__()
        self.num_classes = num_classes
        self.positions = self.coarse = None

    def construct(self, fine, coarse):
        self.positions = fine.asnumpy()[:, :2]  # (R, 2, P) image (x, y) of each point
        self.coarse = coarse.asnumpy()
        return ms.Tensor(np.zeros((fine.shape[0], self.num_classes, fine.shape[2]), np.float32))


def test_training_points_lie_in_the_box_uncertain_first_then_uniform():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    cfg = small_config(img_height=IMG, img_width=IMG)
    table, layout = position_table(cfg)
    coarse_head = FakeCoarseHead(cfg.num_classes)
    point_head = RecordingPointHead(cfg.num_classes)
    branch = PointRendMaskBranch(cfg, layout, coarse_head, point_head)
    r = 48
    rois = ms.Tensor(np.repeat(BOX, r, 0))
    no_masks = ms.Tensor(np.zeros((1, packed_mask_bytes(IMG, IMG)), np.uint8))
    branch.losses(table, rois, ms.Tensor(np.zeros(r, np.int32)), ms.Tensor(np.full(r, PREDICTED_CLASS, np.int32)),
                  ms.Tensor(np.ones(r, np.float32)), no_masks, ms.Tensor(np.zeros(r, np.int32)),
                  ms.Tensor(np.full((r, 2), IMG, np.float32)))
    pos = point_head.positions
    assert pos.shape == (r, 2, cfg.train_num_points)
    u = (pos[:, 0] - BOX[0, 0]) / (BOX[0, 2] - BOX[0, 0])
    v = (pos[:, 1] - BOX[0, 1]) / (BOX[0, 3] - BOX[0, 1])
    assert u.min() >= -1e-4 and u.max() <= 1 + 1e-4 and v.min() >= -1e-4 and v.max() <= 1 + 1e-4
    num_uncertain = int(cfg.importance_sample_ratio * cfg.train_num_points)
    # the random part: uniform over the box
    hist = np.histogram2d(u[:, num_uncertain:].ravel(), v[:, num_uncertain:].ravel(), bins=4,
                          range=[[0, 1], [0, 1]])[0]
    expected = u[:, num_uncertain:].size / 16
    assert np.all(np.abs(hist - expected) < 5 * np.sqrt(expected)), hist
    # the coarse features are every class's coarse logit sampled at the points (numpy sampler)
    gt_logit = np.empty(u.shape)
    for i in range(r):
        sampled = numpy_point_sample(coarse_head.logits[i], np.stack([u[i], v[i]], 1))
        np.testing.assert_allclose(point_head.coarse[i], sampled, rtol=1e-4, atol=1e-3)
        gt_logit[i] = sampled[PREDICTED_CLASS]
    # the importance part: the most uncertain of 3x as many uniform candidates under the GT class's
    # coarse logits (their quarter nearest the boundary), so all more uncertain than half the uniform points
    uniform_quantile = np.quantile(np.abs(gt_logit[:, num_uncertain:]), 0.5)
    most_certain = np.abs(gt_logit[:, :num_uncertain]).max()
    assert most_certain <= uniform_quantile, (most_certain, uniform_quantile)
