"""RoIAlign over the flat multi-level feature table: each RoI pooled from its own FPN level."""
import numpy as np

import mindspore as ms
from mindspore import nn, ops

from src.layers.feature_table import LevelLayout, bilinear_corners, weighted_gather


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


def rois_with_index(batch_index, boxes):
    """(K,) int32 image indices and (K, 4) boxes -> (K, 5) RoIs as ``MultiLevelRoIAlign`` takes them."""
    return ops.concat([ops.cast(batch_index, ms.float32).reshape(-1, 1), boxes], 1)
