"""Region proposal network head and its losses."""
import mindspore as ms
from mindspore import nn, ops
from mindspore.common.initializer import Normal

from src.layers.box_utils import smooth_l1
from src.layers.conv2d import Conv2d
from src.layers.tensor_utils import permute
from src.maskrcnn.bbox_assign_sample import BboxAssignSample


class RpnRegClsBlock(nn.Cell):
    """3x3 conv + ReLU, then objectness (A) and box deltas (4A) 1x1 convs; shared by all levels."""

    def __init__(self, in_channels, feat_channels, num_anchors, cls_out_channels):
        super().__init__()
        self.rpn_conv = Conv2d(in_channels, feat_channels, 3, pad_mode="same", has_bias=True,
                               weight_init=Normal(0.01), bias_init="zeros")
        self.relu = nn.ReLU()
        self.rpn_cls = Conv2d(feat_channels, num_anchors * cls_out_channels, 1, has_bias=True,
                              weight_init=Normal(0.01), bias_init="zeros")
        self.rpn_reg = Conv2d(feat_channels, num_anchors * 4, 1, has_bias=True, weight_init=Normal(0.01),
                              bias_init="zeros")

    def construct(self, x):
        x = self.relu(self.rpn_conv(x))
        return self.rpn_cls(x), self.rpn_reg(x)


class RPN(nn.Cell):
    """RPN head over all pyramid levels (one weight set; saved as ``rpn_convs_list.0``).

    Input: pyramid (P2..P6), each (B, C, H_l, W_l).
    Output: cls_logits (B, N) and deltas (B, N, 4) for the N anchors of all levels, level by level,
    each in the (y, x, a) order of ``anchor_generator.grid_anchors``.
    """

    def __init__(self, in_channels, feat_channels, num_anchors, cls_out_channels):
        super().__init__()
        if cls_out_channels != 1:
            raise ValueError("rpn_cls_out_channels must be 1 (sigmoid objectness)")
        self.rpn_convs_list = nn.CellList([RpnRegClsBlock(in_channels, feat_channels, num_anchors,
                                                          cls_out_channels)])

    def construct(self, features):
        cls_out = []
        reg_out = []
        block = self.rpn_convs_list[0]
        for x in features:
            cls, reg = block(x)
            batch = cls.shape[0]
            cls_out.append(permute(cls, (0, 2, 3, 1)).reshape(batch, -1))
            reg_out.append(permute(reg, (0, 2, 3, 1)).reshape(batch, -1, 4))
        # float32 whatever precision amp_level ran the layers in: losses, decoding and NMS read these
        return ops.concat(cls_out, 1).astype(ms.float32), ops.concat(reg_out, 1).astype(ms.float32)


class RpnLoss(nn.Cell):
    """Objectness BCE and box smooth-L1 (beta ``rpn_smooth_l1_beta``) over the sampled anchors, both
    divided by the number of sampled anchors in the batch (detectron2's normaliser too, as long as
    every image fills its anchor sample).

    Args:
        cfg: config; anchors: (N, 4) numpy anchors of all levels, in the RPN output order.
    """

    def __init__(self, cfg, anchors):
        super().__init__()
        self.targets = BboxAssignSample(cfg, anchors)
        self.beta = cfg.rpn_smooth_l1_beta

    def construct(self, cls_logits, deltas, gt_bboxes, gt_valids):
        """Args: cls_logits (B, N); deltas (B, N, 4); gt_bboxes (B, G, 4); gt_valids (B, G).
        Returns: (loss_cls, loss_reg) scalars."""
        labels, label_weights, bbox_targets, bbox_weights = self.targets(gt_bboxes, gt_valids)
        num = ops.maximum(label_weights.sum(), 1.0)
        bce = ops.binary_cross_entropy_with_logits(cls_logits, labels, label_weights, ops.ones_like(labels),
                                                   reduction="sum")
        loss_cls = bce / num
        reg = smooth_l1(deltas - bbox_targets, self.beta).sum(axis=2)
        loss_reg = (reg * bbox_weights).sum() / num
        return loss_cls, loss_reg
