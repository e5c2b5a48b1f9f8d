"""Post-process the raw outputs of the exported (MINDIR) model into COCO AP.

    # 1. run the exported graph on the eval MindRecord and write raw outputs (or run it elsewhere)
    python postprogress.py --stage=infer --mindir_path=pointrend.mindir --result_path=RAW --coco_root=DATA \
        --mindrecord_dir=MR --num_classes=N
    # 2. paste masks, write COCO json files, run COCOeval (same tables as eval.py)
    python postprogress.py --stage=postprocess --result_path=RAW --coco_root=DATA --mindrecord_dir=MR

Raw files per image in result_path (little-endian, shapes with D = test_max_per_img):
    <image_id>_meta.bin    float32 (6,): img_metas (h, w, scale_h, scale_w), orig_h, orig_w
    <image_id>_0.bin boxes float32 (D, 4)    <image_id>_1.bin scores float32 (D,)
    <image_id>_2.bin labels int32 (D,)       <image_id>_3.bin valid uint8 (D,)
    <image_id>_4.bin masks float32 (D, M, M) mask probabilities inside each box
(the file name keeps the original's spelling, "postprogress").
"""
import glob
import os

import numpy as np

from src.utils.runtime import run_main, setup_context

RAW_DTYPES = {"boxes": np.float32, "scores": np.float32, "labels": np.int32, "valid": np.uint8, "masks": np.float32}


def write_raw(out_dir, image_id, det, img_meta, orig_hw):
    """Write one image's outputs as raw files, each atomically (the meta file last: postprocess
    looks for it)."""
    from src.utils.atomic_io import atomic_open

    meta = np.concatenate([np.asarray(img_meta, np.float32), np.asarray(orig_hw, np.float32)])
    arrays = [(str(i), det[name].astype(RAW_DTYPES[name])) for i, name in enumerate(RAW_DTYPES)] + [("meta", meta)]
    for suffix, array in arrays:
        with atomic_open(os.path.join(out_dir, f"{image_id}_{suffix}.bin"), "wb") as f:
            f.write(array.tobytes())


def read_raw(out_dir, image_id, max_dets):
    """Inverse of ``write_raw``: (det dict, img_meta (4,), orig_hw (2,))."""
    def load(suffix, dtype):
        path = os.path.join(out_dir, f"{image_id}_{suffix}.bin")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"raw output missing: {path}")
        return np.fromfile(path, dtype)

    meta = load("meta", np.float32)
    det = {name: load(str(i), dtype) for i, (name, dtype) in enumerate(RAW_DTYPES.items())}
    det["boxes"] = det["boxes"].reshape(max_dets, 4)
    det["valid"] = det["valid"].astype(bool)
    side = int(round(np.sqrt(det["masks"].size / max_dets)))
    if side * side * max_dets != det["masks"].size:
        raise ValueError(f"{image_id}_4.bin: {det['masks'].size} values are not {max_dets} square masks")
    det["masks"] = det["masks"].reshape(max_dets, side, side)
    return det, meta[:4], meta[4:6]


def run_exported(cfg, mindrecord, out_dir):
    """Run the MINDIR graph over the eval MindRecord, writing raw outputs per image."""
    import mindspore as ms
    from mindspore import nn

    from src.config import require
    from src.dataset import EVAL_COLUMNS, create_maskrcnn_dataset
    from src.inference import OUTPUT_NAMES, batches, split_images
    from src.utils.progress import Progress

    require(cfg, "mindir_path", "set --mindir_path=MODEL.mindir (written by export.py) for --stage=infer or all")
    if not os.path.isfile(cfg.mindir_path):
        raise FileNotFoundError(f"mindir_path not found: {cfg.mindir_path!r}")
    graph = nn.GraphCell(ms.load(cfg.mindir_path))
    dataset = create_maskrcnn_dataset(cfg, mindrecord, batch_size=1, is_training=False,
                                      num_parallel_workers=cfg.num_parallel_workers)
    progress = Progress(dataset.get_dataset_size(), "run exported model", unit="images")
    for batch, count in batches(dataset, cfg.batch_size_export, EVAL_COLUMNS):
        outputs = graph(ms.Tensor(batch["img"]), ms.Tensor(batch["img_metas"]))
        outputs = {name: x.asnumpy() for name, x in zip(OUTPUT_NAMES, outputs)}
        for i, det in enumerate(split_images(outputs, count)):
            write_raw(out_dir, int(batch["image_id"][i]), det, batch["img_metas"][i], batch["orig_hw"][i])
        progress.update(count)
    progress.close()


def postprocess(cfg, coco_gt, image_ids, categories, out_dir):
    """Raw outputs in out_dir -> COCO json files and COCOeval tables; returns the stats dict."""
    from src.evaluation import CocoResultCollector
    from src.utils.progress import Progress

    available = {int(os.path.basename(p).split("_")[0]) for p in glob.glob(os.path.join(out_dir, "*_meta.bin"))}
    missing = [i for i in image_ids if i not in available]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(image_ids)} images have no raw outputs in {out_dir} "
                                f"(e.g. image {missing[0]}); run --stage=infer first")
    collector = CocoResultCollector(categories, cfg.mask_thr_binary, cfg.eval_workers)
    progress = Progress(len(image_ids), "postprocess", unit="images")
    for image_id in image_ids:
        det, img_meta, orig_hw = read_raw(out_dir, image_id, cfg.test_max_per_img)
        collector.add(image_id, det, img_meta, orig_hw)
        progress.update()
    progress.close()
    return collector.finish(coco_gt, image_ids, out_dir, cfg.boundary_ap)


def main():
    from src.config import load_config, require
    from src.inference import eval_inputs

    cfg = load_config(usage=__doc__)
    require(cfg, "result_path", "set the folder of the raw outputs")
    setup_context(cfg)
    out_dir = os.path.abspath(cfg.result_path)
    os.makedirs(out_dir, exist_ok=True)
    mindrecord, coco_gt, image_ids, categories = eval_inputs(cfg)
    if cfg.stage in ("infer", "all"):
        run_exported(cfg, mindrecord, out_dir)
    if cfg.stage in ("postprocess", "all"):
        postprocess(cfg, coco_gt, image_ids, categories, out_dir)


if __name__ == "__main__":
    run_main(main)
