"""Mask targets from per-instance GT masks stored as fixed-size crops of their boxes.

A GT instance travels as its box (x1, y1, x2, y2) plus an S x S crop of its mask resampled to
that box (cell (i, j) covers the box-normalised square [j/S, (j+1)/S) x [i/S, (i+1)/S)). Any
point in the image then has a GT value by bilinear sampling of the crop; points outside the box
are background. This keeps device memory at G x S x S per image instead of G x H x W.
"""
import mindspore as ms
from mindspore import ops

from src.layers.point_sample import box_points_to_image, point_sample


def target_samples_per_cell(sample_num):
    """Samples per target cell side for config ``roi_layer.sample_num``: the same as RoIAlign's
    fixed grid, or 2 when RoIAlign samples adaptively (0), which applies to features only."""
    return sample_num if sample_num > 0 else 2


def gt_mask_at_points(gt_masks, gt_boxes, points):
    """Soft GT mask values at image points.

    Args:
        gt_masks: (R, S, S) float crops in [0, 1]; gt_boxes: (R, 4) their boxes.
        points: (R, P, 2) image pixels.
    Returns:
        (R, P) values in [0, 1].
    """
    w = ops.maximum(gt_boxes[:, 2:3] - gt_boxes[:, 0:1], 1e-3)
    h = ops.maximum(gt_boxes[:, 3:4] - gt_boxes[:, 1:2], 1e-3)
    u = (points[..., 0] - gt_boxes[:, 0:1]) / w
    v = (points[..., 1] - gt_boxes[:, 1:2]) / h
    return point_sample(ops.expand_dims(gt_masks, 1), ops.stack([u, v], -1))[:, 0, :]


def grid_mask_targets(gt_masks, gt_boxes, rois, grid_points, side, sample_num):
    """Binary side x side targets of each RoI (mean of sample_num^2 samples per cell, >= 0.5).

    Args:
        gt_masks: (R, S, S); gt_boxes: (R, 4); rois: (R, 4).
        grid_points: (side * sample_num) ** 2 x 2 box-normalised sample points, from
            ``regular_grid_points(side * sample_num)`` (row-major, so it reshapes to cells x samples).
    Returns:
        (R, side, side) float32 in {0, 1}.
    """
    r = rois.shape[0]
    values = gt_mask_at_points(gt_masks, gt_boxes, box_points_to_image(rois, grid_points))
    values = values.reshape(r, side, sample_num, side, sample_num).mean(axis=(2, 4))
    return ops.stop_gradient((values >= 0.5).astype(ms.float32))
