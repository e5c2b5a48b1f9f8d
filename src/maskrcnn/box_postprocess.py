"""Final detections: per-class decoding, score threshold, class-aware NMS, top-k per image."""
import mindspore as ms
from mindspore import nn, ops

from src.layers.box_utils import box_offset_of, clip_boxes, decode_deltas, nms_keep


class DetectionPostprocess(nn.Cell):
    """Turn box-head outputs into at most ``test_max_per_img`` detections per image.

    The ``test_nms_pre`` highest (RoI, class) scores enter one NMS in which boxes of different
    classes are offset so that they never overlap (class-aware NMS in one call).
    """

    def __init__(self, cfg, num_classes, num_proposals):
        super().__init__()
        self.num_classes = num_classes
        self.num_fg = num_classes - 1
        self.score_thr = cfg.test_score_thr
        self.iou_thr = cfg.test_iou_thr
        self.num_candidates = min(cfg.test_nms_pre, num_proposals * self.num_fg)
        self.max_per_img = min(cfg.test_max_per_img, self.num_candidates)
        self.class_offset = float(max(cfg.img_height, cfg.img_width) + 1)
        self.means = tuple(cfg.rcnn_target_means)
        self.stds = tuple(cfg.rcnn_target_stds)
        self.box_offset = box_offset_of(cfg.box_convention)

    def construct(self, proposals, proposal_valid, cls_logits, deltas, img_metas):
        """Args:
            proposals: (B, P, 4); proposal_valid: (B, P) bool;
            cls_logits: (B * P, num_classes); deltas: (B * P, num_classes * 4);
            img_metas: (B, 4) = (height, width, scale_h, scale_w) on the input canvas.
        Returns:
            boxes (B, D, 4) on the canvas, scores (B, D), labels (B, D) int32 in 1..num_classes-1,
            valid (B, D) bool; D = test_max_per_img.
        """
        batch, num = proposals.shape[0], proposals.shape[1]
        probs = ops.softmax(cls_logits, axis=-1).reshape(batch, num, self.num_classes)[:, :, 1:]
        d = deltas.reshape(batch, num, self.num_classes, 4)[:, :, 1:]
        boxes = decode_deltas(ops.expand_dims(proposals, 2), d, self.means, self.stds, self.box_offset)
        boxes = clip_boxes(boxes, img_metas[:, 0:1].reshape(-1, 1, 1), img_metas[:, 1:2].reshape(-1, 1, 1),
                           self.box_offset)
        scores = ops.where(ops.expand_dims(proposal_valid, 2), probs, ops.full_like(probs, -1.0))
        scores = scores.reshape(batch, -1)
        boxes = boxes.reshape(batch, -1, 4)
        out_boxes, out_scores, out_labels = [], [], []
        for b in range(batch):
            top_scores, idx = ops.topk(scores[b], self.num_candidates)
            cand = ops.gather(boxes[b], idx, 0)
            labels = idx % self.num_fg + 1
            shifted = cand + ops.expand_dims(labels.astype(ms.float32) * self.class_offset, 1)
            keep = ops.logical_and(nms_keep(shifted, self.iou_thr), top_scores > self.score_thr)
            final, order = ops.topk(ops.where(keep, top_scores, ops.full_like(top_scores, -1.0)), self.max_per_img)
            out_scores.append(final)
            out_boxes.append(ops.gather(cand, order, 0))
            out_labels.append(ops.gather(labels, order, 0))
        scores = ops.stack(out_scores, 0)
        valid = scores > self.score_thr
        scores = ops.where(valid, scores, ops.zeros_like(scores))
        return ops.stack(out_boxes, 0), scores, ops.stack(out_labels, 0).astype(ms.int32), valid
