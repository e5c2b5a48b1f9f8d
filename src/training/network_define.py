"""Training wrappers: loss weighting and the one-step cell."""
from mindspore import nn, ops

from src.maskrcnn_pointrend_r50 import LOSS_NAMES


def loss_weights(cfg):
    """Config weight of each loss in ``LOSS_NAMES`` order."""
    mask_weight = cfg.rcnn_loss_mask_coarse_weight if cfg.mask_head == "pointrend" else cfg.rcnn_loss_mask_fb_weight
    return (cfg.rpn_loss_cls_weight, cfg.rpn_loss_reg_weight, cfg.rcnn_loss_cls_weight, cfg.rcnn_loss_reg_weight,
            mask_weight, cfg.rcnn_loss_mask_point_weight)


class WithLossCell(nn.Cell):
    """(inputs...) -> (weighted total loss, the six components unweighted)."""

    def __init__(self, network, cfg):
        super().__init__(auto_prefix=False)
        self.network = network
        self.weights = loss_weights(cfg)
        if len(self.weights) != len(LOSS_NAMES):
            raise ValueError("one weight per loss component is needed")

    def construct(self, img, img_metas, gt_bboxes, gt_labels, gt_valids, gt_masks):
        losses = self.network(img, img_metas, gt_bboxes, gt_labels, gt_valids, gt_masks)
        total = losses[0] * self.weights[0]
        for i in range(1, len(self.weights)):
            total = total + losses[i] * self.weights[i]
        return (total,) + tuple(losses)


def split_decay_groups(params, weight_decay, decay_bias_norm):
    """Optimizer groups: weight decay on conv/FC weights; biases and norm gamma/beta decay only if asked."""
    if decay_bias_norm:
        return [{"params": list(params), "weight_decay": weight_decay}]
    decay = [p for p in params if p.ndim > 1]
    rest = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if rest:
        groups.append({"params": rest, "weight_decay": 0.0})
    return groups


class TrainOneStepCell(nn.TrainOneStepCell):
    """One optimisation step on the total loss; returns (total, components...).

    Gradients are averaged over devices when data-parallel (the base class's reducer), divided
    by a fixed ``loss_scale`` and clipped to ``clip_norm`` global norm when > 0. A step whose loss
    is not finite leaves the weights and optimizer state untouched.
    """

    def __init__(self, network, optimizer, loss_scale=1.0, clip_norm=0.0):
        super().__init__(network, optimizer, sens=loss_scale)
        self.grad = ops.GradOperation(get_by_list=True, sens_param=True)
        self.clip_norm = float(clip_norm)
        self.loss_scale = float(loss_scale)

    def construct(self, *inputs):
        losses = self.network(*inputs)
        sens = (ops.fill(losses[0].dtype, losses[0].shape, self.loss_scale),) + tuple(
            ops.zeros_like(x) for x in losses[1:])
        grads = self.grad(self.network, self.weights)(*inputs, sens)
        grads = self.grad_reducer(grads)
        if self.loss_scale != 1.0:
            grads = tuple(g / self.loss_scale for g in grads)
        if self.clip_norm > 0:
            grads = ops.clip_by_global_norm(grads, self.clip_norm)
        if ops.isfinite(losses[0]):
            losses = ops.depend(losses, self.optimizer(grads))
        return losses
