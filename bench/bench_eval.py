"""Evaluation post-processing throughput on this machine: detections -> COCO results.

    python -m bench.bench_eval [--images 40] [--detections 100] [--workers 0 1 2]

What eval.py does on the host for every image after the network: paste each detection's 224 x 224
mask probabilities into the original image, threshold and RLE-encode them (``CocoResultCollector``,
``eval_workers`` processes). The detections are synthetic: ``--detections`` per image with boxes
of 20-300 pixels on the 768 x 1280 canvas, each mask a soft ellipse, for 640 x 480 originals (the
usual COCO size). Prints images/s for each worker count; compare with the network's time per image
(``python -m bench.bench_network``) to see whether the host or the network limits an evaluation.
"""
import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from src.evaluation import CocoResultCollector  # noqa: E402

CANVAS = (768, 1280)
ORIGINAL = (480, 640)
SIDE = 224


def soft_ellipses(rng, count):
    """(count, SIDE, SIDE) float32 probabilities of ellipses filling most of their box."""
    c = (np.arange(SIDE, dtype=np.float32) + 0.5) / SIDE
    masks = []
    for _ in range(count):
        cx, cy = rng.uniform(0.4, 0.6, 2)
        rx, ry = rng.uniform(0.3, 0.5, 2)
        d = np.sqrt(((c[None, :] - cx) / rx) ** 2 + ((c[:, None] - cy) / ry) ** 2)
        masks.append(1.0 / (1.0 + np.exp((d - 1.0) * 12.0)))
    return np.stack(masks).astype(np.float32)


def synthetic_image(rng, detections, masks):
    scale = CANVAS[0] / ORIGINAL[0]
    h, w = ORIGINAL[0] * scale, ORIGINAL[1] * scale
    size = rng.uniform(20, 300, (detections, 2))
    x1 = rng.uniform(0, w - size[:, 0])
    y1 = rng.uniform(0, h - size[:, 1])
    det = {"boxes": np.stack([x1, y1, x1 + size[:, 0], y1 + size[:, 1]], 1).astype(np.float32),
           "scores": rng.uniform(0.05, 1, detections).astype(np.float32),
           "labels": rng.integers(1, 81, detections).astype(np.int32),
           "valid": np.ones(detections, bool),
           "masks": masks[rng.integers(0, len(masks), detections)]}
    return det, np.array([h, w, scale, scale], np.float32), np.array(ORIGINAL, np.float32)


def throughput(images, workers):
    """Images per second through a collector with ``workers`` processes (pool start-up included)."""
    start = time.perf_counter()
    collector = CocoResultCollector({k: k for k in range(1, 81)}, 0.5, workers=workers)
    for i, (det, meta, hw) in enumerate(images):
        collector.add(i + 1, det, meta, hw)
    collector.wait()
    return len(images) / (time.perf_counter() - start), len(collector.segm)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--detections", type=int, default=100)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    masks = soft_ellipses(rng, 50)
    images = [synthetic_image(rng, args.detections, masks) for _ in range(args.images)]
    print(f"evaluation post-processing: {args.images} images of {ORIGINAL[1]}x{ORIGINAL[0]}, "
          f"{args.detections} detections each, {SIDE}x{SIDE} masks, {os.cpu_count()} cores", flush=True)
    print("| eval_workers | images/s | s/image |")
    print("|---|---|---|")
    for workers in args.workers:
        rate, _ = throughput(images, workers)
        print(f"| {workers} | {rate:.2f} | {1.0 / rate:.3f} |", flush=True)


if __name__ == "__main__":
    main()
