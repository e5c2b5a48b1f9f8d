"""Standard Mask R-CNN mask head (4 convs, deconv, 28x28 class-specific logits) and its loss."""
from mindspore import nn, ops
from mindspore.common.initializer import HeNormal

from src.maskrcnn.mask_targets import grid_mask_targets


class FpnMask(nn.Cell):
    """(R, C, 14, 14) RoI features -> (R, num_classes, 28, 28) mask logits."""

    def __init__(self, in_channels, conv_channels, num_classes):
        super().__init__()
        init = HeNormal(mode="fan_out", nonlinearity="relu")
        self.mask_conv1 = nn.Conv2d(in_channels, conv_channels, 3, pad_mode="same", has_bias=True, weight_init=init)
        self.mask_conv2 = nn.Conv2d(conv_channels, conv_channels, 3, pad_mode="same", has_bias=True, weight_init=init)
        self.mask_conv3 = nn.Conv2d(conv_channels, conv_channels, 3, pad_mode="same", has_bias=True, weight_init=init)
        self.mask_conv4 = nn.Conv2d(conv_channels, conv_channels, 3, pad_mode="same", has_bias=True, weight_init=init)
        self.mask_deconv5 = nn.Conv2dTranspose(conv_channels, conv_channels, 2, stride=2, pad_mode="valid",
                                               has_bias=True, weight_init=init)
        self.mask_conv6 = nn.Conv2d(conv_channels, num_classes, 1, has_bias=True, weight_init=init)
        self.relu = nn.ReLU()

    def construct(self, x):
        x = self.relu(self.mask_conv1(x))
        x = self.relu(self.mask_conv2(x))
        x = self.relu(self.mask_conv3(x))
        x = self.relu(self.mask_conv4(x))
        x = self.relu(self.mask_deconv5(x))
        return self.mask_conv6(x)


class RcnnMask(nn.Cell):
    """Standard mask head (saved as ``rcnn_mask.fpn_mask.*``)."""

    def __init__(self, cfg, num_classes):
        super().__init__()
        self.fpn_mask = FpnMask(cfg.rcnn_in_channels, cfg.rcnn_mask_out_channels, num_classes)

    def construct(self, roi_features):
        return self.fpn_mask(roi_features)


def select_class(logits, classes):
    """(R, C, H, W) logits and (R,) int32 classes -> (R, H, W) logits of each RoI's class."""
    r, _, h, w = logits.shape
    index = ops.broadcast_to(classes.reshape(r, 1, 1, 1), (r, 1, h, w))
    return ops.gather_elements(logits, 1, index)[:, 0]


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


def standard_mask_loss(logits, labels, weights, gt_masks, gt_boxes, rois, target_grid, side, sample_num):
    """Mask R-CNN loss of the GT-class channel against side x side binary targets.

    Args:
        logits: (R, C, side, side); labels: (R,) int32; weights: (R,) float32;
        gt_masks: (R, S, S) GT crops; gt_boxes: (R, 4); rois: (R, 4);
        target_grid: box-normalised sample points (``regular_grid_points(side * sample_num)``).
    """
    targets = grid_mask_targets(gt_masks, gt_boxes, rois, target_grid, side, sample_num)
    return masked_bce_loss(select_class(logits, labels), targets, weights)
