"""Data benchmark: MindRecord conversion speed and size, input pipeline throughput.

    .venv/bin/python bench/bench_data.py [--images 600] [--root DIR] [--batches 40]

1. Writes a toy COCO set of COCO-like 640x480 images (``src.demo.toy_data``; reused if --root has one).
2. Converts it with 1 and 2 worker processes: images/s (total and per worker) and
   MindRecord bytes (shards + index files) / JPEG bytes of the converted images.
3. Runs the training pipeline (768x1280 canvas, flip and expand as configured, G = 128, S = 112) and
   the evaluation pipeline with 2 workers: images/s after one warm-up batch.
Targets on a 2-core machine: conversion >= 100 images/s per worker, size <= 1.1x, pipeline >= 20 images/s.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from src.utils.runtime import cap_onednn_isa  # noqa: E402

cap_onednn_isa()

from src.demo import toy_data  # noqa: E402
from src.dataset import create_maskrcnn_dataset  # noqa: E402
from src.dataset.mindrecord_writer import convert_coco_to_mindrecord  # noqa: E402
from src.config import config_from_dict  # noqa: E402


def bench_conversion(cfg, workers):
    """(images/s, MindRecord bytes / image bytes, first shard path) of one conversion."""
    shutil.rmtree(cfg.mindrecord_dir, ignore_errors=True)
    start = time.perf_counter()
    meta = convert_coco_to_mindrecord(cfg, True, workers=workers)
    seconds = time.perf_counter() - start
    files = meta["files"] + meta["index_files"]
    record_bytes = sum(os.path.getsize(os.path.join(cfg.mindrecord_dir, f)) for f in files)
    return meta["num_images"] / seconds, record_bytes / meta["image_bytes"], os.path.join(cfg.mindrecord_dir,
                                                                                          meta["files"][0])


def bench_pipeline(cfg, path, is_training, batch_size, batches, workers):
    """Images/s of the pipeline, after one warm-up batch."""
    dataset = create_maskrcnn_dataset(cfg, path, batch_size, is_training, num_parallel_workers=workers)
    iterator = dataset.create_tuple_iterator(output_numpy=True, num_epochs=-1)
    next(iterator)
    start = time.perf_counter()
    count = 0
    while count < batches:
        try:
            next(iterator)
        except StopIteration:
            iterator = dataset.create_tuple_iterator(output_numpy=True, num_epochs=-1)
            continue
        count += 1
    return count * batch_size / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=600, help="toy training images (640x480)")
    parser.add_argument("--root", default="", help="folder for the toy set (default: a temporary folder)")
    parser.add_argument("--batches", type=int, default=40, help="timed pipeline batches")
    args = parser.parse_args()
    root = args.root or tempfile.mkdtemp(prefix="bench_data_")
    if not os.path.isfile(os.path.join(root, "annotations", "instances_train2017.json")):
        toy_data.write_split(root, "train2017", args.images, seed=0, first_image_id=1, width=640, height=480,
                             size_jitter=0.0, max_objects=8)
    mindrecord_dir = os.path.join(root, "mindrecord_bench")
    cfg = config_from_dict({"coco_root": root, "mindrecord_dir": mindrecord_dir, "device_target": "CPU"})
    results = []
    for workers in (1, 2):
        rate, ratio, path = bench_conversion(cfg, workers)
        results.append(f"conversion, {workers} worker(s): {rate:.0f} images/s ({rate / workers:.0f} per worker), "
                       f"MindRecord / JPEG bytes = {ratio:.3f}")
    train_rate = bench_pipeline(cfg, path, True, cfg.batch_size, args.batches, 2)
    results.append(f"training pipeline {cfg.img_height}x{cfg.img_width}, G={cfg.max_instance_count} packed masks, "
                   f"batch {cfg.batch_size}, 2 workers: {train_rate:.1f} images/s")
    eval_rate = bench_pipeline(cfg, path, False, 1, args.batches * cfg.batch_size, 2)
    results.append(f"evaluation pipeline {cfg.img_height}x{cfg.img_width}, batch 1, 2 workers: "
                   f"{eval_rate:.1f} images/s")
    print("\n".join(["", "bench_data results:"] + results))
    if not args.root:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
