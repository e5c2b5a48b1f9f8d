"""Training wrappers: loss weighting and the one-step cell."""
import mindspore as ms
from mindspore import Parameter, Tensor, amp, nn, ops

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


def clip_by_global_norm(grads, clip_norm):
    """Scale all of ``grads`` (tensors of any shapes) by ``clip_norm / max(norm, clip_norm)``.

    ``norm`` is the global L2 norm over every element of every tensor (as ``ops.clip_by_global_norm``).
    Each tensor's squared norm is the matmul of its flat (1, n) and (n, 1) views: on the CPU a BLAS dot
    product is several times faster than the Square + ReduceSum that ``ops.clip_by_global_norm``
    runs per tensor (``python -m bench.bench_clip`` prints both).
    """
    squares = []
    for g in grads:
        flat = ops.cast(g, ms.float32).reshape(1, -1)
        squares.append(ops.matmul(flat, flat.reshape(-1, 1)))
    norm = ops.sqrt(ops.addn(squares).reshape(()))
    factor = clip_norm / ops.maximum(norm, clip_norm)
    return tuple(g * ops.cast(factor, g.dtype) for g in grads)


class TrainOneStepCell(nn.TrainOneStepCell):
    """One optimisation step on the total loss; returns (total, components...).

    Gradients are averaged over devices when data-parallel (the base class's reducer), computed on
    the loss times the loss scale and divided by it again (so that float16 gradients do not
    underflow), and clipped to ``clip_norm`` global norm when > 0.

    ``dynamic_scale``: the scale (``self.scale``, saved with the checkpoint) halves, down to 1, on a
    step whose gradients are not finite, and that step updates nothing; after ``scale_window`` finite
    steps in a row it grows by ``scale_factor``. Otherwise the scale is fixed and a step whose loss is
    not finite leaves the weights and optimizer state untouched.
    """

    def __init__(self, network, optimizer, loss_scale=1.0, clip_norm=0.0, dynamic_scale=False, scale_window=1000,
                 scale_factor=2.0):
        super().__init__(network, optimizer, sens=loss_scale)
        self.grad = ops.GradOperation(get_by_list=True, sens_param=True)
        self.clip_norm = float(clip_norm)
        self.dynamic_scale = dynamic_scale
        self.fixed_scale = float(loss_scale)
        if dynamic_scale:
            self.scale = Parameter(Tensor(float(loss_scale), ms.float32), name="loss_scale", requires_grad=False)
            self.finite_steps = Parameter(Tensor(0, ms.int32), name="loss_scale_finite_steps", requires_grad=False)
            self.overflow = Parameter(Tensor(False, ms.bool_), name="loss_scale_overflow", requires_grad=False)
            self.scale_window = int(scale_window)
            self.scale_factor = float(scale_factor)

    def construct(self, *inputs):
        losses = self.network(*inputs)
        if self.dynamic_scale:
            scale = ops.stop_gradient(self.scale)
        else:
            scale = ops.fill(ms.float32, (), self.fixed_scale)
        sens = (ops.cast(scale, losses[0].dtype) * ops.ones_like(losses[0]),) + tuple(
            ops.zeros_like(x) for x in losses[1:])
        grads = self.grad(self.network, self.weights)(*inputs, sens)
        grads = self.grad_reducer(grads)
        if self.dynamic_scale or self.fixed_scale != 1.0:
            grads = tuple(g / ops.cast(scale, g.dtype) for g in grads)
        if self.dynamic_scale:
            finite = ops.logical_and(amp.all_finite(grads), ops.isfinite(losses[0]))
            losses = ops.depend(losses, self.update_scale(finite))
        else:
            finite = ops.isfinite(losses[0])
        if self.clip_norm > 0:
            grads = clip_by_global_norm(grads, self.clip_norm)
        if finite:
            losses = ops.depend(losses, self.optimizer(grads))
        return losses

    def update_scale(self, finite):
        """Halve the scale (not below 1) after an overflow; grow it after ``scale_window`` finite steps."""
        steps = ops.select(finite, self.finite_steps + 1, ops.zeros_like(self.finite_steps))
        grow = steps >= self.scale_window
        scale = ops.select(finite, ops.select(grow, self.scale * self.scale_factor, self.scale),
                           ops.maximum(self.scale / self.scale_factor, ops.ones_like(self.scale)))
        steps = ops.select(grow, ops.zeros_like(steps), steps)
        updated = ops.depend(ops.assign(self.scale, scale), ops.assign(self.finite_steps, steps))
        return ops.depend(updated, ops.assign(self.overflow, ops.logical_not(finite)))
