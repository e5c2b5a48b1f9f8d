"""RPN anchor assignment (stage 1) against numpy assigners written from their definitions: the model
zoo's MaxIoU assigner and detectron2's Matcher with low-quality matches (the preset)."""
import numpy as np
import mindspore as ms

from src.maskrcnn.bbox_assign_sample import BboxAssignSample
from src.layers.box_utils import encode_deltas
from src.demo.synthetic_batch import small_config
from test_detectron2_recipe import preset as load_preset


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


def detectron2_match(anchors, gts, valid, neg_thr, pos_thr):
    """detectron2's Matcher(thresholds=[neg_thr, pos_thr], labels=[0, -1, 1],
    allow_low_quality_matches=True), from its definition: (positive, negative, matched GT index)."""
    index = np.flatnonzero(valid)
    quality = numpy_iou(gts[index], anchors)  # (G, N), detectron2's layout
    matched_vals, matches = quality.max(0), quality.argmax(0)
    labels = np.ones(len(anchors), np.int64)
    labels[matched_vals < pos_thr] = -1
    labels[matched_vals < neg_thr] = 0
    # set_low_quality_matches_: every anchor at a GT's highest quality becomes positive; its match stays
    labels[(quality == quality.max(1, keepdims=True)).any(0)] = 1
    return labels == 1, labels == 0, index[matches]


def test_rpn_low_quality_matches_of_the_detectron2_preset():
    rng = np.random.default_rng(3)
    xy = rng.uniform(30, 100, (40, 2))
    random = np.concatenate([xy, xy + rng.uniform(10, 40, (40, 2))], 1)
    # anchor 0 is the best anchor of the small GT (IoU 0.5) but overlaps the large GT more (0.69):
    # positive by the small GT's claim; detectron2 regresses it to the large GT, mmdetection to the small
    handmade = np.array([[0, 0, 20, 20], [0, 0, 24, 23]], np.float64)
    anchors = np.concatenate([handmade, random]).astype(np.float32)
    gts = np.array([[[0, 0, 20, 10], [0, 0, 24, 24], [50, 50, 80, 70], [0, 0, 1, 1]]], np.float32)
    valid = np.array([[True, True, True, False]])
    preset = load_preset()
    modes = {"detectron2": {"min_pos_iou": preset.min_pos_iou, "rpn_low_quality_match": preset.rpn_low_quality_match},
             "modelzoo": {"min_pos_iou": 0.0, "rpn_low_quality_match": "modelzoo"}}
    targets = {}
    for mode, keys in modes.items():
        cfg = small_config(num_expected_pos=40, num_expected_neg=80, **keys)
        labels, label_weights, targets[mode], _ = [
            t.asnumpy()[0] for t in BboxAssignSample(cfg, anchors)(ms.Tensor(gts), ms.Tensor(valid))]
        pos, neg, matched = detectron2_match(anchors, gts[0], valid[0], cfg.neg_iou_thr, cfg.pos_iou_thr)
        np.testing.assert_array_equal(labels > 0, pos)
        np.testing.assert_array_equal(label_weights > 0, pos | neg)
    assert pos[0] and matched[0] == 1
    # detectron2 mode: every positive regresses to its highest-IoU GT
    want = encode_deltas(ms.Tensor(anchors[pos]), ms.Tensor(gts[0][matched[pos]]), tuple(cfg.rpn_target_means),
                         tuple(cfg.rpn_target_stds)).asnumpy()
    np.testing.assert_allclose(targets["detectron2"][pos], want, atol=1e-5)
    small = encode_deltas(ms.Tensor(anchors[:1]), ms.Tensor(gts[0][:1]), tuple(cfg.rpn_target_means),
                          tuple(cfg.rpn_target_stds)).asnumpy()
    np.testing.assert_allclose(targets["modelzoo"][0], small[0], atol=1e-5)
