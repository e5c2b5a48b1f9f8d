"""Bilinear sampling at points: ``point_sample`` on (N, C, H, W) maps, one level of the flat
feature table at image points, and the point grids both use.

Point coordinates are (x, y). "Box-normalised" points lie in [0, 1]^2 inside a box; image points
are in input-canvas pixels (continuous: pixel j covers [j, j + 1)). Both samplers follow
``grid_sample`` with align_corners=False and zero padding, as detectron2's ``point_sample``.
"""
import numpy as np

import mindspore as ms
from mindspore import nn, ops

from src.layers.feature_table import bilinear_gather
from src.layers.tensor_utils import permute


def point_sample(features, points, low_memory=True):
    """Bilinear sampling at normalised points, as ``grid_sample`` with align_corners=False and zero
    padding (detectron2's ``point_sample``).

    Written with ``gather`` on a flat (N * H * W, C) table: MindSpore's CPU grid_sample gradient
    kernel fails on these shapes, and gather is faster.

    Args:
        features: (N, C, H, W). points: (N, P, 2) in [0, 1]^2 (points outside read zeros).
        low_memory: how the output is laid out channels first (see ``tensor_utils.permute``).
    Returns:
        (N, C, P).
    """
    n, c, h, w = features.shape
    table = permute(features, (0, 2, 3, 1)).reshape(n * h * w, c)
    base = ms.Tensor(np.arange(n, dtype=np.int32).reshape(n, 1) * (h * w))
    size_h = ops.ones_like(base) * h
    size_w = ops.ones_like(base) * w
    out = bilinear_gather(table, base, size_h, size_w, points[..., 0] * w - 0.5, points[..., 1] * h - 0.5, False)
    return permute(out, (0, 2, 1), low_memory)


def regular_grid_points(side):
    """Cell centres of a side x side grid in [0, 1]^2, row-major: numpy (side * side, 2)."""
    c = (np.arange(side, dtype=np.float32) + 0.5) / side
    xs, ys = np.meshgrid(c, c)
    return np.stack([xs.reshape(-1), ys.reshape(-1)], 1)


def patch_grid_points(side, patch):
    """``regular_grid_points(side)`` grouped by patch: numpy (side * side, 2) in the order
    (patch row, patch column, row in the patch, column in the patch), so that features sampled at
    them reshape to (side / patch, side / patch, patch, patch, C) without a transpose.

    Args:
        side: grid side, a multiple of ``patch``.
    """
    cells = side // patch
    grid = regular_grid_points(side).reshape(cells, patch, cells, patch, 2)
    return np.ascontiguousarray(grid.transpose(0, 2, 1, 3, 4)).reshape(side * side, 2)


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


class LevelPointSampler(nn.Cell):
    """``grid_sample``-style sampling (align_corners=False, zero padding) of one FPN level at
    points given in image pixels, as detectron2's ``point_sample_fine_grained_features``.

    Args:
        layout: the ``LevelLayout`` of the flat table; level: which level; stride: its stride.
    """

    def __init__(self, layout, level, stride):
        super().__init__()
        self.start = layout.starts[level]
        self.height = layout.heights[level]
        self.width = layout.widths[level]
        self.inv_stride = 1.0 / stride

    def construct(self, table, batch_index, points):
        """Sample features at points.

        Args:
            table: (T, C) flat features.
            batch_index: (K,) int32 image of each RoI.
            points: (K, P, 2) (x, y) in image pixels.
        Returns:
            (K, P, C), channels last.
        """
        base = (self.start + batch_index * (self.height * self.width)).reshape(-1, 1)
        px = points[..., 0] * self.inv_stride - 0.5
        py = points[..., 1] * self.inv_stride - 0.5
        h = ops.ones_like(base) * self.height
        w = ops.ones_like(base) * self.width
        return bilinear_gather(table, base, h, w, px, py, False)
