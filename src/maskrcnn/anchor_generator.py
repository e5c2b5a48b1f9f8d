"""Anchors of all FPN levels for a fixed input size (computed once, in numpy)."""
import numpy as np


ANCHOR_STYLES = ("modelzoo", "detectron2")


def base_anchors(stride, scales, ratios, style="modelzoo"):
    """Anchors of the first cell of a level; ratio = height / width, side = stride * scale.

    style "modelzoo" (mmdetection v1 rule): centred at ((stride - 1) / 2, (stride - 1) / 2), corners
    at centre -/+ (side - 1) / 2, rounded to whole pixels. style "detectron2" (its
    DefaultAnchorGenerator with offset 0): centred at (0, 0), corners at -/+ side / 2, not rounded.

    Returns:
        (A, 4) float32 with A = len(ratios) * len(scales), ordered ratio-major.
    """
    if style not in ANCHOR_STYLES:
        raise ValueError(f"anchor_style must be one of {ANCHOR_STYLES}, got {style!r}")
    ratios = np.asarray(ratios, np.float64)
    scales = np.asarray(scales, np.float64)
    h_ratios = np.sqrt(ratios)
    w_ratios = 1.0 / h_ratios
    ws = (stride * w_ratios[:, None] * scales[None, :]).reshape(-1)
    hs = (stride * h_ratios[:, None] * scales[None, :]).reshape(-1)
    if style == "detectron2":
        return np.stack([-0.5 * ws, -0.5 * hs, 0.5 * ws, 0.5 * hs], -1).astype(np.float32)
    ctr = 0.5 * (stride - 1)
    anchors = np.stack([ctr - 0.5 * (ws - 1), ctr - 0.5 * (hs - 1), ctr + 0.5 * (ws - 1), ctr + 0.5 * (hs - 1)], -1)
    return np.round(anchors).astype(np.float32)


def grid_anchors(feature_shape, stride, scales, ratios, style="modelzoo"):
    """All anchors of one level.

    Returns:
        (H * W * A, 4) float32, ordered (y, x, anchor) to match an RPN output (B, A*k, H, W)
        transposed to (B, H, W, A*k).
    """
    h, w = feature_shape
    base = base_anchors(stride, scales, ratios, style)
    sx, sy = np.meshgrid(np.arange(w) * stride, np.arange(h) * stride)
    shifts = np.stack([sx, sy, sx, sy], -1).reshape(-1, 1, 4).astype(np.float32)
    return (shifts + base[None]).reshape(-1, 4)


def multi_level_anchors(feature_shapes, strides, scales, ratios, style="modelzoo"):
    """List of (N_l, 4) anchors, one per level."""
    return [grid_anchors(shape, s, scales, ratios, style) for shape, s in zip(feature_shapes, strides)]
