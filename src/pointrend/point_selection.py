"""PointRend's point selection: the most uncertain points for training (section 3.1) and for the
adaptive subdivision at inference. Points are box-normalised (x, y) in [0, 1]^2.
"""
import mindspore as ms
from mindspore import ops

from src.layers.point_sample import point_sample


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
