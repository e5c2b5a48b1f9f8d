"""Mask losses: per-RoI binary cross-entropy and the Mask R-CNN loss on a regular grid of targets
(used by the standard head and by PointRend's coarse head)."""
from mindspore import ops

from src.layers.tensor_utils import select_class


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


def mask_rcnn_loss(logits, labels, weights, targets):
    """Mask R-CNN loss of the GT-class channel against binary grid targets.

    Args:
        logits: (R, C, side, side); labels: (R,) int32; weights: (R,) float32;
        targets: (R, side, side) in {0, 1} (``mask_targets.roi_mask_targets``).
    Returns:
        scalar loss.
    """
    return masked_bce_loss(select_class(logits, labels), targets, weights)
