"""Box head: 2 shared FCs, classifier and class-specific box regressor, and its losses."""
import numpy as np

import mindspore as ms
from mindspore import nn, ops, Parameter
from mindspore.common.initializer import Normal, XavierUniform, initializer

from src.layers.box_utils import decode_deltas, smooth_l1


class DenseNoTranpose(nn.Cell):
    """y = x @ W + b with W stored as (in, out), the model-zoo layout (name kept, typo included)."""

    def __init__(self, in_channels, out_channels, weight_init):
        super().__init__()
        self.weight = Parameter(initializer(weight_init, [in_channels, out_channels], ms.float32))
        self.bias = Parameter(initializer("zeros", [out_channels], ms.float32))
        self.matmul = ops.MatMul()

    def construct(self, x, weight=None):
        """x (K, in) -> (K, out); ``weight`` (in, out) replaces the stored one (a re-ordered copy of it)."""
        # bias_add, not +: MindSpore's CPU kernels of broadcasting element-wise ops keep 16 bytes per
        # output element for the life of the graph (README, memory)
        return ops.bias_add(self.matmul(x, self.weight if weight is None else weight), self.bias)


def channels_last_rows(channels, side):
    """Row order that takes the rows of a (C * S * S, n) matrix indexed in (C, S, S) order to (S, S, C)
    order: row (y * S + x) * C + c of the result is row (c * S + y) * S + x. int32 (C * S * S,)."""
    return np.arange(channels * side * side, dtype=np.int32).reshape(channels, side * side).T.reshape(-1)


class FpnCls(nn.Cell):
    """(K, S, S, C) channels-last RoI features -> class logits (K, num_classes), deltas (K, num_classes * 4).

    The first FC's stored rows follow the (C, S, S) flattening of the model zoo and detectron2; a
    gather puts them in (S, S, C) order for the channels-last input (a (C * S * S, fc_channels) copy per
    call) instead of a ``Transpose`` of the (K, S, S, C) features and of their gradient, whose CPU
    kernels would keep an 8-byte offset per element for the graph's life (``tensor_utils.permute``;
    a view cannot follow RoIAlign's custom-backward look-up, see ``roi_align.py``). A gather, not a
    ``permute`` view of the weight: the view's copy was the slower of the two (README, memory).

    Args:
        channels, roi_side: C and S of the input; fc_channels: width of the shared FCs;
        num_classes: classes including background; num_layers: shared FCs (2).
    """

    def __init__(self, channels, roi_side, fc_channels, num_classes, num_layers):
        super().__init__()
        if num_layers != 2:
            raise ValueError(f"rcnn_num_layers: only 2 shared FC layers are implemented, got {num_layers}")
        self.fc_0_rows = ms.Tensor(channels_last_rows(channels, roi_side))
        self.shared_fc_0 = DenseNoTranpose(channels * roi_side * roi_side, fc_channels, XavierUniform())
        self.shared_fc_1 = DenseNoTranpose(fc_channels, fc_channels, XavierUniform())
        self.cls_scores = DenseNoTranpose(fc_channels, num_classes, Normal(0.01))
        self.reg_scores = DenseNoTranpose(fc_channels, num_classes * 4, Normal(0.001))
        self.relu = nn.ReLU()

    def construct(self, x):
        fc_0 = self.shared_fc_0
        x = self.relu(fc_0(x.reshape(x.shape[0], -1), ops.gather(fc_0.weight, self.fc_0_rows, 0)))
        x = self.relu(self.shared_fc_1(x))
        # float32 whatever precision amp_level ran the layers in: softmax, losses and decoding read these
        return self.cls_scores(x).astype(ms.float32), self.reg_scores(x).astype(ms.float32)


class RcnnCls(nn.Cell):
    """Box head (saved as ``rcnn_cls.fpn_cls.*``)."""

    def __init__(self, cfg, num_classes):
        super().__init__()
        self.fpn_cls = FpnCls(cfg.rcnn_in_channels, cfg.roi_layer.out_size, cfg.rcnn_fc_out_channels, num_classes,
                              cfg.rcnn_num_layers)

    def construct(self, roi_features):
        return self.fpn_cls(roi_features)


def class_deltas(deltas, classes, num_classes):
    """(K, num_classes * 4) class-specific deltas and (K,) int32 classes -> (K, 4) deltas of each class."""
    per_class = deltas.reshape(deltas.shape[0], num_classes, 4)
    index = ops.broadcast_to(classes.reshape(-1, 1, 1), (classes.shape[0], 1, 4))
    return ops.gather_elements(per_class, 1, index).reshape(-1, 4)


def refined_boxes(rois, deltas, classes, num_classes, means, stds, box_offset):
    """The box head's boxes for given classes (detectron2's ``predict_boxes_for_gt_classes``: decoded,
    not clipped), without gradient.

    Args:
        rois: (K, 4); deltas: (K, num_classes * 4); classes: (K,) int32.
    Returns:
        (K, 4).
    """
    chosen = class_deltas(ops.stop_gradient(deltas), classes, num_classes)
    return ops.stop_gradient(decode_deltas(rois, chosen, means, stds, box_offset))


def rcnn_box_losses(cls_logits, deltas, labels, valid, bbox_targets, num_classes, beta=1.0):
    """Softmax cross-entropy over the valid RoIs and smooth-L1 (``beta``; 0 = L1) of the GT-class
    deltas over the positive RoIs, both divided by the number of valid RoIs (detectron2's
    ``FastRCNNOutputLayers.losses``: cross-entropy mean, box loss sum / number of sampled RoIs).

    Args:
        cls_logits: (K, num_classes); deltas: (K, num_classes * 4); labels: (K,) int32;
        valid: (K,) bool; bbox_targets: (K, 4) (rows of negatives are ignored).
    Returns:
        (loss_cls, loss_reg) scalars.
    """
    weights = valid.astype(ms.float32)
    num = ops.maximum(weights.sum(), 1.0)
    ce = ops.cross_entropy(cls_logits, labels, reduction="none")
    loss_cls = (ce * weights).sum() / num
    chosen = class_deltas(deltas, labels, num_classes)
    pos = ops.logical_and(valid, labels > 0).astype(ms.float32)
    loss_reg = (smooth_l1(chosen - bbox_targets, beta).sum(axis=1) * pos).sum() / num
    return loss_cls, loss_reg
