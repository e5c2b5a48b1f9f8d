#!/usr/bin/env python3
"""Peak memory and time of detectron2's own PointRend R50-FPN train step on CPU, the other side of
``python -m bench.bench_network --case train`` (issue 16's side-by-side comparison).

A developer tool like ``make_detectron2_reference.py``: it runs ONLY in the separate torch +
detectron2 environment described there, is never imported by the project and does not import
mindspore.

The model: detectron2's ``pointrend_rcnn_R_50_FPN_1x_coco`` config with random weights, its
FrozenBatchNorms given the statistics of their inputs on the batch (so that activations stay in
range, as the reference tool does). The batch: ``--batch`` noise images of ``--height`` x
``--width`` with three objects each (rectangles and ellipses, bitmask ground truth), like
bench_network's synthetic batch. The step: losses, backward, SGD with momentum 0.9 and weight decay
1e-4, as bench_network's train step. Prints one JSON line: the timed steps, their median and this
process's peak RSS in GB (GiB, as bench_network).

Usage (in the detectron2 venv):
    python tools/detectron2_train_memory.py --detectron2 /path/to/detectron2 --height 256 --width 256 --batch 2
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

import numpy as np

from make_detectron2_reference import COMMON_CHANGES, CONFIG_REL, calibrate_frozen_batch_norms, setup_detectron2


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--detectron2", required=True, help="path of a detectron2 source checkout")
    p.add_argument("--height", type=int, default=768)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--objects", type=int, default=3, help="ground-truth objects per image")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--repeats", type=int, default=3, help="timed steps")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    for key in ("height", "width", "batch", "repeats", "threads"):
        if getattr(args, key) < 1:
            p.error(f"--{key} must be at least 1, got {getattr(args, key)}")
    if args.height % 32 or args.width % 32:  # detectron2 pads to 32; bench_network's sizes are multiples
        p.error(f"--height and --width must be multiples of 32, got {args.height}x{args.width}")
    return args


def synthetic_inputs(batch, height, width, objects, seed):
    """detectron2's training inputs: [{"image": float (3, H, W) BGR in 0..255, "instances"}] * batch."""
    import torch
    from detectron2.structures import BitMasks, Boxes, Instances

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    inputs = []
    for _ in range(batch):
        image = rng.normal(110.0, 20.0, (3, height, width))
        boxes, classes, masks = [], [], []
        for j in range(objects):
            bw, bh = int(rng.integers(width // 5, width // 2)), int(rng.integers(height // 5, height // 2))
            x1, y1 = int(rng.integers(0, width - bw)), int(rng.integers(0, height - bh))
            if j % 2:
                mask = ((xx - x1 - bw / 2) / (bw / 2)) ** 2 + ((yy - y1 - bh / 2) / (bh / 2)) ** 2 <= 1
            else:
                mask = (xx >= x1) & (xx < x1 + bw) & (yy >= y1) & (yy < y1 + bh)
            ys, xs = np.nonzero(mask)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            classes.append(int(rng.integers(0, 80)))
            masks.append(mask)
            image[:, mask] += rng.uniform(-60.0, 60.0, (3, 1))
        instances = Instances((height, width))
        instances.gt_boxes = Boxes(torch.tensor(np.array(boxes, np.float32)))
        instances.gt_classes = torch.tensor(classes, dtype=torch.int64)
        instances.gt_masks = BitMasks(torch.from_numpy(np.stack(masks)))
        inputs.append({"image": torch.as_tensor(np.clip(image, 0, 255).astype(np.float32)),
                       "instances": instances})
    return inputs


def main():
    args = parse_args()
    path = setup_detectron2(args.detectron2)
    import torch
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage
    from point_rend import add_pointrend_config

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = get_cfg()
    add_pointrend_config(cfg)
    cfg.merge_from_file(os.path.join(path, CONFIG_REL))
    cfg.merge_from_list([item for change in COMMON_CHANGES for item in change])
    cfg.freeze()
    model = build_model(cfg)
    inputs = synthetic_inputs(args.batch, args.height, args.width, args.objects, args.seed)
    calibrate_frozen_batch_norms(model, inputs, args.seed)
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.001, momentum=0.9,
                                weight_decay=1e-4)
    times, first_losses = [], None
    for step in range(args.warmup + args.repeats):
        start = time.perf_counter()
        with EventStorage(step):  # the heads log training statistics into one
            losses = model(inputs)
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        if first_losses is None:
            first_losses = {k: round(v.item(), 4) for k, v in losses.items()}
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
        print(f"step {step + 1}/{args.warmup + args.repeats}: {time.perf_counter() - start:.2f} s, "
              f"loss {float(total):.4f}", file=sys.stderr, flush=True)
    print(json.dumps({"case": "detectron2 train", "size": f"{args.height}x{args.width}", "batch": args.batch,
                      "threads": args.threads, "warmup_calls": args.warmup, "repeats": args.repeats,
                      "times_s": [round(t, 3) for t in times], "median_s": round(statistics.median(times), 3),
                      "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2),
                      "first_losses": first_losses}))


if __name__ == "__main__":
    main()
