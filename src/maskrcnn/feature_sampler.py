"""Bilinear look-ups in FPN feature maps through one flat (rows, C) table.

All pyramid levels of all images are laid out as one table of shape (sum_l B * H_l * W_l, C), so
that RoIAlign and PointRend's point sampling can read any level for any RoI with four ``gather``
calls. This is what lets every RoI be pooled from its own level only (the model-zoo extractor pooled
every RoI from all four levels and then picked one), and it is faster on CPU than ``grid_sample``.

Coordinates are in the "pixel index" space of a level: pixel (i, j) of a map has its centre at
(x=j, y=i).
"""
import numpy as np

import mindspore as ms
from mindspore import nn, ops


class LevelLayout:
    """Where each (level, image) block lives in the flat feature table.

    Args:
        feature_shapes: [(H_l, W_l)] of the levels that are flattened, finest first.
        batch_size: images per batch.
    """

    def __init__(self, feature_shapes, batch_size):
        self.heights = [int(h) for h, _ in feature_shapes]
        self.widths = [int(w) for _, w in feature_shapes]
        starts, total = [], 0
        for h, w in zip(self.heights, self.widths):
            starts.append(total)
            total += batch_size * h * w
        self.starts = starts
        self.num_rows = total
        self.batch_size = batch_size

    def tensors(self):
        """(starts, heights, widths) as int32 tensors of shape (L,)."""
        return (ms.Tensor(np.array(self.starts, np.int32)), ms.Tensor(np.array(self.heights, np.int32)),
                ms.Tensor(np.array(self.widths, np.int32)))


def flatten_levels(features):
    """Concatenate feature maps into the flat table.

    Args:
        features: tuple of (B, C, H_l, W_l).
    Returns:
        (sum_l B * H_l * W_l, C); row of (level l, image b, y, x) = start_l + (b * H_l + y) * W_l + x.
    """
    channels = features[0].shape[1]
    rows = [ops.transpose(f, (0, 2, 3, 1)).reshape(-1, channels) for f in features]
    if len(rows) == 1:
        return rows[0]
    return ops.concat(rows, 0)


def bilinear_corners(base, height, width, px, py, roi_align_border):
    """Table rows and weights of the four bilinear neighbours of each point (px, py).

    Args:
        base: int32 (...,), first row of the (level, image) block of each point.
        height, width: int32 (...,), size of that block's map.
        px, py: float32 (...,) coordinates in pixel index space.
        roi_align_border: False for ``grid_sample`` semantics (neighbours outside the map are
            zero); True for RoIAlign semantics (points up to one pixel outside are clamped onto
            the border, points further out give zero).
    Returns:
        rows (..., 4) int32 (always inside the table) and weights (..., 4) float32.
    """
    hf = ops.cast(height, ms.float32)
    wf = ops.cast(width, ms.float32)
    inside = ops.logical_and(ops.logical_and(py >= -1.0, py <= hf), ops.logical_and(px >= -1.0, px <= wf))
    if roi_align_border:
        py = ops.minimum(ops.relu(py), hf - 1.0)
        px = ops.minimum(ops.relu(px), wf - 1.0)
    y0f = ops.floor(py)
    x0f = ops.floor(px)
    ly = py - y0f
    lx = px - x0f
    y0 = ops.cast(y0f, ms.int32)
    x0 = ops.cast(x0f, ms.int32)
    y1 = y0 + 1
    x1 = x0 + 1
    if roi_align_border:
        # clamped points: whole sample is zero when it was more than one pixel outside
        valid_y0 = inside
        valid_y1 = inside
        valid_x0 = inside
        valid_x1 = inside
    else:
        valid_y0 = ops.logical_and(y0 >= 0, y0 < height)
        valid_y1 = ops.logical_and(y1 >= 0, y1 < height)
        valid_x0 = ops.logical_and(x0 >= 0, x0 < width)
        valid_x1 = ops.logical_and(x1 >= 0, x1 < width)
    wy0 = (1.0 - ly) * ops.cast(valid_y0, ms.float32)
    wy1 = ly * ops.cast(valid_y1, ms.float32)
    wx0 = (1.0 - lx) * ops.cast(valid_x0, ms.float32)
    wx1 = lx * ops.cast(valid_x1, ms.float32)
    y0 = ops.minimum(ops.relu(y0), height - 1)
    y1 = ops.minimum(ops.relu(y1), height - 1)
    x0 = ops.minimum(ops.relu(x0), width - 1)
    x1 = ops.minimum(ops.relu(x1), width - 1)
    rows, weights = [], []
    for yi, wy in ((y0, wy0), (y1, wy1)):
        for xi, wx in ((x0, wx0), (x1, wx1)):
            rows.append(base + yi * width + xi)
            weights.append(wy * wx)
    return ops.stack(rows, -1), ops.stack(weights, -1)


def weighted_gather(table, rows, weights):
    """Weighted sums of table rows: out[p] = sum_j weights[p, j] * table[rows[p, j]].

    One gather and one batched (1 x J) @ (J x C) product: on CPU this was about twice as fast,
    forward and backward, as J separate gathers each scaled by a broadcast weight column.

    Args:
        table: (T, C); rows: int32 (..., J); weights: float32 (..., J), no gradient.
    Returns:
        (..., C).
    """
    j = rows.shape[-1]
    c = table.shape[1]
    picked = ops.gather(table, rows.reshape(-1), 0).reshape(-1, j, c)
    weights = ops.stop_gradient(weights).reshape(-1, 1, j)
    return ops.bmm(weights, picked).reshape(rows.shape[:-1] + (c,))


def bilinear_gather(table, base, height, width, px, py, roi_align_border):
    """Bilinear interpolation of the table at (px, py) (arguments as ``bilinear_corners``).

    Args:
        table: (T, C) flat features.
    Returns:
        (..., C) sampled features.
    """
    rows, weights = bilinear_corners(base, height, width, px, py, roi_align_border)
    return weighted_gather(table, rows, weights)


def map_rois_to_levels(rois, finest_scale, num_levels):
    """FPN level of each RoI (mmdetection rule: floor(log2(sqrt(area) / finest_scale)), clamped).

    Args:
        rois: (K, 4) boxes in image pixels.
    Returns:
        (K,) int32 level indices in [0, num_levels - 1].
    """
    scale = ops.sqrt((rois[:, 2] - rois[:, 0] + 1.0) * (rois[:, 3] - rois[:, 1] + 1.0))
    level = ops.floor(ops.log(scale / finest_scale + 1e-6) / np.log(2.0))
    return ops.cast(ops.clamp(level, 0.0, num_levels - 1.0), ms.int32)


class MultiLevelRoIAlign(nn.Cell):
    """RoIAlign that pools each RoI from its own FPN level only.

    Same sampling as MindSpore's ``ROIAlign`` (roi_end_mode 1, i.e. the RoI end is x2 + 1) with a
    fixed ``sample_num`` x ``sample_num`` grid per bin.

    Args:
        feature_shapes: [(H_l, W_l)] of the pooled levels; strides: their strides.
        batch_size: images per batch; out_size: output side; sample_num: samples per bin side.
        finest_scale: RoI side that maps to level 0 (56 in the model zoo).
    """

    def __init__(self, feature_shapes, strides, batch_size, out_size, sample_num, finest_scale):
        super().__init__()
        if sample_num <= 0:
            raise ValueError(f"roi_layer.sample_num must be > 0, got {sample_num}")
        self.layout = LevelLayout(feature_shapes, batch_size)
        self.starts, self.heights, self.widths = self.layout.tensors()
        self.scales = ms.Tensor(np.array([1.0 / s for s in strides], np.float32))
        self.num_levels = len(strides)
        self.out_size = out_size
        self.sample_num = sample_num
        self.finest_scale = float(finest_scale)
        # Offsets of the sample points inside a RoI, in units of the RoI side: sample position s of
        # every bin in row s, (sample_num, out_size)
        steps = (np.arange(out_size)[None, :] + (np.arange(sample_num)[:, None] + 0.5) / sample_num) / out_size
        self.offsets = ms.Tensor(steps.astype(np.float32))

    def construct(self, table, rois):
        """Pool RoI features.

        Args:
            table: (T, C) flat features of the pooled levels (``flatten_levels``).
            rois: (K, 5) = (image index, x1, y1, x2, y2) in image pixels.
        Returns:
            (K, C, out_size, out_size).
        """
        rois = ops.stop_gradient(rois)
        boxes = rois[:, 1:5]
        level = map_rois_to_levels(boxes, self.finest_scale, self.num_levels)
        batch_index = ops.cast(rois[:, 0], ms.int32)
        scale = ops.gather(self.scales, level, 0)
        height = ops.gather(self.heights, level, 0)
        width = ops.gather(self.widths, level, 0)
        base = ops.gather(self.starts, level, 0) + batch_index * height * width
        x1 = boxes[:, 0] * scale
        y1 = boxes[:, 1] * scale
        roi_w = ops.maximum((boxes[:, 2] + 1.0) * scale - x1, 1.0)
        roi_h = ops.maximum((boxes[:, 3] + 1.0) * scale - y1, 1.0)
        k = rois.shape[0]
        out = self.out_size
        per_roi = (k, 1, 1)
        base, height, width = base.reshape(per_roi), height.reshape(per_roi), width.reshape(per_roi)
        # All sample positions of a bin go into one weighted gather (4 neighbours each): averaging
        # a (K, out, S, out, S, C) tensor over its strided axes cost as much on CPU as the look-ups.
        share = 1.0 / (self.sample_num * self.sample_num)
        grid_y, grid_x = [], []  # per sample position: (K, out, out) coordinates of every bin
        for s in range(self.sample_num):
            ys = ops.expand_dims(y1, 1) + ops.expand_dims(roi_h, 1) * self.offsets[s]  # (K, out)
            xs = ops.expand_dims(x1, 1) + ops.expand_dims(roi_w, 1) * self.offsets[s]
            grid_y.append(ops.broadcast_to(ops.expand_dims(ys, 2), (k, out, out)))
            grid_x.append(ops.broadcast_to(ops.expand_dims(xs, 1), (k, out, out)))
        rows, weights = [], []
        for py in grid_y:
            for px in grid_x:
                r, w = bilinear_corners(base, height, width, px, py, True)  # (K, out, out, 4)
                rows.append(r)
                weights.append(w * share)
        feats = weighted_gather(table, ops.concat(rows, -1), ops.concat(weights, -1))  # (K, out, out, C)
        return ops.transpose(feats, (0, 3, 1, 2))


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
