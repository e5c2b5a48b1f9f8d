"""The flat multi-level feature table and its bilinear look-ups.

All pyramid levels of all images are laid out as one table of shape (sum_l B * H_l * W_l, C), so
that RoIAlign (roi_align.py) and point sampling (point_sample.py) can read any level for any RoI
with one ``gather``. This is what lets every RoI be pooled from its own level only (the model-zoo
extractor pooled every RoI from all four levels and then picked one), and it is faster on CPU than
``grid_sample``. Where one look-up would build too large a tensor of neighbours (the box head's
RoIAlign in training), ``ChunkedWeightedGather`` reads it in chunks.

Coordinates are in the "pixel index" space of a level: pixel (i, j) of a map has its centre at
(x=j, y=i).
"""
import numpy as np

import mindspore as ms
from mindspore import nn, ops

from src.layers.tensor_utils import permute


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


def flatten_levels(features, low_memory=True):
    """Concatenate feature maps into the flat table.

    Args:
        features: tuple of (B, C, H_l, W_l). low_memory: how the maps are laid out as rows (see
            ``tensor_utils.permute``).
    Returns:
        (sum_l B * H_l * W_l, C); row of (level l, image b, y, x) = start_l + (b * H_l + y) * W_l + x.
    """
    channels = features[0].shape[1]
    rows = [permute(f, (0, 2, 3, 1), low_memory).reshape(-1, channels) for f in features]
    if len(rows) == 1:
        return rows[0]
    return ops.concat(rows, 0)


def bilinear_corners(base, height, width, px, py, roi_align_border, extent=None):
    """Table rows and weights of the four bilinear neighbours of each point (px, py).

    Args:
        base: int32 (...,), first row of the (level, image) block of each point.
        height, width: int32 (...,), size of that block's map.
        px, py: float32 (...,) coordinates in pixel index space.
        roi_align_border: False for ``grid_sample`` semantics (neighbours outside the map are
            zero); True for RoIAlign semantics (points up to one pixel outside are clamped onto
            the border, points further out give zero).
        extent: None, or (extent_h, extent_w) float32 (...,): the border RoIAlign clamps to, when
            the image's map ends before the block's (``size_divisibility``).
    Returns:
        rows (..., 4) int32 (always inside the table) and weights (..., 4) float32.
    """
    if extent is None:
        hf = ops.cast(height, ms.float32)
        wf = ops.cast(width, ms.float32)
    else:
        hf, wf = extent
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

    One gather and one batched (1 x J) @ (J x C) product: on CPU this is faster, forward and
    backward, than J separate gathers each scaled by a broadcast weight column.

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


def chunk_bounds(total, size):
    """(0, size, 2 size, ..., total): the bounds of consecutive chunks of at most ``size`` items."""
    return tuple(range(0, total, size)) + (total,)


class ChunkedWeightedGather(nn.Cell):
    """``weighted_gather`` over a chunk of points at a time, in the forward and the backward pass.

    The plain look-up gathers all (P, J, C) neighbours at once, and its gradient is a tensor of that
    size too, scattered into the table in one go. For the box head's RoIAlign in training (1024 RoIs x
    49 bins x 16 neighbours x 256 channels, float32) each is 784 MiB, the largest tensor of the
    step. Here a chunk's neighbours are gathered and combined before the next chunk's are gathered,
    and the backward pass adds a chunk's gradient into the table's before it builds the next one
    (``depend`` orders them), so that one chunk of that size is alive at a time. The price is one
    copy of the table's gradient per chunk after the first (``tensor_scatter_add`` writes a new
    tensor), which grows with the table.

    Args:
        chunk_mib: the most MiB of gathered float32 neighbours (points x J x C x 4 bytes) per chunk.
    """

    def __init__(self, chunk_mib):
        super().__init__()
        if chunk_mib <= 0:
            raise ValueError(f"gather chunk must be > 0 MiB, got {chunk_mib}")
        self.chunk_bytes = int(chunk_mib * 2 ** 20)

    def points_per_chunk(self, j, c):
        """Points per chunk for J neighbours of C channels (at least one)."""
        points = self.chunk_bytes // (j * c * 4)
        return points if points > 0 else 1

    def point_bounds(self, table, rows):
        """Chunk bounds over the points of a look-up of ``rows`` (..., J) in ``table`` (T, C), shared
        by the forward and the backward pass."""
        j = rows.shape[-1]
        return chunk_bounds(rows.size // j, self.points_per_chunk(j, table.shape[1]))

    def construct(self, table, rows, weights):
        """table (T, C); rows int32 (..., J); weights float32 (..., J), no gradient -> (..., C)."""
        j = rows.shape[-1]
        c = table.shape[1]
        rows2 = rows.reshape(-1, j)
        weights2 = weights.reshape(-1, j)
        bounds = self.point_bounds(table, rows)
        if len(bounds) <= 2:  # one chunk, or no points
            return weighted_gather(table, rows, weights)
        parts = []
        for i in range(len(bounds) - 1):
            source = table if i == 0 else ops.depend(table, parts[-1])
            parts.append(weighted_gather(source, rows2[bounds[i]:bounds[i + 1]], weights2[bounds[i]:bounds[i + 1]]))
        return ops.concat(parts, 0).reshape(rows.shape[:-1] + (c,))

    def bprop(self, table, rows, weights, out, dout):
        j = rows.shape[-1]
        c = table.shape[1]
        rows2 = rows.reshape(-1, j)
        weights2 = ops.cast(weights.reshape(-1, j, 1), dout.dtype)
        dout2 = dout.reshape(-1, 1, c)
        bounds = self.point_bounds(table, rows)
        grad = None
        for i in range(len(bounds) - 1):
            a, b = bounds[i], bounds[i + 1]
            d = dout2[a:b] if grad is None else ops.depend(dout2[a:b], grad)
            update = ops.bmm(weights2[a:b], d).reshape(-1, c)  # (points * J, C)
            index = rows2[a:b].reshape(-1)
            if grad is None:
                grad = ops.unsorted_segment_sum(update, index, table.shape[0])
            else:
                grad = ops.tensor_scatter_add(grad, index.reshape(-1, 1), update)
        if grad is None:  # no points
            grad = ops.zeros_like(table)
        return ops.cast(grad, table.dtype), ops.zeros_like(rows), ops.zeros_like(weights)


def bilinear_gather(table, base, height, width, px, py, roi_align_border):
    """Bilinear interpolation of the table at (px, py) (arguments as ``bilinear_corners``).

    Args:
        table: (T, C) flat features.
    Returns:
        (..., C) sampled features.
    """
    rows, weights = bilinear_corners(base, height, width, px, py, roi_align_border)
    return weighted_gather(table, rows, weights)
