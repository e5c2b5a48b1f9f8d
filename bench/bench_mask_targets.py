"""How far the point labels from S x S GT crops are from the full-resolution mask (gt_mask_size).

    python -m bench.bench_mask_targets [--sizes 28 56 112 224] [--sides 32 64 128 256 512 800]

The network gets each GT mask as an S x S crop of its box (``dataset.transforms.mask_crops``:
bilinear samples of the full mask at the crop's cell centres) and reads point labels by bilinear
sampling of that crop (``maskrcnn.mask_targets.gt_mask_at_points``). detectron2 samples the
full-resolution bitmask itself. This measures the difference for objects whose box side is 32..800
pixels: a chair-like shape (seat, back, four legs of width side / 40, at least 2 px: the thin parts
that suffer first) and an ellipse, at uniformly drawn points of the box and at points within 2 px of
the boundary (where PointRend puts most of its training points). Reported per (S, side): mean
absolute label error and the share of labels on the other side of 0.5, both against the bilinear
sample of the full mask at the same point. Memory of the crops per step:
batch x max_instance_count x S^2 x 4 bytes.
"""
import argparse
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
    """Full-resolution labels, from the definition (detectron2's point_sample of the bitmask with
    align_corners=False): pixel (i, j) holds its value at (j + 0.5, i + 0.5), zero outside."""
    padded = np.pad(mask.astype(np.float64), 1)
    px, py = xs - 0.5 + 1, ys - 0.5 + 1  # +1: the padding
    x0, y0 = np.floor(px).astype(int), np.floor(py).astype(int)
    fx, fy = px - x0, py - y0
    return ((1 - fy) * ((1 - fx) * padded[y0, x0] + fx * padded[y0, x0 + 1])
            + fy * ((1 - fx) * padded[y0 + 1, x0] + fx * padded[y0 + 1, x0 + 1]))


def crop_labels(mask, box, size, xs, ys):
    """The network's labels: S x S crop of the box, then gt_mask_at_points at the points."""
    import mindspore as ms
    from pycocotools import mask as mask_utils
    from src.dataset.transforms import Geometry, mask_crops
    from src.maskrcnn.mask_targets import gt_mask_at_points
    crop = mask_crops([mask_utils.encode(np.asfortranarray(mask))], np.array([box], np.float32),
                      Geometry(1.0, 1.0), size)[0]
    points = np.stack([xs, ys], 1)[None].astype(np.float32)
    out = gt_mask_at_points(ms.Tensor(crop[None]), ms.Tensor(np.array([box], np.float32)), ms.Tensor(points))
    return out.asnumpy()[0]


def measure(shape, side, size, rng, n=4000):
    """(mean |error|, flip share) at uniform points and at boundary points."""
    import cv2
    mask = shape(side)
    box = (8.0, 8.0, 8.0 + side, 8.0 + side)
    xs, ys = rng.uniform(box[0], box[2], n), rng.uniform(box[1], box[3], n)
    inside = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
    outside = cv2.distanceTransform(1 - mask, cv2.DIST_L2, 3)
    # distance of each pixel to the other side (one of the two transforms is zero at every pixel)
    near = (inside + outside)[ys.astype(int), xs.astype(int)] <= 2
    full = bilinear(mask, xs, ys)
    approx = crop_labels(mask, box, size, xs, ys)
    err = np.abs(full - approx)
    flip = (full >= 0.5) != (approx >= 0.5)
    return err.mean(), flip.mean(), err[near].mean(), flip[near].mean()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[28, 56, 112, 224])
    parser.add_argument("--sides", type=int, nargs="+", default=[32, 64, 128, 256, 512, 800])
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    from src.utils.runtime import cap_onednn_isa
    cap_onednn_isa()
    import mindspore as ms
    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_device("CPU")
    print("label error of S x S GT crops against the full-resolution mask (bilinear, pixel centres at +0.5); "
          "mean |error| / share of labels flipped across 0.5; uniform points of the box | points within 2 px "
          "of the boundary")
    for shape in (chair, ellipse):
        print(f"\n{shape.__name__}")
        print("S \\ box side " + "".join(f"{s:>24d}" for s in args.sides))
        for size in args.sizes:
            rng = np.random.default_rng(0)
            cells = []
            for side in args.sides:
                err, flip, err_b, flip_b = measure(shape, side, size, rng)
                cells.append(f"{err:.3f}/{flip:.3f} | {err_b:.2f}/{flip_b:.2f}")
            print(f"{size:<13d}" + "".join(f"{c:>24s}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
