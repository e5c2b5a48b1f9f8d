"""Mask targets: how far the capped adaptive sampling of the coarse targets is from detectron2's, and
what the packed GT masks cost per step.

    python -m bench.bench_mask_targets [--caps 2 4 8 16 32] [--sides 32 64 128 256 512 800]

Point labels are exact (bilinear samples of the full-resolution bitmask, as detectron2). The 7 x 7
coarse targets are detectron2's ``BitMasks.crop_and_resize``: an aligned RoIAlign of the bitmask
with ceil(cell side) x ceil(cell side) samples per cell, thresholded at 0.5. Under fixed shapes the
network caps that count at ``mask_target_max_samples``; this measures, per cap and box side, the share
of target cells that differ from the uncapped definition (numpy below), for a chair-like shape
(seat, back, four legs of width side / 40, at least 2 px: the thin parts that suffer first) and an
ellipse, on RoIs jittered around the box like positive proposals. It also prints the bytes the
packed masks take per step.
"""
import argparse
import math
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def chair(side):
    """(side + 16)^2 uint8 mask of a chair in the box [8, 8 + side)^2."""
    size = side + 16
    m = np.zeros((size, size), np.uint8)
    o, leg = 8, max(2, int(round(side / 40)))
    m[o:o + side // 2, o:o + leg * 2] = 1                                  # back
    m[o + side // 2 - leg:o + side // 2 + leg, o:o + side] = 1             # seat
    for x in (o, o + side // 3, o + 2 * side // 3, o + side - leg):       # legs
        m[o + side // 2:o + side, x:x + leg] = 1
    return m


def ellipse(side):
    import cv2
    size = side + 16
    m = np.zeros((size, size), np.uint8)
    cv2.ellipse(m, (8 + side // 2, 8 + side // 2), (side // 2, side // 3), 20, 0, 360, 1, -1)
    return m


def bilinear(mask, xs, ys):
    """Point labels from the definition (detectron2's point_sample of the bitmask with
    align_corners=False): pixel (i, j) holds its value at (j + 0.5, i + 0.5), zero outside."""
    h, w = mask.shape
    px, py = np.asarray(xs, np.float64) - 0.5, np.asarray(ys, np.float64) - 0.5
    x0, y0 = np.floor(px).astype(np.int64), np.floor(py).astype(np.int64)
    fx, fy = px - x0, py - y0
    out = np.zeros(px.shape, np.float64)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            yi, xi = y0 + dy, x0 + dx
            inside = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
            out += np.where(inside, wy * wx * mask[np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)], 0.0)
    return out


def roi_align_sample(mask, ys, xs):
    """torchvision's roi_align bilinear_interpolate on a 2-D map at index-space positions: zero more
    than one pixel outside, clamped onto the border within it."""
    h, w = mask.shape
    ys, xs = np.asarray(ys, np.float64), np.asarray(xs, np.float64)
    outside = (ys < -1.0) | (ys > h) | (xs < -1.0) | (xs > w)
    ys, xs = np.maximum(ys, 0.0), np.maximum(xs, 0.0)
    y0, x0 = np.floor(ys).astype(np.int64), np.floor(xs).astype(np.int64)
    at_y, at_x = y0 >= h - 1, x0 >= w - 1
    y0, x0 = np.where(at_y, h - 1, y0), np.where(at_x, w - 1, x0)
    ys, xs = np.where(at_y, y0, ys), np.where(at_x, x0, xs)
    y1, x1 = np.where(at_y, y0, y0 + 1), np.where(at_x, x0, x0 + 1)
    ly, lx = ys - y0, xs - x0
    value = ((1 - ly) * (1 - lx) * mask[y0, x0] + (1 - ly) * lx * mask[y0, x1]
             + ly * (1 - lx) * mask[y1, x0] + ly * lx * mask[y1, x1])
    return np.where(outside, 0.0, value)


def roi_align_cells(mask, box, side, cap=None, samples=None):
    """Cell means of detectron2's ``BitMasks.crop_and_resize`` of one mask (its image is the mask's
    size): aligned RoIAlign, spatial scale 1, sampling ratio 0 (ceil(cell side) samples per cell and
    axis, at most ``cap`` if given), or ``samples`` per axis if given. Returns (side, side) float64."""
    x1, y1, x2, y2 = (float(v) for v in box)
    bin_h, bin_w = (y2 - y1) / side, (x2 - x1) / side
    n_h, n_w = math.ceil(bin_h), math.ceil(bin_w)
    if cap is not None:
        n_h, n_w = min(max(n_h, 1), cap), min(max(n_w, 1), cap)
    if samples is not None:
        n_h = n_w = samples
    if n_h == 0 or n_w == 0:
        return np.zeros((side, side))
    ys = y1 - 0.5 + (np.arange(side)[:, None] + (np.arange(n_h)[None, :] + 0.5) / n_h) * bin_h  # (side, n_h)
    xs = x1 - 0.5 + (np.arange(side)[:, None] + (np.arange(n_w)[None, :] + 0.5) / n_w) * bin_w
    samples = roi_align_sample(mask.astype(np.float64), ys.reshape(side, n_h, 1, 1), xs.reshape(1, 1, side, n_w))
    return samples.mean(axis=(1, 3))


def crop_and_resize(mask, box, side, cap=None, samples=None):
    """``roi_align_cells`` thresholded at 0.5, as detectron2: (side, side) float64 in {0, 1}."""
    return (roi_align_cells(mask, box, side, cap, samples) >= 0.5).astype(np.float64)


def network_targets(mask, rois, side, cap):
    """The network's coarse targets (``maskrcnn.mask_targets.roi_mask_targets``) of one mask."""
    import mindspore as ms
    from src.dataset.transforms import pack_bitmasks
    from src.maskrcnn.mask_targets import roi_mask_targets
    h, w = mask.shape
    k = len(rois)
    out = roi_mask_targets(ms.Tensor(pack_bitmasks(mask[None])), ms.Tensor(np.zeros(k, np.int32)), (h, w),
                           ms.Tensor(np.tile(np.array([[h, w]], np.float32), (k, 1))),
                           ms.Tensor(np.asarray(rois, np.float32)), side, cap, True)
    return out.asnumpy()


def jittered_rois(side, rng, n):
    """n RoIs around the box [8, 8 + side)^2: corners moved by up to 10% of the side."""
    box = np.array([8.0, 8.0, 8.0 + side, 8.0 + side])
    return box + rng.uniform(-0.1, 0.1, size=(n, 4)) * side


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--caps", type=int, nargs="+", default=[2, 4, 8, 16, 32])
    parser.add_argument("--sides", type=int, nargs="+", default=[32, 64, 128, 256, 512, 800])
    parser.add_argument("--rois", type=int, default=16, help="jittered RoIs per shape and side")
    parser.add_argument("--side", type=int, default=7, help="target side (7: PointRend's coarse head)")
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    from src.utils.runtime import cap_onednn_isa
    cap_onednn_isa()
    import mindspore as ms
    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_device("CPU")
    from src.dataset.transforms import packed_mask_bytes
    print(f"{args.side}x{args.side} coarse targets with at most CAP samples per cell side against detectron2's "
          f"crop_and_resize (uncapped): share of cells that differ, {args.rois} jittered RoIs per box")
    for shape in (chair, ellipse):
        print(f"\n{shape.__name__}")
        print("cap \\ box side" + "".join(f"{s:>9d}" for s in args.sides))
        for cap in args.caps:
            cells = []
            for side in args.sides:
                rng = np.random.default_rng(side)
                mask = shape(side)
                rois = jittered_rois(side, rng, args.rois)
                ours = network_targets(mask, rois, args.side, cap)
                ref = np.stack([crop_and_resize(mask, roi, args.side) for roi in rois])
                cells.append(f"{(ours != ref).mean():.4f}")
            print(f"{cap:<14d}" + "".join(f"{c:>9s}" for c in cells), flush=True)
    print("\npacked GT masks per step (max_instance_count x ceil(H W / 8) bytes per image):")
    for h, w, g, b in ((768, 1280, 128, 2), (768, 1280, 128, 4), (800, 1344, 128, 2), (192, 256, 16, 2)):
        print(f"  {h}x{w}, {g} instances, batch {b}: {b * g * packed_mask_bytes(h, w) / 2 ** 20:.1f} MiB")


if __name__ == "__main__":
    main()
