"""Where an image's padded extent ends on a larger fixed canvas, per feature stride.

detectron2 pads each image only to a multiple of ``SIZE_DIVISIBILITY`` (32); a convolution at the
edge of that extent then reads zeros (its own padding). On a larger fixed canvas the same
convolution reads the features computed on the canvas padding instead. Multiplying the input of
every spatial convolution by these masks restores detectron2's values exactly (RoIAlign also
clamps its samples to that extent: ``roi_align.MultiLevelRoIAlign``'s ``extents``).
"""
import numpy as np

import mindspore as ms
from mindspore import ops


def padded_extent(img_metas, divisor):
    """(B, 2) = (height, width) of each image padded to a multiple of ``divisor``, in pixels.

    Args: img_metas (B, 4) = (h, w, scale_h, scale_w) of the resized image on the canvas.
    """
    return ops.ceil(img_metas[:, 0:2] / divisor) * divisor


def padded_extent_masks(img_metas, canvas_hw, strides, divisor):
    """Masks of the padded image extent at each stride.

    Args:
        img_metas: (B, 4) = (h, w, scale_h, scale_w) of the resized image on the canvas.
        canvas_hw: (H, W) of the canvas; strides: feature strides (each divides ``divisor`` or is a
            multiple of it); divisor: the padded extent is (ceil(h / divisor), ceil(w / divisor)) x divisor.
    Returns:
        tuple of (B, 1, ceil(H / s), ceil(W / s)) float32 masks, 1 inside the extent.
    """
    extent = padded_extent(img_metas, divisor)
    padded_h, padded_w = extent[:, 0], extent[:, 1]  # (B,)
    masks = []
    for stride in strides:
        rows = ms.Tensor(np.arange(-(-canvas_hw[0] // stride), dtype=np.float32) * stride)  # first pixel of each cell
        cols = ms.Tensor(np.arange(-(-canvas_hw[1] // stride), dtype=np.float32) * stride)
        inside_y = ops.cast(ops.expand_dims(rows, 0) < ops.expand_dims(padded_h, 1), ms.float32)  # (B, H_s)
        inside_x = ops.cast(ops.expand_dims(cols, 0) < ops.expand_dims(padded_w, 1), ms.float32)  # (B, W_s)
        masks.append(ops.expand_dims(ops.expand_dims(inside_y, 2) * ops.expand_dims(inside_x, 1), 1))
    return tuple(masks)


def anchor_validity(masks, num_anchors):
    """(B, N) bool: anchors whose cell lies inside the padded extent, in the (level, y, x, anchor)
    order of the RPN outputs; ``masks``: the per-level masks of ``padded_extent_masks``."""
    flags = []
    for mask in masks:
        b = mask.shape[0]
        cells = mask.reshape(b, -1, 1) > 0.5  # (B, H * W, 1)
        flags.append(ops.broadcast_to(cells, (b, cells.shape[1], num_anchors)).reshape(b, -1))
    return ops.concat(flags, 1)
