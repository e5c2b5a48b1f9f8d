"""Point sampling for PointRend: ``point_sample``, training point selection, subdivision points.

Point coordinates are (x, y). "Box-normalised" points lie in [0, 1]^2 inside a box; image points
are in input-canvas pixels (continuous: pixel j covers [j, j + 1)).
"""
import numpy as np

import mindspore as ms
from mindspore import ops

from src.maskrcnn.feature_sampler import bilinear_gather


def point_sample(features, points):
    """Bilinear sampling at normalised points, as ``grid_sample`` with align_corners=False and zero
    padding (detectron2's ``point_sample``).

    Written with ``gather`` on a flat (N * H * W, C) table: MindSpore's CPU grid_sample gradient
    kernel fails on these shapes, and gather is faster.

    Args:
        features: (N, C, H, W). points: (N, P, 2) in [0, 1]^2 (points outside read zeros).
    Returns:
        (N, C, P).
    """
    n, c, h, w = features.shape
    table = ops.transpose(features, (0, 2, 3, 1)).reshape(n * h * w, c)
    base = ms.Tensor(np.arange(n, dtype=np.int32).reshape(n, 1) * (h * w))
    size_h = ops.ones_like(base) * h
    size_w = ops.ones_like(base) * w
    out = bilinear_gather(table, base, size_h, size_w, points[..., 0] * w - 0.5, points[..., 1] * h - 0.5, False)
    return ops.transpose(out, (0, 2, 1))


def regular_grid_points(side):
    """Cell centres of a side x side grid in [0, 1]^2, row-major: numpy (side * side, 2)."""
    c = (np.arange(side, dtype=np.float32) + 0.5) / side
    xs, ys = np.meshgrid(c, c)
    return np.stack([xs.reshape(-1), ys.reshape(-1)], 1)


def box_points_to_image(boxes, points):
    """Map box-normalised points into image pixels.

    Args:
        boxes: (R, 4); points: (R, P, 2) or (P, 2) shared by all boxes.
    Returns:
        (R, P, 2).
    """
    x1 = boxes[:, 0:1]
    y1 = boxes[:, 1:2]
    w = boxes[:, 2:3] - x1
    h = boxes[:, 3:4] - y1
    return ops.stack([x1 + points[..., 0] * w, y1 + points[..., 1] * h], -1)


def uncertainty(logits):
    """PointRend's uncertainty of a class logit: -|logit| (highest at the decision boundary)."""
    return -ops.abs(logits)


def select_uncertain_points(candidates, candidate_logits, num_uncertain):
    """The ``num_uncertain`` most uncertain candidates of each RoI.

    Args:
        candidates: (R, M, 2); candidate_logits: (R, M) logits of the class of interest.
    Returns:
        (R, num_uncertain, 2).
    """
    _, idx = ops.topk(uncertainty(candidate_logits), num_uncertain)
    idx = ops.broadcast_to(ops.expand_dims(idx, 2), idx.shape + (2,))
    return ops.gather_elements(candidates, 1, idx)


def training_point_counts(num_points, oversample_ratio, importance_ratio):
    """(candidates, importance points, random points) per RoI, as detectron2 computes them."""
    num_candidates = int(num_points * oversample_ratio)
    num_uncertain = int(importance_ratio * num_points)
    return num_candidates, num_uncertain, num_points - num_uncertain


def training_points(coarse_logits, candidates, extra, num_uncertain):
    """Uncertainty-based training points with randomness (PointRend section 3.1).

    Args:
        coarse_logits: (R, 1, h, w) coarse logits of each RoI's GT class.
        candidates: (R, M, 2) uniform random box-normalised points (M = oversampled count).
        extra: (R, E, 2) uniform random points, appended as they are.
        num_uncertain: how many of the most uncertain candidates to keep.
    Returns:
        (R, num_uncertain + E, 2) box-normalised points: the most uncertain candidates, then ``extra``.
    """
    candidate_logits = point_sample(coarse_logits, candidates)[:, 0, :]
    chosen = select_uncertain_points(candidates, candidate_logits, num_uncertain)
    if extra.shape[1] == 0:
        return chosen
    return ops.concat([chosen, extra], 1)


def uncertain_grid_points(logits, num_points):
    """The ``num_points`` most uncertain cells of a logit map (subdivision inference).

    Args:
        logits: (R, H, W) logits of each RoI's predicted class.
    Returns:
        indices (R, num_points) int32 into the flattened H * W map, and their cell centres
        (R, num_points, 2) box-normalised.
    """
    r, h, w = logits.shape
    _, idx = ops.topk(uncertainty(logits.reshape(r, h * w)), num_points)
    idx = idx.astype(ms.int32)
    xs = (ops.cast(idx % w, ms.float32) + 0.5) / w
    ys = (ops.cast(idx // w, ms.float32) + 0.5) / h
    return idx, ops.stack([xs, ys], -1)
