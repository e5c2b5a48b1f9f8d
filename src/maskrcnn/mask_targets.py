"""Mask targets from the full-resolution GT bitmasks, as detectron2 computes them.

Each GT instance travels as its 0/1 mask on the whole H x W canvas, packed 8 pixels per byte
(``dataset.transforms.pack_bitmasks``): a (M, L) uint8 table of M instance masks, L = ceil(H W / 8).
Bits are read where they are needed: the four neighbours of every sample point are looked up by byte
and bit, so no unpacked mask is ever built on the device.

- point labels: ``point_sample`` of the bitmask (``grid_sample``, align_corners=False, zero
  outside), detectron2's ``sample_point_labels``;
- coarse (grid) targets: ``BitMasks.crop_and_resize``, an aligned RoIAlign of the bitmask (samples
  up to one pixel beyond the image clamped onto its border) thresholded at 0.5.
"""
import numpy as np

import mindspore as ms
from mindspore import ops

from src.layers.feature_table import bilinear_corners
from src.layers.roi_align import bin_samples

# BIT_VALUES[8 * byte + k] = bit k of byte, the first pixel in the highest bit (np.packbits order)
BIT_VALUES = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).reshape(-1).astype(np.float32)


def target_sampling(cfg):
    """(samples per cell side, adaptive) of the grid targets: RoIAlign's fixed ``roi_layer.sample_num``,
    or with sample_num 0 detectron2's adaptive count (ceil(cell side in pixels)), capped at
    ``mask_target_max_samples``."""
    if cfg.roi_layer.sample_num > 0:
        return cfg.roi_layer.sample_num, False
    return cfg.mask_target_max_samples, True


def bitmask_samples(gt_masks, instance, canvas_hw, px, py, roi_align_border=False, extent=None):
    """Bilinear samples of packed instance masks.

    Args:
        gt_masks: (M, L) uint8 packed canvas masks; instance: (R,) int32 row of each RoI's mask.
        canvas_hw: (H, W) of the canvas the masks were packed from.
        px, py: (R, ...) float32 positions in pixel index space (pixel j's centre at j).
        roi_align_border, extent: as ``feature_table.bilinear_corners``; extent (R, ...) float32 pairs.
    Returns:
        (R, ...) float32 in [0, 1].
    """
    h, w = canvas_hw
    lead = (px.shape[0],) + (1,) * (px.ndim - 1)
    height = ops.ones(lead, ms.int32) * h
    width = ops.ones(lead, ms.int32) * w
    pixels, weights = bilinear_corners(ops.zeros(lead, ms.int32), height, width, px, py, roi_align_border,
                                       extent)  # (R, ..., 4): pixel index inside the mask
    bytes_per_mask = gt_masks.shape[1]
    byte_index = instance.reshape(lead + (1,)) * bytes_per_mask + ops.floor_div(pixels, 8)
    packed = ops.gather(gt_masks.reshape(-1), byte_index.reshape(-1), 0)
    bit_index = ops.cast(packed, ms.int32) * 8 + ops.floor_mod(pixels.reshape(-1), 8)
    bits = ops.gather(ms.Tensor(BIT_VALUES), bit_index, 0).reshape(pixels.shape)
    return (bits * weights).sum(-1)


def gt_mask_at_points(gt_masks, instance, canvas_hw, points):
    """Soft GT mask values at image points (detectron2's point labels).

    Args:
        gt_masks: (M, L) packed masks; instance: (R,) int32; canvas_hw: (H, W).
        points: (R, P, 2) image pixels (continuous: pixel j covers [j, j + 1)).
    Returns:
        (R, P) values in [0, 1].
    """
    return bitmask_samples(gt_masks, instance, canvas_hw, points[..., 0] - 0.5, points[..., 1] - 0.5)


def roi_mask_targets(gt_masks, instance, canvas_hw, image_hw, rois, side, sample_num, adaptive):
    """Binary side x side targets of each RoI: the mean of each cell's RoIAlign samples of the mask
    (aligned: the RoI spans x1 - 0.5 .. x2 - 0.5 in pixel index space), >= 0.5.

    Args:
        gt_masks: (M, L) packed masks; instance: (R,) int32; canvas_hw: (H, W).
        image_hw: (R, 2) float32 (height, width) of each RoI's resized image: detectron2's bitmask
            ends there, and RoIAlign clamps samples onto that border.
        rois: (R, 4) image pixels; side: target side.
        sample_num, adaptive: as ``roi_align.bin_samples`` (detectron2: adaptive, uncapped).
    Returns:
        (R, side, side) float32 in {0, 1}, no gradient.
    """
    r = rois.shape[0]
    n = sample_num
    ys, share_y = bin_samples(rois[:, 1] - 0.5, rois[:, 3] - rois[:, 1], side, n, adaptive)  # (R, side, n)
    xs, share_x = bin_samples(rois[:, 0] - 0.5, rois[:, 2] - rois[:, 0], side, n, adaptive)
    grid = (r, side, n, side, n)
    py = ops.broadcast_to(ys.reshape(r, side, n, 1, 1), grid)
    px = ops.broadcast_to(xs.reshape(r, 1, 1, side, n), grid)
    extent = (ops.broadcast_to(image_hw[:, 0].reshape(r, 1, 1, 1, 1), grid),
              ops.broadcast_to(image_hw[:, 1].reshape(r, 1, 1, 1, 1), grid))
    values = bitmask_samples(gt_masks, instance, canvas_hw, px, py, True, extent)
    if adaptive:
        cells = (values * share_y.reshape(r, 1, n, 1, 1) * share_x.reshape(r, 1, 1, 1, n)).sum(axis=(2, 4))
    else:
        cells = values.mean(axis=(2, 4))
    return ops.stop_gradient((cells >= 0.5).astype(ms.float32))
