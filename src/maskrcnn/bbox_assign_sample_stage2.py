"""Stage-2 (box head) RoI assignment and sampling with fixed shapes."""
import mindspore as ms
from mindspore import nn, ops

from src.maskrcnn.bbox_assign_sample import select_random
from src.layers.box_utils import bbox_overlaps, box_offset_of, encode_deltas
from src.layers.tensor_utils import gather_rows


class BboxAssignSampleForRcnn(nn.Cell):
    """Assign proposals (GT boxes added) to GT by IoU and sample RoIs for the box and mask heads.

    Per image: up to ``num_expected_pos_stage2`` random positives (IoU >= pos_iou_thr_stage2) come
    first, then up to ``num_expected_neg_stage2`` random negatives fill the
    ``num_expected_total_stage2`` slots; ``valid`` marks filled slots. The mask branch reads the
    first ``num_expected_pos_stage2`` slots (positives when there are enough).
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
        self.box_offset = box_offset_of(cfg.box_convention)

    def construct(self, proposals, proposal_valid, gt_bboxes, gt_labels, gt_valids):
        """Args:
            proposals: (B, P, 4); proposal_valid: (B, P) bool;
            gt_bboxes: (B, G, 4); gt_labels: (B, G) int32 in 1..num_classes-1; gt_valids: (B, G) bool.
        Returns:
            rois (B, R, 4) with R = min(num_expected_total_stage2, G + P), positives first;
            labels (B, R) int32 (0 = background); valid (B, R) bool;
            bbox_targets (B, R, 4) (0 where labels are 0);
            gt_index (B, R) int32 (the GT each slot was assigned to).
        """
        candidates = ops.concat([gt_bboxes, proposals], 1)
        candidate_valid = ops.concat([gt_valids, proposal_valid], 1)
        batch, num = candidates.shape[0], candidates.shape[1]
        overlaps = bbox_overlaps(candidates, gt_bboxes, gt_valids)  # (B, G + P, G), -1 for invalid GT
        max_iou = overlaps.max(axis=2)
        max_iou = ops.where(candidate_valid, max_iou, ops.full_like(max_iou, -1.0))
        assigned = ops.argmax(overlaps, dim=2).astype(ms.int32)
        pos = select_random(max_iou >= self.pos_thr, ops.rand((batch, num)), self.num_pos)
        neg = ops.logical_and(max_iou < self.neg_thr, max_iou >= 0.0)
        neg = select_random(neg, ops.rand((batch, num)), self.num_neg)

        # one top-k orders the slots: sampled positives (key >= 2), then sampled negatives
        noise = ops.rand((batch, num))
        key = ops.where(pos, noise + 2.0, ops.where(neg, noise, ops.full_like(noise, -1.0)))
        key, index = ops.topk(key, min(self.num_total, num))
        is_pos = key >= 2.0
        rois = gather_rows(candidates, index)
        gt_index = ops.gather_elements(assigned, 1, index)
        labels = ops.gather_elements(gt_labels, 1, gt_index) * is_pos.astype(ms.int32)
        bbox_targets = encode_deltas(rois, gather_rows(gt_bboxes, gt_index), self.means, self.stds, self.box_offset)
        # zero, not inf or NaN, where no positive is (empty slots hold zero-size boxes): the loss
        # masks by multiplying, and 0 x NaN is NaN
        bbox_targets = ops.where(ops.expand_dims(is_pos, 2), bbox_targets, ops.zeros_like(bbox_targets))
        return (ops.stop_gradient(rois), ops.stop_gradient(labels), key >= 0.0, ops.stop_gradient(bbox_targets),
                gt_index)
