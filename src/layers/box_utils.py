"""Box arithmetic on tensors: IoU, delta encoding/decoding, clipping, NMS, the box-regression loss.

Boxes are ``(x1, y1, x2, y2)`` in pixels. Two conventions exist (config ``box_convention``, turned
into ``box_offset`` by ``box_offset_of``):
- ``modelzoo`` (offset 1): MindSpore's ``BoundingBoxEncode``/``BoundingBoxDecode``, width =
  x2 - x1 + 1 and boxes clipped to [0, W - 1], the convention the model-zoo Mask R-CNN checkpoint
  was trained with;
- ``detectron2`` (offset 0): detectron2's ``Box2BoxTransform`` and ``Boxes.clip``, width = x2 - x1
  and boxes clipped to [0, W].
The coder is written with plain tensor ops so that it has a gradient on every backend and works on
any leading shape.
"""
import math

import numpy as np

import mindspore as ms
from mindspore import ops

from src.layers.tensor_utils import expand_to

# Largest |dw|, |dh| accepted by the decoder: log(1 / 0.016), as BoundingBoxDecode's wh_ratio_clip;
# detectron2's scale_clamp log(1000 / 16) is the same number.
MAX_LOG_RATIO = abs(math.log(0.016))

BOX_OFFSETS = {"modelzoo": 1.0, "detectron2": 0.0}


def box_offset_of(convention):
    """The pixel added to x2 - x1 for a box width under ``convention`` (config ``box_convention``)."""
    return BOX_OFFSETS[convention]


def _pairwise(op, boxes1, boxes2, i, shape, after):
    """op(coordinate i of boxes1 (..., N, 4), of boxes2 (..., M, 4)) over all pairs: (..., N, M),
    computed after ``after`` (a tensor, or None)."""
    a, b = boxes1[..., i], boxes2[..., i]
    if after is not None:
        a, b = ops.depend(a, after), ops.depend(b, after)
    return op(expand_to(a, -1, shape), expand_to(b, -2, shape))


def bbox_overlaps(boxes1, boxes2, valid2=None):
    """IoU of every pair.

    Args:
        boxes1: (..., N, 4); boxes2: (..., M, 4) with the same leading shape;
        valid2: optional (..., M) bool: pairs with an invalid ``boxes2`` entry get IoU -1.
    Returns:
        (..., N, M) float32 IoU; pairs whose union is empty give 0.
    """
    shape = boxes1.shape[:-1] + (boxes2.shape[-2],)
    # MindSpore's runtime launches every kernel whose inputs are ready: the eight expanded
    # coordinates of the pairs' shape would all be alive at once (1.9 GiB for the anchors'), so
    # each pairwise step waits for the one before it
    x1 = _pairwise(ops.maximum, boxes1, boxes2, 0, shape, None)
    width = ops.relu(_pairwise(ops.minimum, boxes1, boxes2, 2, shape, x1) - x1)
    y1 = _pairwise(ops.maximum, boxes1, boxes2, 1, shape, width)
    inter = width * ops.relu(_pairwise(ops.minimum, boxes1, boxes2, 3, shape, y1) - y1)
    area1 = ops.relu(boxes1[..., 2] - boxes1[..., 0]) * ops.relu(boxes1[..., 3] - boxes1[..., 1])
    area2 = ops.relu(boxes2[..., 2] - boxes2[..., 0]) * ops.relu(boxes2[..., 3] - boxes2[..., 1])
    area1, area2 = ops.depend(area1, inter), ops.depend(area2, inter)
    union = expand_to(area1, -1, shape) + expand_to(area2, -2, shape) - inter
    # Xdivy is x / y (0 where x is 0, as here): MindSpore's CPU RealDiv keeps two 8-byte index
    # tables per output element for the graph's life (0.94 GiB for the anchors' (2, 245520, 128)).
    iou = ops.xdivy(inter, ops.maximum(union, 1e-6))
    if valid2 is None:
        return iou
    # MaskedFill reads its value as a scalar tensor: where(mask, iou, -1.0) would broadcast it with
    # such tables, and full_like(iou, -1.0) is folded into a constant of the pairs' shape.
    invalid = expand_to(ops.logical_not(valid2), -2, shape)
    return ops.masked_fill(iou, invalid, ms.Tensor(-1.0, ms.float32))


def encode_deltas(boxes, targets, means, stds, box_offset=1.0):
    """Regression targets that move ``boxes`` onto ``targets``.

    Args:
        boxes, targets: (..., 4). means, stds: 4-sequences. box_offset: see ``box_offset_of``.
    Returns:
        (..., 4) normalised deltas (dx, dy, dw, dh).
    """
    pw = boxes[..., 2] - boxes[..., 0] + box_offset
    ph = boxes[..., 3] - boxes[..., 1] + box_offset
    px = (boxes[..., 0] + boxes[..., 2]) * 0.5
    py = (boxes[..., 1] + boxes[..., 3]) * 0.5
    gw = targets[..., 2] - targets[..., 0] + box_offset
    gh = targets[..., 3] - targets[..., 1] + box_offset
    gx = (targets[..., 0] + targets[..., 2]) * 0.5
    gy = (targets[..., 1] + targets[..., 3]) * 0.5
    deltas = ops.stack([(gx - px) / pw, (gy - py) / ph, ops.log(gw / pw), ops.log(gh / ph)], -1)
    return (deltas - ms.Tensor(means, ms.float32)) / ms.Tensor(stds, ms.float32)


def decode_deltas(boxes, deltas, means, stds, box_offset=1.0):
    """Inverse of ``encode_deltas`` (no clipping to the image).

    Args:
        boxes: (..., 4); deltas: (..., 4) broadcastable to boxes; box_offset: see ``box_offset_of``.
    Returns:
        (..., 4) decoded boxes.
    """
    d = deltas * ms.Tensor(stds, ms.float32) + ms.Tensor(means, ms.float32)
    dw = ops.clamp(d[..., 2], -MAX_LOG_RATIO, MAX_LOG_RATIO)
    dh = ops.clamp(d[..., 3], -MAX_LOG_RATIO, MAX_LOG_RATIO)
    pw = boxes[..., 2] - boxes[..., 0] + box_offset
    ph = boxes[..., 3] - boxes[..., 1] + box_offset
    px = (boxes[..., 0] + boxes[..., 2]) * 0.5
    py = (boxes[..., 1] + boxes[..., 3]) * 0.5
    gw = pw * ops.exp(dw)
    gh = ph * ops.exp(dh)
    gx = px + pw * d[..., 0]
    gy = py + ph * d[..., 1]
    half = 0.5 * box_offset
    return ops.stack([gx - gw * 0.5 + half, gy - gh * 0.5 + half, gx + gw * 0.5 - half, gy + gh * 0.5 - half], -1)


def clip_boxes(boxes, height, width, box_offset=1.0):
    """Clip boxes to an image of ``height`` x ``width`` pixels.

    Args:
        boxes: (..., 4). height, width: tensors broadcastable to boxes[..., 0] (e.g. (B, 1)).
        box_offset: see ``box_offset_of``.
    Returns:
        (..., 4) with x in [0, width - box_offset] and y in [0, height - box_offset].
    """
    xmax = width - box_offset
    ymax = height - box_offset
    x1 = ops.minimum(ops.relu(boxes[..., 0]), xmax)
    y1 = ops.minimum(ops.relu(boxes[..., 1]), ymax)
    x2 = ops.minimum(ops.relu(boxes[..., 2]), xmax)
    y2 = ops.minimum(ops.relu(boxes[..., 3]), ymax)
    return ops.stack([x1, y1, x2, y2], -1)


def nms_keep(boxes, iou_thr):
    """Greedy NMS of boxes already sorted by descending score.

    ``NMSWithMask`` sorts by score itself and its index output is not reliable on every backend,
    so it gets strictly decreasing rank scores: its keep mask then lines up with ``boxes``.

    Args:
        boxes: (K, 4) sorted by descending score.
    Returns:
        (K,) bool keep mask.
    """
    k = boxes.shape[0]
    rank_scores = ms.Tensor(np.linspace(1.0, 0.0, k, endpoint=False, dtype=np.float32).reshape(k, 1))
    _, _, keep = ops.NMSWithMask(iou_thr)(ops.concat([boxes, rank_scores], 1))
    return keep


def smooth_l1(diff, beta):
    """Elementwise smooth L1 of a difference tensor (any shape); beta 0 is the L1 loss."""
    absd = ops.abs(diff)
    if beta == 0:
        return absd
    return ops.where(absd < beta, 0.5 * absd * absd / beta, absd - 0.5 * beta)
