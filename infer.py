"""Run a trained model on one image or a folder: detections json + a PNG per image.

    python infer.py --checkpoint_path=CKPT --img_path=IMAGE_OR_DIR --result_path=OUT \
        [--mindrecord_dir=MR] [--key=value ...]

Class names come from ``classes.json`` in ``mindrecord_dir`` (written by the conversion) or, when
num_classes matches, from ``coco_classes``.
"""
import os

import numpy as np

from src.utils.runtime import compile_then_release, run_main, setup_context

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def list_images(path):
    """Image files at ``path`` (a file or a folder), sorted."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise FileNotFoundError(f"img_path not found: {path!r}")
    files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(IMAGE_SUFFIXES))
    if not files:
        raise FileNotFoundError(f"no {'/'.join(IMAGE_SUFFIXES)} images in {path}")
    return files


def class_names_and_ids(cfg):
    """({label: name}, {label: category id}) for the network's labels."""
    from src.dataset import load_class_map
    classes_file = os.path.join(cfg.mindrecord_dir, "classes.json") if cfg.mindrecord_dir else ""
    if classes_file and os.path.isfile(classes_file):
        class_map = load_class_map(cfg.mindrecord_dir)
        labels = range(1, class_map.num_classes)
        return ({lb: class_map.names[lb - 1] for lb in labels}, {lb: class_map.category_ids[lb - 1] for lb in labels})
    if len(cfg.coco_classes) == cfg.num_classes:
        ids = cfg.coco_category_ids if len(cfg.coco_category_ids) == cfg.num_classes - 1 else range(1, cfg.num_classes)
        return ({lb: cfg.coco_classes[lb] for lb in range(1, cfg.num_classes)},
                {lb: int(ids[lb - 1]) for lb in range(1, cfg.num_classes)})
    return ({lb: f"class {lb}" for lb in range(1, cfg.num_classes)}, {lb: lb for lb in range(1, cfg.num_classes)})


def infer(cfg):
    import cv2
    import mindspore as ms
    from pycocotools import mask as mask_utils

    from src.config import require
    from src.dataset import resolve_num_classes
    from src.dataset.transforms import EvalTransform
    from src.evaluation import detections_to_coco
    from src.inference import build_detector, outputs_to_numpy, pad_batch, split_images
    from src.utils.atomic_io import write_json_atomic
    from src.utils.progress import Progress
    from src.utils.visualize import draw_instances, write_png

    setup_context(cfg)
    if cfg.mindrecord_dir and os.path.isfile(os.path.join(cfg.mindrecord_dir, "classes.json")):
        resolve_num_classes(cfg, cfg.mindrecord_dir)
    require(cfg, "num_classes", "unknown: pass --mindrecord_dir with classes.json or --num_classes=N")
    files = list_images(cfg.img_path)
    out_dir = os.path.abspath(cfg.result_path or "infer_result")
    os.makedirs(out_dir, exist_ok=True)
    names, categories = class_names_and_ids(cfg)
    transform = EvalTransform(cfg)
    net = build_detector(cfg, cfg.checkpoint_path, cfg.test_batch_size)
    results = []
    progress = Progress(len(files), "infer", unit="images")
    batch_size = cfg.test_batch_size
    for start in range(0, len(files), batch_size):
        chunk = files[start:start + batch_size]
        rows = []
        for path in chunk:
            data = np.fromfile(path, np.uint8)
            image = cv2.imdecode(data, cv2.IMREAD_COLOR)
            if image is None:
                raise FileNotFoundError(f"cannot decode image {path}")
            rows.append((image, transform(data, 0, image.shape[0], image.shape[1])))
        padded = pad_batch(rows, batch_size)
        img = np.stack([r[1][0] for r in padded])
        metas = np.stack([r[1][1] for r in padded])
        inputs = (ms.Tensor(img), ms.Tensor(metas))
        if start == 0:
            compile_then_release(net, *inputs)
        outputs = outputs_to_numpy(net(*inputs))
        for path, (image, inputs), det in zip(chunk, rows, split_images(outputs, len(chunk))):
            boxes, segms = detections_to_coco(0, det["boxes"], det["scores"], det["labels"], det["valid"],
                                              det["masks"], inputs[1], inputs[3], categories,
                                              mask_threshold=cfg.mask_thr_binary)
            labels = det["labels"][det["valid"]]
            detections = []
            for box, segm, label in zip(boxes, segms, labels):
                x, y, w, h = box["bbox"]
                detections.append({"label": int(label), "name": names[int(label)], "category_id": box["category_id"],
                                   "score": box["score"], "bbox_xyxy": [x, y, x + w, y + h],
                                   "segmentation": segm["segmentation"]})
            masks = np.stack([mask_utils.decode(d["segmentation"]) for d in detections]) if detections else None
            drawn = draw_instances(cv2.cvtColor(image, cv2.COLOR_BGR2RGB),
                                   np.array([d["bbox_xyxy"] for d in detections]).reshape(-1, 4), labels, masks, names,
                                   scores=np.array([d["score"] for d in detections]))
            png = os.path.join(out_dir, os.path.splitext(os.path.basename(path))[0] + ".png")
            write_png(png, drawn)
            results.append({"file": path, "height": image.shape[0], "width": image.shape[1],
                            "detections": detections, "visualization": png})
        progress.update(len(chunk))
    progress.close()
    json_path = os.path.join(out_dir, "detections.json")
    write_json_atomic(json_path, results)
    print(f"{sum(len(r['detections']) for r in results)} detections in {len(files)} images: {json_path}",
          flush=True)
    return results


def main():
    from src.config import load_config, require
    cfg = load_config(usage=__doc__)
    require(cfg, "checkpoint_path", "set --checkpoint_path=CHECKPOINT to run")
    require(cfg, "img_path", "set --img_path=IMAGE_OR_FOLDER")
    infer(cfg)


if __name__ == "__main__":
    run_main(main)
