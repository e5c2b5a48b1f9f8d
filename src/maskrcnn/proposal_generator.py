"""RPN proposals: per-level top-k, decode, clip, NMS, then a global top-k per image."""
import numpy as np

import mindspore as ms
from mindspore import nn, ops

from src.layers.box_utils import box_offset_of, clip_boxes, decode_deltas, nms_keep


class Proposal(nn.Cell):
    """Proposal generator for training or testing.

    Args:
        cfg: config; anchors: list of (N_l, 4) numpy anchors per level; training: which
            settings to use (rpn_proposal_* for training, rpn_* for testing).
    Output of construct: proposals (B, P, 4) and valid (B, P) bool, P = ``self.num_proposals``.
    """

    def __init__(self, cfg, anchors, training):
        super().__init__()
        if training:
            nms_pre, nms_thr, max_num = cfg.rpn_proposal_nms_pre, cfg.rpn_proposal_nms_thr, cfg.rpn_proposal_max_num
            min_size = cfg.rpn_proposal_min_bbox_size
        else:
            nms_pre, nms_thr, max_num = cfg.rpn_nms_pre, cfg.rpn_nms_thr, cfg.rpn_max_num
            min_size = cfg.rpn_min_bbox_min_size
        self.anchors = tuple(ms.Tensor(a.astype(np.float32)) for a in anchors)
        self.pre_counts = tuple(min(nms_pre, a.shape[0]) for a in anchors)
        ends = np.cumsum([a.shape[0] for a in anchors])
        self.level_bounds = tuple((int(e - a.shape[0]), int(e)) for a, e in zip(anchors, ends))
        self.num_proposals = min(max_num, sum(self.pre_counts))
        self.nms_thr = nms_thr
        self.min_size = float(min_size)
        self.means = tuple(cfg.rpn_target_means)
        self.stds = tuple(cfg.rpn_target_stds)
        self.box_offset = box_offset_of(cfg.box_convention)

    def large_enough(self, sides):
        """Which box sides pass the minimum size: ``>= min_size`` in the model zoo; detectron2's
        ``Boxes.nonempty`` keeps sides ``> min_size`` (so boxes clipped to zero width go)."""
        if self.box_offset == 0.0:
            return sides > self.min_size
        return sides >= self.min_size

    def construct(self, cls_logits, deltas, img_metas, anchor_valid=None):
        """Args:
            cls_logits: (B, N) all levels; deltas: (B, N, 4) (anchor order of ``multi_level_anchors``);
            img_metas: (B, 4) = (height, width, scale_h, scale_w) of the resized image on the canvas;
            anchor_valid: None, or (B, N) bool: anchors that may propose (the others are left out,
                as if the canvas ended at the image's padded extent).
        Returns: proposals (B, P, 4), valid (B, P) bool."""
        # proposals are constants for the rest of the network, as in the model zoo and detectron2
        cls_logits = ops.stop_gradient(cls_logits)
        deltas = ops.stop_gradient(deltas)
        batch = img_metas.shape[0]
        height = img_metas[:, 0:1]
        width = img_metas[:, 1:2]
        level_boxes = []
        level_scores = []
        for lvl in range(len(self.anchors)):
            begin, end = self.level_bounds[lvl]
            scores = ops.sigmoid(cls_logits[:, begin:end])
            if anchor_valid is not None:
                scores = ops.where(anchor_valid[:, begin:end], scores, ops.full_like(scores, -1.0))
            top_scores, idx = ops.topk(scores, self.pre_counts[lvl])  # (B, k)
            d = ops.gather_elements(deltas[:, begin:end], 1,
                                    ops.broadcast_to(ops.expand_dims(idx, 2), idx.shape + (4,)))
            anchors = ops.gather(self.anchors[lvl], idx, 0)  # (B, k, 4)
            boxes = clip_boxes(decode_deltas(anchors, d, self.means, self.stds, self.box_offset), height, width,
                               self.box_offset)
            wh_ok = ops.logical_and(self.large_enough(boxes[..., 2] - boxes[..., 0]),
                                    self.large_enough(boxes[..., 3] - boxes[..., 1]))
            kept = []
            for b in range(batch):
                kept.append(nms_keep(boxes[b], self.nms_thr))
            keep = ops.logical_and(ops.logical_and(ops.stack(kept, 0), wh_ok), top_scores >= 0.0)
            level_scores.append(ops.where(keep, top_scores, ops.full_like(top_scores, -1.0)))
            level_boxes.append(boxes)
        scores = ops.concat(level_scores, 1)
        boxes = ops.concat(level_boxes, 1)
        top_scores, idx = ops.topk(scores, self.num_proposals)
        proposals = ops.gather_elements(boxes, 1, ops.broadcast_to(ops.expand_dims(idx, 2), idx.shape + (4,)))
        return proposals, top_scores >= 0.0
