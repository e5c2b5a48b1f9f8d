"""RPN anchor assignment (stage 1) against a numpy MaxIoU assigner written from its definition."""
import numpy as np
import mindspore as ms

from src.maskrcnn.bbox_assign_sample import BboxAssignSample
from src.layers.box_utils import encode_deltas
from src.demo.synthetic_batch import small_config


def numpy_iou(a, b):
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def numpy_assign(anchors, gts, valid, pos_thr, neg_thr, min_pos_iou):
    """MaxIoU assignment: (positive mask, negative mask, assigned GT index).

    An anchor is positive at max IoU >= pos_thr; each valid GT also claims the anchors of its
    highest IoU when that IoU >= min_pos_iou (an anchor claimed by several GTs goes to the first).
    """
    iou = numpy_iou(anchors, gts)
    iou[:, ~valid] = -1.0
    max_iou, assigned = iou.max(1), iou.argmax(1)
    pos = max_iou >= pos_thr
    neg = (max_iou >= 0) & (max_iou < neg_thr)
    claimed = np.zeros(len(anchors), bool)
    for g in np.flatnonzero(valid):
        best = iou[:, g].max()
        if best < min_pos_iou:
            continue
        for i in np.flatnonzero(iou[:, g] == best):
            if not claimed[i]:
                claimed[i] = True
                assigned[i] = g
    pos |= claimed
    return pos, neg & ~pos, assigned


def test_rpn_assignment_matches_numpy_when_everything_is_sampled():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (40, 2))
    anchors = np.concatenate([xy, xy + rng.uniform(10, 40, (40, 2))], 1).astype(np.float32)
    near = anchors[[3, 25]] + rng.uniform(-4, 4, (2, 4))
    # 1.6 x anchor 17 around its centre: best IoU below pos_iou_thr, positive only by the GT's claim
    wh = anchors[17, 2:] - anchors[17, :2]
    grown = np.concatenate([anchors[17, :2] - 0.3 * wh, anchors[17, 2:] + 0.3 * wh])[None]
    gts = np.concatenate([near[:1], grown, near[1:], [[0, 0, 5, 5]]]).astype(np.float32)[None]  # (1, 4, 4)
    valid = np.array([[True, True, False, True]])
    cfg = small_config(num_expected_pos=40, num_expected_neg=80)
    labels, label_weights, targets, target_weights = [
        t.asnumpy() for t in BboxAssignSample(cfg, anchors)(ms.Tensor(gts), ms.Tensor(valid))]

    pos, neg, assigned = numpy_assign(anchors, gts[0], valid[0], cfg.pos_iou_thr, cfg.neg_iou_thr, cfg.min_pos_iou)
    only_claimed = pos & (numpy_iou(anchors, gts[0])[:, valid[0]].max(1) < cfg.pos_iou_thr)
    assert neg.any() and only_claimed.any()
    np.testing.assert_array_equal(labels[0] > 0, pos)
    np.testing.assert_array_equal(target_weights[0] > 0, pos)
    np.testing.assert_array_equal(label_weights[0] > 0, pos | neg)
    want = encode_deltas(ms.Tensor(anchors[pos]), ms.Tensor(gts[0][assigned[pos]]), tuple(cfg.rpn_target_means),
                         tuple(cfg.rpn_target_stds)).asnumpy()
    np.testing.assert_allclose(targets[0][pos], want, atol=1e-5)
