"""Paste per-box mask grids into full images with bilinear resampling.

The network predicts each instance mask as an ``M x M`` grid inside its box: cell ``(i, j)``
covers the box-normalised square ``[j/M, (j+1)/M) x [i/M, (i+1)/M)`` (a non-square ``Mh x Mw``
grid works the same way per axis). An image pixel ``(y, x)`` is
the point ``(x + 0.5, y + 0.5)``; it reads the grid at the continuous grid index

    u = (x + 0.5 - x1) / (x2 - x1) * M - 0.5,   v = (y + 0.5 - y1) / (y2 - y1) * M - 0.5

with bilinear interpolation and zeros outside the grid. This is ``grid_sample`` with
``align_corners=False`` and zero padding, i.e. what detectron2 does when it pastes masks.

Bilinear sampling at the pixel centres of a rectangular window is separable: the rows of the grid
are interpolated first (one gather and blend over y), then the columns (over x). Each detection
therefore costs O(window area) and only touches the pixels its box can reach, so 100 detections on
a 1280 x 1280 image need the uint8 output (164 MB) plus one window of float32 temporaries.
"""
import math

import numpy as np


def _axis_taps(start, stop, lo, hi, cells):
    """Bilinear taps along one axis for the pixel centres ``start .. stop - 1``.

    Args:
        start, stop: pixel index range (stop exclusive).
        lo, hi: box extent on this axis (hi > lo).
        cells: number of grid cells along this axis.
    Returns:
        idx0, idx1: (n,) int64 indices into the grid padded by one zero cell on each side;
        w1: (n,) float32 weight of ``idx1`` (``idx0`` gets ``1 - w1``).
    """
    centres = np.arange(start, stop, dtype=np.float64) + 0.5
    pos = (centres - lo) / (hi - lo) * cells - 0.5
    base = np.floor(pos)
    w1 = (pos - base).astype(np.float32)
    # +1 shifts into the padded grid; clipping sends every tap outside the grid to a zero cell.
    idx0 = np.clip(base.astype(np.int64) + 1, 0, cells + 1)
    idx1 = np.clip(base.astype(np.int64) + 2, 0, cells + 1)
    return idx0, idx1, w1


def _window(lo, hi, cells, size):
    """Pixel range ``[start, stop)`` outside of which the box's samples are exactly zero.

    A pixel reads a non-zero value only if its grid index lies in (-1, M), i.e. its centre lies
    within half a cell of the box; one extra pixel on each side keeps the bound conservative
    against rounding. The range is clipped to ``[0, size)``.
    """
    half_cell = 0.5 * (hi - lo) / cells
    start = max(int(math.floor(lo - half_cell)) - 1, 0)
    stop = min(int(math.ceil(hi + half_cell)) + 1, size)
    return start, stop


def paste_masks(masks, boxes, image_hw, threshold=0.5):
    """Resample each box's mask grid into an image of the original size.

    Args:
        masks: (D, Mh, Mw) float mask probabilities inside each box (grid as described above;
            Mh = Mw = M for the network's heads).
        boxes: (D, 4) float boxes (x1, y1, x2, y2) in the pixels of the target image, continuous
            coordinates; boxes may cross or lie outside the image border.
        image_hw: (H, W) size of the target image.
        threshold: pixels with probability >= threshold are foreground; None returns the
            probabilities.
    Returns:
        (D, H, W) uint8 in {0, 1} when ``threshold`` is set, else (D, H, W) float32. Boxes with
        non-positive width or height, non-finite coordinates, or no pixel within reach give an
        all-zero mask.
    """
    masks = np.asarray(masks, dtype=np.float32)
    boxes = np.asarray(boxes, dtype=np.float64)
    if masks.ndim != 3:
        raise ValueError(f"paste_masks: masks must have shape (D, Mh, Mw), got {masks.shape}")
    if boxes.shape != (masks.shape[0], 4):
        raise ValueError(f"paste_masks: boxes must have shape ({masks.shape[0]}, 4), got {boxes.shape}")
    height, width = int(image_hw[0]), int(image_hw[1])
    cells_y, cells_x = masks.shape[1], masks.shape[2]
    out = np.zeros((masks.shape[0], height, width), np.float32 if threshold is None else np.uint8)
    for d, (x1, y1, x2, y2) in enumerate(boxes):
        if not (np.all(np.isfinite(boxes[d])) and x2 > x1 and y2 > y1):
            continue
        ys, ye = _window(y1, y2, cells_y, height)
        xs, xe = _window(x1, x2, cells_x, width)
        if ys >= ye or xs >= xe:
            continue
        grid = np.pad(masks[d], 1)
        r0, r1, wr = _axis_taps(ys, ye, y1, y2, cells_y)
        rows = grid[r0] * (1.0 - wr)[:, None] + grid[r1] * wr[:, None]
        c0, c1, wc = _axis_taps(xs, xe, x1, x2, cells_x)
        window = rows[:, c0] * (1.0 - wc) + rows[:, c1] * wc
        out[d, ys:ye, xs:xe] = window if threshold is None else window >= threshold
    return out
