"""Stage-1 (RPN) target assignment and sampling with fixed shapes."""
import numpy as np

import mindspore as ms
from mindspore import nn, ops

from src.layers.box_utils import bbox_overlaps, box_offset_of, encode_deltas
from src.layers.tensor_utils import expand_to


def select_random(candidates, scores, max_count, counts=None):
    """Random subset of each row: at most ``max_count`` (or ``counts[b]``) of the True entries.

    Args:
        candidates: (B, N) bool; scores: (B, N) uniform in [0, 1); counts: optional (B,) int32 <= max_count.
    Returns:
        (B, N) bool selection.
    """
    ranked = ops.where(candidates, scores, ops.full_like(scores, -1.0))
    k = min(max_count, candidates.shape[1])
    top = ops.topk(ranked, k)[0]  # (B, k) descending
    if counts is None:
        kth = top[:, k - 1:k]
        return ops.logical_and(candidates, ranked >= kth)
    index = ops.clamp(counts - 1, 0, k - 1).reshape(-1, 1)
    kth = ops.gather_elements(top, 1, index)
    keep = ops.logical_and(candidates, ranked >= kth)
    return ops.logical_and(keep, (counts > 0).reshape(-1, 1))


class BboxAssignSample(nn.Cell):
    """RPN targets: IoU assignment of anchors to GT boxes and random pos/neg sampling.

    Anchors with max IoU >= pos_iou_thr are positive, < neg_iou_thr negative; each GT also claims
    the anchors that overlap it most if that IoU >= min_pos_iou. A claimed anchor regresses to the
    GT that claimed it (``rpn_low_quality_match: modelzoo``; the first, if several did) or to its
    highest-IoU GT (``detectron2``: its Matcher only turns such anchors positive). Up to
    ``num_expected_pos`` positives are sampled and negatives fill up to ``num_expected_neg`` samples
    per image.

    Args:
        cfg: config; anchors: (N, 4) numpy anchors of all levels.
    """

    def __init__(self, cfg, anchors):
        super().__init__()
        self.anchors = ms.Tensor(np.asarray(anchors, np.float32))
        self.num_anchors = anchors.shape[0]
        self.pos_iou_thr = cfg.pos_iou_thr
        self.neg_iou_thr = cfg.neg_iou_thr
        self.min_pos_iou = cfg.min_pos_iou
        self.claim_keeps_argmax = cfg.rpn_low_quality_match == "detectron2"
        self.num_pos = cfg.num_expected_pos
        self.num_total = cfg.num_expected_neg
        self.means = tuple(cfg.rpn_target_means)
        self.stds = tuple(cfg.rpn_target_stds)
        self.box_offset = box_offset_of(cfg.box_convention)

    def construct(self, gt_bboxes, gt_valids):
        """Assign and sample.

        Args:
            gt_bboxes: (B, G, 4); gt_valids: (B, G) bool.
        Returns:
            labels (B, N) float32 (1 positive, 0 negative), label_weights (B, N) float32 (1 = sampled),
            bbox_targets (B, N, 4) encoded deltas, bbox_weights (B, N) float32 (1 = sampled positive).
        """
        batch = gt_bboxes.shape[0]
        anchors = ops.broadcast_to(ops.expand_dims(self.anchors, 0), (batch, self.num_anchors, 4))
        overlaps = bbox_overlaps(anchors, gt_bboxes, gt_valids)  # (B, N, G), -1 for invalid GT
        max_iou = overlaps.max(axis=2)
        argmax = ops.argmax(overlaps, dim=2).astype(ms.int32)
        gt_best = overlaps.max(axis=1)  # (B, G)
        # a GT whose best IoU is too low (or that is invalid) claims nothing: its threshold is out of reach
        claim_thr = ops.where(ops.logical_and(gt_best >= self.min_pos_iou, gt_valids), gt_best,
                              ops.full_like(gt_best, 2.0))
        claims = overlaps >= expand_to(claim_thr, 1, overlaps.shape)
        claimed = claims.any(axis=2)
        claimed_gt = ops.argmax(claims.astype(ms.float32), dim=2).astype(ms.int32)
        assigned = argmax if self.claim_keeps_argmax else ops.where(claimed, claimed_gt, argmax)
        pos = ops.logical_or(max_iou >= self.pos_iou_thr, claimed)
        neg = ops.logical_and(ops.logical_and(max_iou < self.neg_iou_thr, max_iou >= 0.0), ops.logical_not(pos))

        sampled_pos = select_random(pos, ops.rand((batch, self.num_anchors)), self.num_pos)
        num_neg = self.num_total - sampled_pos.astype(ms.int32).sum(axis=1)
        sampled_neg = select_random(neg, ops.rand((batch, self.num_anchors)), self.num_total, num_neg)

        matched = ops.gather_elements(gt_bboxes, 1, ops.broadcast_to(ops.expand_dims(assigned, 2),
                                                                     (batch, self.num_anchors, 4)))
        bbox_targets = encode_deltas(anchors, matched, self.means, self.stds, self.box_offset)
        pos_f = sampled_pos.astype(ms.float32)
        label_weights = ops.logical_or(sampled_pos, sampled_neg).astype(ms.float32)
        return (ops.stop_gradient(pos_f), ops.stop_gradient(label_weights), ops.stop_gradient(bbox_targets),
                ops.stop_gradient(pos_f))
