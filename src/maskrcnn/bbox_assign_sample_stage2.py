"""Stage-2 (box head) RoI assignment and sampling with fixed shapes."""
import mindspore as ms
from mindspore import nn, ops

from src.maskrcnn.box_utils import bbox_overlaps, encode_deltas


def gather_rows(x, index):
    """Per-image row gather: x (B, M, ...) and index (B, K) int32 -> (B, K, ...)."""
    expanded = index.reshape(index.shape + (1,) * (x.ndim - 2))
    expanded = ops.broadcast_to(expanded, index.shape + x.shape[2:])
    return ops.gather_elements(x, 1, expanded)


class BboxAssignSampleForRcnn(nn.Cell):
    """Assign proposals (GT boxes added) to GT by IoU and sample RoIs for the box and mask heads.

    Each image gets ``num_expected_pos_stage2`` positive slots followed by
    ``num_expected_neg_stage2`` negative slots; ``valid`` marks the filled ones, and at most
    ``num_expected_total_stage2`` slots are valid per image.
    """

    def __init__(self, cfg):
        super().__init__()
        self.pos_thr = cfg.pos_iou_thr_stage2
        self.neg_thr = cfg.neg_iou_thr_stage2
        self.num_pos = cfg.num_expected_pos_stage2
        self.num_neg = cfg.num_expected_neg_stage2
        self.num_total = cfg.num_expected_total_stage2
        self.means = tuple(cfg.rcnn_target_means)
        self.stds = tuple(cfg.rcnn_target_stds)
        self.uniform = ops.UniformReal()

    def construct(self, proposals, proposal_valid, gt_bboxes, gt_labels, gt_valids):
        """Args:
            proposals: (B, P, 4); proposal_valid: (B, P) bool;
            gt_bboxes: (B, G, 4); gt_labels: (B, G) int32 in 1..num_classes-1; gt_valids: (B, G) bool.
        Returns:
            rois (B, R, 4) with R = num_pos + num_neg slots (positives first),
            labels (B, R) int32 (0 = background), valid (B, R) bool,
            bbox_targets (B, num_pos, 4), pos_gt_index (B, num_pos) int32 (GT of each positive slot).
        """
        candidates = ops.concat([gt_bboxes, proposals], 1)
        candidate_valid = ops.concat([gt_valids, proposal_valid], 1)
        batch, num = candidates.shape[0], candidates.shape[1]
        overlaps = bbox_overlaps(candidates, gt_bboxes)
        overlaps = ops.where(ops.expand_dims(gt_valids, 1), overlaps, ops.full_like(overlaps, -1.0))
        max_iou = overlaps.max(axis=2)
        max_iou = ops.where(candidate_valid, max_iou, ops.full_like(max_iou, -1.0))
        assigned = ops.argmax(overlaps, dim=2).astype(ms.int32)
        pos = max_iou >= self.pos_thr
        neg = ops.logical_and(max_iou < self.neg_thr, max_iou >= 0.0)

        noise = self.uniform((batch, num))
        pos_rank, pos_index = ops.topk(ops.where(pos, noise, ops.full_like(noise, -1.0)), min(self.num_pos, num))
        pos_valid = pos_rank >= 0.0
        num_pos = pos_valid.astype(ms.int32).sum(axis=1, keepdims=True)
        neg_rank, neg_index = ops.topk(ops.where(neg, noise, ops.full_like(noise, -1.0)), min(self.num_neg, num))
        slot = ops.cumsum(ops.ones_like(neg_index), 1) - 1
        neg_valid = ops.logical_and(neg_rank >= 0.0, slot < self.num_total - num_pos)

        pos_boxes = gather_rows(candidates, pos_index)
        pos_gt_index = ops.gather_elements(assigned, 1, pos_index)
        pos_labels = ops.gather_elements(gt_labels, 1, pos_gt_index) * pos_valid.astype(ms.int32)
        bbox_targets = encode_deltas(pos_boxes, gather_rows(gt_bboxes, pos_gt_index), self.means, self.stds)
        rois = ops.concat([pos_boxes, gather_rows(candidates, neg_index)], 1)
        labels = ops.concat([pos_labels, ops.zeros_like(neg_index)], 1)
        valid = ops.concat([pos_valid, neg_valid], 1)
        return (ops.stop_gradient(rois), ops.stop_gradient(labels), valid, ops.stop_gradient(bbox_targets),
                pos_gt_index)
