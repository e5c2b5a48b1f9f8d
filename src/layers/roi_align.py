"""RoIAlign over the flat multi-level feature table: each RoI pooled from its own FPN level."""
import numpy as np

import mindspore as ms
from mindspore import nn, ops

from src.layers.feature_table import ChunkedWeightedGather, LevelLayout, bilinear_corners, weighted_gather


def map_rois_to_levels(rois, finest_scale, num_levels, box_offset=1.0):
    """FPN level of each RoI: floor(log2(sqrt(area) / finest_scale)), clamped.

    With finest_scale 56 this is detectron2's ``assign_boxes_to_levels`` (canonical box 224 at
    level 4, finest level 2); the model zoo (mmdetection) measures sides as x2 - x1 + 1
    (``box_offset`` 1), detectron2 as x2 - x1 (0).

    Args:
        rois: (K, 4) boxes in image pixels.
    Returns:
        (K,) int32 level indices in [0, num_levels - 1].
    """
    scale = ops.sqrt((rois[:, 2] - rois[:, 0] + box_offset) * (rois[:, 3] - rois[:, 1] + box_offset))
    level = ops.floor(ops.log(scale / finest_scale + 1e-6) / np.log(2.0))
    return ops.cast(ops.clamp(level, 0.0, num_levels - 1.0), ms.int32)


def bin_samples(start, length, out_size, sample_num, adaptive):
    """RoIAlign's sample positions along one axis of each RoI: out_size bins of length / out_size,
    sample s of a bin with n samples at (s + 0.5) / n of it.

    Args:
        start, length: (K,) RoI start and length in pixel index space of the sampled map.
        sample_num: samples per bin (fixed), or at most that many (adaptive).
        adaptive: detectron2's ``sampling_ratio`` 0: n = ceil(bin length) per RoI, capped at
            ``sample_num``; unused slots get share 0, and a RoI of zero length has no samples.
    Returns:
        coords (K, out_size, sample_num) and each sample's weight in the mean of its bin: a number
        (1 / sample_num) on a fixed grid, (K, sample_num) per RoI on an adaptive one.
    """
    bin_len = (length / out_size).reshape(-1, 1, 1)
    bins = ms.Tensor(np.arange(out_size, dtype=np.float32).reshape(1, out_size, 1))
    steps = ms.Tensor(np.arange(sample_num, dtype=np.float32).reshape(1, 1, sample_num) + 0.5)
    if not adaptive:
        coords = start.reshape(-1, 1, 1) + bin_len * (bins + steps / sample_num)
        return coords, 1.0 / sample_num
    count = ops.clamp(ops.ceil(bin_len), 1.0, float(sample_num))  # (K, 1, 1)
    coords = start.reshape(-1, 1, 1) + bin_len * (bins + steps / count)
    used = ops.cast(steps < count, ms.float32) * ops.cast(bin_len > 0.0, ms.float32)
    return coords, (used / count).reshape(-1, sample_num)


class MultiLevelRoIAlign(nn.Cell):
    """RoIAlign that pools each RoI from its own FPN level only.

    Two conventions:
    - ``aligned=False`` (the model zoo): MindSpore's ``ROIAlign`` with roi_end_mode 1 (the RoI spans
      x1 .. x2 + 1 pixels, at least one feature cell), level sides measured with the +1;
    - ``aligned=True``: detectron2's ``ROIAlignV2`` (torchvision ``roi_align(aligned=True)``): the
      RoI spans x1 - 0.5 .. x2 - 0.5 feature-pixel centres, no +1, no minimum size, detectron2's
      level rule.
    ``sample_num`` > 0 samples a fixed sample_num x sample_num grid per bin. ``sample_num`` 0 is
    detectron2's adaptive sampling (``POOLER_SAMPLING_RATIO: 0``): ceil(bin side) samples per bin
    and axis, per RoI. Under fixed shapes every RoI gets a ``max_sample_num`` x ``max_sample_num``
    grid in which the samples beyond its own count have weight 0; RoIs that would need more than
    ``max_sample_num`` per axis (bins wider than that many feature cells) get ``max_sample_num``
    evenly spread samples instead, which is the only departure from detectron2.

    Args:
        feature_shapes: [(H_l, W_l)] of the pooled levels; strides: their strides.
        batch_size: images per batch; out_size: output side; sample_num: samples per bin side
            (0 = adaptive); finest_scale: RoI side that maps to level 0 (56 in the model zoo);
        aligned: see above; max_sample_num: the cap of adaptive sampling;
        gather_chunk_mib: > 0: the look-ups gather at most this many MiB of neighbours at a time,
            forward and backward (``ChunkedWeightedGather``); 0: all at once.
        channels_last: output (K, out_size, out_size, C) as the look-ups give it, instead of
            (K, C, out_size, out_size).
    """

    def __init__(self, feature_shapes, strides, batch_size, out_size, sample_num, finest_scale, aligned=False,
                 max_sample_num=4, gather_chunk_mib=0, channels_last=False):
        super().__init__()
        if sample_num < 0:
            raise ValueError(f"roi_layer.sample_num must be >= 0, got {sample_num}")
        if sample_num == 0 and max_sample_num < 1:
            raise ValueError(f"roi_layer.max_sample_num must be >= 1, got {max_sample_num}")
        self.layout = LevelLayout(feature_shapes, batch_size)
        self.starts, self.heights, self.widths = self.layout.tensors()
        self.scales = ms.Tensor(np.array([1.0 / s for s in strides], np.float32))
        self.num_levels = len(strides)
        self.out_size = out_size
        self.adaptive = sample_num == 0
        self.sample_num = max_sample_num if self.adaptive else sample_num
        self.finest_scale = float(finest_scale)
        self.aligned = aligned
        self.chunked_gather = ChunkedWeightedGather(gather_chunk_mib) if gather_chunk_mib > 0 else None
        self.channels_last = channels_last

    def look_up(self, table, rows, weights):
        """``weighted_gather``, in chunks when so configured."""
        if self.chunked_gather is None:
            return weighted_gather(table, rows, weights)
        return self.chunked_gather(table, rows, weights)

    def construct(self, table, rois, extents=None):
        """Pool RoI features.

        Args:
            table: (T, C) flat features of the pooled levels (``flatten_levels``).
            rois: (K, 5) = (image index, x1, y1, x2, y2) in image pixels.
            extents: None, or (B, 2) = (height, width) in pixels where each image's maps end
                (``size_divisibility``): samples are clamped to that border instead of the canvas's.
        Returns:
            (K, C, out_size, out_size), or (K, out_size, out_size, C) with ``channels_last``.
        """
        rois = ops.stop_gradient(rois)
        boxes = rois[:, 1:5]
        level = map_rois_to_levels(boxes, self.finest_scale, self.num_levels, 0.0 if self.aligned else 1.0)
        batch_index = ops.cast(rois[:, 0], ms.int32)
        scale = ops.gather(self.scales, level, 0)
        height = ops.gather(self.heights, level, 0)
        width = ops.gather(self.widths, level, 0)
        base = ops.gather(self.starts, level, 0) + batch_index * height * width
        if self.aligned:
            x1 = boxes[:, 0] * scale - 0.5
            y1 = boxes[:, 1] * scale - 0.5
            roi_w = (boxes[:, 2] - boxes[:, 0]) * scale
            roi_h = (boxes[:, 3] - boxes[:, 1]) * scale
        else:
            x1 = boxes[:, 0] * scale
            y1 = boxes[:, 1] * scale
            roi_w = ops.maximum((boxes[:, 2] + 1.0) * scale - x1, 1.0)
            roi_h = ops.maximum((boxes[:, 3] + 1.0) * scale - y1, 1.0)
        k = rois.shape[0]
        out = self.out_size
        per_roi = (k, 1, 1)
        base, height, width = base.reshape(per_roi), height.reshape(per_roi), width.reshape(per_roi)
        border = None
        if extents is not None:
            extent = ops.ceil(ops.gather(extents, batch_index, 0) * ops.expand_dims(scale, 1))  # (K, 2) cells
            shape = (k, out, out)
            border = (ops.broadcast_to(extent[:, 0].reshape(per_roi), shape),
                      ops.broadcast_to(extent[:, 1].reshape(per_roi), shape))
        grid_y, share_y = bin_samples(y1, roi_h, out, self.sample_num, self.adaptive)  # (K, out, S)
        grid_x, share_x = bin_samples(x1, roi_w, out, self.sample_num, self.adaptive)
        # With a fixed grid, all sample positions of a bin go into one weighted gather (4 neighbours
        # each): averaging a (K, out, S, out, S, C) tensor over its strided axes cost as much on CPU
        # as the look-ups. Adaptive grids are larger (up to max_sample_num^2 per bin), so their
        # positions are gathered one at a time and summed: the (K, out, out, 4 S^2, C) tensor of all
        # gathered neighbours is never built.
        feats = None
        rows, weights = [], []
        for sy in range(self.sample_num):
            py = ops.broadcast_to(ops.expand_dims(grid_y[:, :, sy], 2), (k, out, out))
            for sx in range(self.sample_num):
                px = ops.broadcast_to(ops.expand_dims(grid_x[:, :, sx], 1), (k, out, out))
                r, w = bilinear_corners(base, height, width, px, py, True, border)  # (K, out, out, 4)
                if self.adaptive:
                    w = w * (share_y[:, sy] * share_x[:, sx]).reshape(-1, 1, 1, 1)
                    part = self.look_up(table, r, w)  # (K, out, out, C)
                    feats = part if feats is None else feats + part
                else:
                    rows.append(r)
                    weights.append(w * (share_y * share_x))
        if not self.adaptive:
            feats = self.look_up(table, ops.concat(rows, -1), ops.concat(weights, -1))  # (K, out, out, C)
        if self.channels_last:
            return feats
        # not tensor_utils.permute: MindSpore 2.10 fails to compile a view of a custom-bprop cell's output
        return ops.transpose(feats, (0, 3, 1, 2))


def rois_with_index(batch_index, boxes):
    """(K,) int32 image indices and (K, 4) boxes -> (K, 5) RoIs as ``MultiLevelRoIAlign`` takes them."""
    return ops.concat([ops.cast(batch_index, ms.float32).reshape(-1, 1), boxes], 1)
