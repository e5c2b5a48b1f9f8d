"""Evaluate a checkpoint on COCO-format val data: COCO bbox/segm AP, per-category AP, Boundary AP.

    python eval.py --coco_root=DATA --mindrecord_dir=MR --checkpoint_path=CKPT [--key=value ...]

Inference runs in GRAPH_MODE, ``test_batch_size`` images per call. Writes results.pkl.bbox.json,
results.pkl.segm.json, coco_summary.txt, coco_per_category_ap.csv and boundary_ap.txt into
``eval_output_dir`` (default: the current directory).
"""
import os
import time

from src.utils.runtime import compile_then_release, run_main, setup_context


def evaluate(cfg):
    import mindspore as ms

    from src.config import require
    from src.dataset import EVAL_COLUMNS, create_maskrcnn_dataset
    from src.evaluation import CocoResultCollector
    from src.inference import batches, build_detector, eval_inputs, outputs_to_numpy, split_images
    from src.utils.progress import Progress

    require(cfg, "checkpoint_path", "set --checkpoint_path=CHECKPOINT to evaluate")
    setup_context(cfg)
    out_dir = os.path.abspath(cfg.eval_output_dir or ".")
    os.makedirs(out_dir, exist_ok=True)
    mindrecord, coco_gt, image_ids, categories = eval_inputs(cfg)
    net = build_detector(cfg, cfg.checkpoint_path, cfg.test_batch_size)
    dataset = create_maskrcnn_dataset(cfg, mindrecord, batch_size=1, is_training=False,
                                      num_parallel_workers=cfg.num_parallel_workers)
    total = dataset.get_dataset_size()
    print(f"evaluating {total} images of {mindrecord} with {cfg.checkpoint_path} "
          f"(batch {cfg.test_batch_size}, {cfg.device_target}, GRAPH_MODE)", flush=True)
    collector = CocoResultCollector(categories, cfg.mask_thr_binary, cfg.eval_workers)
    progress = Progress(total, "eval", unit="images")
    forward_time = host_time = 0.0
    for index, (batch, count) in enumerate(batches(dataset, cfg.test_batch_size, EVAL_COLUMNS)):
        start = time.perf_counter()
        inputs = (ms.Tensor(batch["img"]), ms.Tensor(batch["img_metas"]))
        if index == 0:
            compile_then_release(net, *inputs)
        outputs = outputs_to_numpy(net(*inputs))
        forward_time += time.perf_counter() - start
        start = time.perf_counter()
        for i, det in enumerate(split_images(outputs, count)):
            collector.add(batch["image_id"][i], det, batch["img_metas"][i], batch["orig_hw"][i])
        host_time += time.perf_counter() - start
        progress.update(count)
    start = time.perf_counter()
    collector.wait()
    host_time += time.perf_counter() - start
    progress.close()
    # host time is what the network waited for mask pasting and encoding (eval_workers hides it)
    print(f"network time {forward_time / max(total, 1):.3f} s/image (first batch includes graph compilation), "
          f"host post-processing wait {host_time / max(total, 1):.3f} s/image ({cfg.eval_workers} eval_workers)",
          flush=True)
    return collector.finish(coco_gt, image_ids, out_dir, cfg.boundary_ap)


def main():
    from src.config import load_config
    evaluate(load_config(usage=__doc__))


if __name__ == "__main__":
    run_main(main)
