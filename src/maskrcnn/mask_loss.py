"""Mask losses: per-RoI binary cross-entropy and the Mask R-CNN loss on a regular grid of targets
(used by the standard head and by PointRend's coarse head)."""
from mindspore import ops

from src.layers.tensor_utils import select_class
from src.maskrcnn.mask_targets import grid_mask_targets


def masked_bce_loss(logits, targets, weights):
    """Per-pixel BCE averaged per RoI, then averaged over RoIs with weight 1.

    Args:
        logits, targets: (R, ...) same shape; weights: (R,) float32 in {0, 1}.
    Returns:
        scalar loss.
    """
    bce = ops.binary_cross_entropy_with_logits(logits, targets, ops.ones_like(logits), ops.ones_like(logits),
                                               reduction="none")
    per_roi = bce.reshape(bce.shape[0], -1).mean(axis=1)
    return (per_roi * weights).sum() / ops.maximum(weights.sum(), 1.0)


def mask_rcnn_loss(logits, labels, weights, gt_masks, gt_boxes, rois, target_grid, side, sample_num):
    """Mask R-CNN loss of the GT-class channel against side x side binary targets.

    Args:
        logits: (R, C, side, side); labels: (R,) int32; weights: (R,) float32;
        gt_masks: (R, S, S) GT crops; gt_boxes: (R, 4); rois: (R, 4);
        target_grid: box-normalised sample points (``regular_grid_points(side * sample_num)``).
    Returns:
        scalar loss.
    """
    targets = grid_mask_targets(gt_masks, gt_boxes, rois, target_grid, side, sample_num)
    return masked_bce_loss(select_class(logits, labels), targets, weights)
