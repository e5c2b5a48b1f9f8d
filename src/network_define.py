"""Training wrappers around the network."""
import mindspore as ms
from mindspore import nn

from src.maskrcnn_pointrend_r50 import LOSS_NAMES


def loss_weights(cfg):
    """Config weight of each loss in ``LOSS_NAMES`` order."""
    mask_weight = cfg.rcnn_loss_mask_coarse_weight if cfg.mask_head == "pointrend" else cfg.rcnn_loss_mask_fb_weight
    return (cfg.rpn_loss_cls_weight, cfg.rpn_loss_reg_weight, cfg.rcnn_loss_cls_weight, cfg.rcnn_loss_reg_weight,
            mask_weight, cfg.rcnn_loss_mask_point_weight)


class WithLossCell(nn.Cell):
    """Weighted sum of the network's loss components: (inputs...) -> scalar loss."""

    def __init__(self, network, cfg):
        super().__init__(auto_prefix=False)
        self.network = network
        self.weights = loss_weights(cfg)
        assert len(self.weights) == len(LOSS_NAMES)

    def construct(self, img, img_metas, gt_bboxes, gt_labels, gt_valids, gt_masks):
        losses = self.network(img, img_metas, gt_bboxes, gt_labels, gt_valids, gt_masks)
        total = losses[0] * self.weights[0]
        for i in range(1, len(self.weights)):
            total = total + losses[i] * self.weights[i]
        return total
