"""Stage-2 RoI assignment and sampling (``BboxAssignSampleForRcnn``) against a numpy MaxIoU
assignment written from its definition: candidates are the valid GT boxes and the valid proposals;
positive at max IoU >= pos_iou_thr_stage2, negative below neg_iou_thr_stage2; at most
num_expected_pos_stage2 positives, drawn at random, in the first slots (the ones the mask branch
reads), then negatives."""
import numpy as np
import pytest
import mindspore as ms

from src.demo.synthetic_batch import small_config
from src.layers.box_utils import encode_deltas
from src.maskrcnn.bbox_assign_sample_stage2 import BboxAssignSampleForRcnn
from test_rpn_targets import numpy_iou

GT = np.array([[10, 10, 50, 40], [60, 20, 100, 90], [20, 60, 45, 95], [0, 0, 8, 8]], np.float32)
GT_VALID = np.array([True, True, True, False])
GT_LABELS = np.array([3, 1, 2, 1], np.int32)


def proposals(rng, n=60):
    """Jittered copies of the valid GT boxes (IoU spread around 0.5) and random boxes."""
    base = GT[rng.integers(0, 3, n // 2)]
    wh = base[:, 2:] - base[:, :2]
    jitter = base + rng.uniform(-0.45, 0.45, (n // 2, 4)) * np.concatenate([wh, wh], 1)
    xy = rng.uniform(0, 90, (n - n // 2, 2))
    random = np.concatenate([xy, xy + rng.uniform(5, 30, (n - n // 2, 2))], 1)
    boxes = np.concatenate([jitter, random]).astype(np.float32)
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    return boxes


def numpy_assign(candidates, valid, cfg):
    iou = numpy_iou(candidates, GT)
    iou[:, ~GT_VALID] = -1.0
    max_iou = np.where(valid, iou.max(1), -1.0)
    pos = max_iou >= cfg.pos_iou_thr_stage2
    neg = (max_iou >= 0) & (max_iou < cfg.neg_iou_thr_stage2)
    return pos, neg, iou.argmax(1), max_iou


def run(cfg, props, prop_valid, seed):
    ms.set_seed(seed)
    out = BboxAssignSampleForRcnn(cfg)(ms.Tensor(props[None]), ms.Tensor(prop_valid[None]), ms.Tensor(GT[None]),
                                       ms.Tensor(GT_LABELS[None]), ms.Tensor(GT_VALID[None]))
    return [t.asnumpy()[0] for t in out]


def rows_of(boxes, candidates):
    """Index of each box among the candidates (exact copies)."""
    return [int(np.flatnonzero((candidates == b).all(1))[0]) for b in boxes]


def test_everything_sampled_equals_the_numpy_assignment():
    rng = np.random.default_rng(0)
    props = proposals(rng)
    prop_valid = np.ones(len(props), bool)
    prop_valid[-5:] = False
    candidates = np.concatenate([GT, props])
    valid = np.concatenate([GT_VALID, prop_valid])
    # thresholds apart, so that the band between them (neither) is exercised
    cfg = small_config(num_expected_pos_stage2=64, num_expected_neg_stage2=64, num_expected_total_stage2=64,
                       pos_iou_thr_stage2=0.55, neg_iou_thr_stage2=0.45)
    pos, neg, assigned, max_iou = numpy_assign(candidates, valid, cfg)
    rois, labels, slot_valid, targets, gt_index = run(cfg, props, prop_valid, 0)
    n_pos, n_neg = int(pos.sum()), int(neg.sum())
    assert n_pos >= 5 and n_neg >= 10 and n_pos + n_neg < 64 and (~pos & ~neg & valid).sum() >= 5
    # positives first, then negatives, then empty slots
    assert (labels[:n_pos] > 0).all() and (labels[n_pos:] == 0).all()
    np.testing.assert_array_equal(slot_valid, np.arange(64) < n_pos + n_neg)
    pos_rows = rows_of(rois[:n_pos], candidates)
    assert sorted(pos_rows) == sorted(np.flatnonzero(pos))
    assert sorted(rows_of(rois[n_pos:n_pos + n_neg], candidates)) == sorted(np.flatnonzero(neg))
    # each positive carries its GT: index, class, box-regression target
    np.testing.assert_array_equal(gt_index[:n_pos], assigned[pos_rows])
    np.testing.assert_array_equal(labels[:n_pos], GT_LABELS[assigned[pos_rows]])
    want = encode_deltas(ms.Tensor(rois[:n_pos]), ms.Tensor(GT[assigned[pos_rows]]), tuple(cfg.rcnn_target_means),
                         tuple(cfg.rcnn_target_stds)).asnumpy()
    np.testing.assert_allclose(targets[:n_pos], want, atol=1e-5)
    # the invalid GT and invalid proposals are never sampled
    assert not set(rows_of(rois[slot_valid], candidates)) & set(np.flatnonzero(~valid))


@pytest.mark.parametrize("seed", [1, 2])
def test_capped_sampling_fills_the_mask_slots_with_random_positives(seed):
    rng = np.random.default_rng(1)
    props = proposals(rng, 80)
    prop_valid = np.ones(len(props), bool)
    candidates = np.concatenate([GT, props])
    cfg = small_config(num_expected_pos_stage2=8, num_expected_neg_stage2=24, num_expected_total_stage2=24)
    pos, neg, _, max_iou = numpy_assign(candidates, np.concatenate([GT_VALID, prop_valid]), cfg)
    assert pos.sum() > 8 and neg.sum() > 24
    draws = []
    for s in (seed, seed + 10):
        rois, labels, slot_valid, _, _ = run(cfg, props, prop_valid, s)
        rows = rows_of(rois, candidates)
        assert slot_valid.all() and (labels[:8] > 0).all() and (labels[8:] == 0).all()
        assert (max_iou[rows[:8]] >= cfg.pos_iou_thr_stage2).all()
        assert (max_iou[rows[8:]] < cfg.neg_iou_thr_stage2).all() and (max_iou[rows[8:]] >= 0).all()
        assert len(set(rows)) == 24
        draws.append(set(rows[:8]))
    assert draws[0] != draws[1]  # drawn at random, not the first eight


def test_slots_without_a_sample_get_zero_targets_and_a_finite_box_loss():
    """More slots than candidates: the empty slots hold zero-size boxes (padding proposals, the
    invalid GT), whose encoded targets would be inf / NaN; a NaN target makes the masked box loss
    NaN (0 x NaN)."""
    from src.maskrcnn.rcnn_cls import rcnn_box_losses
    cfg = small_config(num_expected_total_stage2=64, num_expected_pos_stage2=16, box_convention="detectron2")
    props = np.zeros((40, 4), np.float32)
    props[:6] = proposals(np.random.default_rng(2), 6)
    prop_valid = np.arange(40) < 6
    rois, labels, valid, targets, _ = run(cfg, props, prop_valid, 0)
    assert (~valid).sum() > 0  # empty slots exist
    assert np.isfinite(targets).all() and not targets[labels == 0].any()
    k = len(labels)
    deltas = np.random.default_rng(3).standard_normal((k, cfg.num_classes * 4)).astype(np.float32)
    _, reg = rcnn_box_losses(ms.Tensor(np.zeros((k, cfg.num_classes), np.float32)), ms.Tensor(deltas),
                             ms.Tensor(labels), ms.Tensor(valid), ms.Tensor(targets), cfg.num_classes, 0.0)
    assert np.isfinite(float(reg.asnumpy())) and (labels > 0).any()
