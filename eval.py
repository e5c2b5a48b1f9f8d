"""Evaluate a checkpoint on COCO-format val data: COCO bbox/segm AP, per-category AP, Boundary AP.

    python eval.py --coco_root=DATA --mindrecord_dir=MR --checkpoint_path=CKPT [--key=value ...]

Inference runs in GRAPH_MODE, ``test_batch_size`` images per call.
"""
import os
import time

import numpy as np

from src.runtime import run_main, setup_context


def batches(dataset, batch_size, columns):
    """Group single-image dataset rows into fixed-size numpy batches.

    The last batch is padded with copies of its last image; yields (batch dict, real count).
    """
    rows = []
    for row in dataset.create_dict_iterator(num_epochs=1, output_numpy=True):
        rows.append(row)
        if len(rows) == batch_size:
            yield {c: np.concatenate([r[c] for r in rows]) for c in columns}, batch_size
            rows = []
    if rows:
        count = len(rows)
        rows += [rows[-1]] * (batch_size - count)
        yield {c: np.concatenate([r[c] for r in rows]) for c in columns}, count


def evaluate(cfg):
    import mindspore as ms

    from src.dataset import (ann_file_path, check_annotations_match, create_maskrcnn_dataset, ensure_mindrecord,
                             label_to_category, resolve_num_classes)
    from src.evaluation import (boundary_ap, detections_to_coco, evaluate_coco, load_coco_gt,
                                write_coco_results)
    from src.inference import build_detector, outputs_to_numpy, split_images
    from src.progress import Progress

    setup_context(cfg)
    if not cfg.checkpoint_path:
        raise FileNotFoundError("no checkpoint given: set --checkpoint_path=FILE")
    out_dir = os.path.abspath(cfg.eval_output_dir or ".")
    os.makedirs(out_dir, exist_ok=True)
    mindrecord = ensure_mindrecord(cfg, is_training=False)
    mindrecord_dir = os.path.dirname(mindrecord)
    resolve_num_classes(cfg, mindrecord_dir)
    ann_file = ann_file_path(cfg)
    coco_gt = load_coco_gt(ann_file)
    image_ids = check_annotations_match(coco_gt, mindrecord_dir, ann_file)
    categories = label_to_category(mindrecord_dir)

    net = build_detector(cfg, cfg.checkpoint_path, cfg.test_batch_size)
    dataset = create_maskrcnn_dataset(cfg, mindrecord, batch_size=1, is_training=False,
                                      num_parallel_workers=cfg.num_parallel_workers)
    total = dataset.get_dataset_size()
    print(f"evaluating {total} images from {mindrecord} with {cfg.checkpoint_path} "
          f"(batch {cfg.test_batch_size}, {cfg.device_target})", flush=True)
    bbox_results, segm_results = [], []
    progress = Progress(total, "eval", unit="images")
    forward_time = 0.0
    no_detection = 0
    for batch, count in batches(dataset, cfg.test_batch_size, ("img", "img_metas", "image_id", "orig_hw")):
        start = time.perf_counter()
        outputs = outputs_to_numpy(net(ms.Tensor(batch["img"]), ms.Tensor(batch["img_metas"])))
        forward_time += time.perf_counter() - start
        for i, det in enumerate(split_images(outputs, count)):
            if not det["valid"].any():
                no_detection += 1
            boxes, segms = detections_to_coco(int(batch["image_id"][i]), det["boxes"], det["scores"], det["labels"],
                                              det["valid"], det["masks"], batch["img_metas"][i],
                                              batch["orig_hw"][i], categories, mask_threshold=cfg.mask_thr_binary)
            bbox_results.extend(boxes)
            segm_results.extend(segms)
        progress.update(count)
    progress.close()
    print(f"network time {forward_time / max(total, 1):.3f} s/image; {no_detection} images without detections",
          flush=True)
    paths = write_coco_results(bbox_results, segm_results, out_dir, prefix="results.pkl")
    stats = evaluate_coco(coco_gt, paths, out_dir=out_dir, image_ids=image_ids)
    if cfg.boundary_ap:
        stats["boundary"] = boundary_ap(coco_gt, paths["segm"], image_ids=image_ids,
                                        summary_path=os.path.join(out_dir, "boundary_ap.txt"))
        print(f"Boundary AP: {stats['boundary'][0]:.4f}", flush=True)
    print(f"bbox AP {stats['bbox'][0]:.4f}  segm AP {stats['segm'][0]:.4f}  (results in {out_dir})", flush=True)
    return stats


def main():
    from src.model_utils.config import load_config
    evaluate(load_config())


if __name__ == "__main__":
    run_main(main)
