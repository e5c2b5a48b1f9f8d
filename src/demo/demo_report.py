"""Side-by-side pictures of predictions and ground truth for val images (used by the demo).

    python -m src.demo.demo_report --ann_file=ANN --image_dir=DIR --segm_json=RESULTS --out_dir=OUT [--count=8]

Writes one PNG per image (prediction | ground truth) and ``overview.png``, the first ``--overview``
of them stacked, to look at or to put in a report.
"""
import argparse
import json
import os

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from src.evaluation import load_coco_gt
from src.utils.visualize import draw_instances, side_by_side, write_png


def instances(entries, coco, score_thr):
    """COCO annotations or results -> (boxes xyxy, labels, masks, scores) with labels = category ids."""
    kept = [e for e in entries if e.get("score", 1.0) >= score_thr and not e.get("iscrowd", 0)]
    boxes = np.array([[b[0], b[1], b[0] + b[2], b[1] + b[3]] for b in (e["bbox"] for e in kept)]).reshape(-1, 4)
    labels = np.array([e["category_id"] for e in kept], np.int64)
    masks = [coco.annToMask(e) if "area" in e else mask_utils.decode(e["segmentation"]) for e in kept]
    scores = np.array([e.get("score", 1.0) for e in kept])
    return boxes, labels, (np.stack(masks) if masks else None), scores


def stacked(images):
    """RGB images (H_i, W_i, 3) one below the other on white, 8 px apart: (sum H_i + gaps, max W_i, 3)."""
    gap = 8
    width = max(im.shape[1] for im in images)
    sheet = np.full((sum(im.shape[0] for im in images) + gap * (len(images) - 1), width, 3), 255, np.uint8)
    y = 0
    for im in images:
        sheet[y:y + im.shape[0], :im.shape[1]] = im
        y += im.shape[0] + gap
    return sheet


def write_report(ann_file, image_dir, segm_json, out_dir, count=8, score_thr=0.5, overview=2):
    """Write ``count`` PNGs (prediction | ground truth) and, when ``overview`` > 0, ``overview.png`` of the
    first ``overview`` of them; returns the per-image paths."""
    coco = load_coco_gt(ann_file)
    with open(segm_json, encoding="utf-8") as f:
        results = json.load(f)
    by_image = {}
    for r in results:
        by_image.setdefault(r["image_id"], []).append(r)
    for r in by_image.values():
        for e in r:
            x, y, w, h = mask_utils.toBbox(e["segmentation"])
            e.setdefault("bbox", [float(x), float(y), float(w), float(h)])
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    os.makedirs(out_dir, exist_ok=True)
    written, pictures = [], []
    for image_id in sorted(coco.getImgIds())[:count]:
        info = coco.loadImgs(image_id)[0]
        image = cv2.imread(os.path.join(image_dir, info["file_name"]), cv2.IMREAD_COLOR)
        if image is None:
            continue
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        pb, pl, pm, ps = instances(by_image.get(image_id, []), coco, score_thr)
        gb, gl, gm, _ = instances(coco.loadAnns(coco.getAnnIds(imgIds=image_id)), coco, 0.0)
        left = draw_instances(rgb, pb, pl, pm, names, scores=ps)
        right = draw_instances(rgb, gb, gl, gm, names)
        path = os.path.join(out_dir, f"{image_id:012d}.png")
        picture = side_by_side(left, right, f"prediction (score >= {score_thr})", "ground truth")
        write_png(path, picture)
        written.append(path)
        if len(pictures) < overview:
            pictures.append(picture)
    if pictures:
        write_png(os.path.join(out_dir, "overview.png"), stacked(pictures))
    return written


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ann_file", required=True)
    parser.add_argument("--image_dir", required=True)
    parser.add_argument("--segm_json", required=True)
    parser.add_argument("--out_dir", required=True)
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--score_thr", type=float, default=0.5)
    parser.add_argument("--overview", type=int, default=2, help="pictures stacked in overview.png (0: none)")
    args = parser.parse_args()
    paths = write_report(args.ann_file, args.image_dir, args.segm_json, args.out_dir, args.count, args.score_thr,
                         args.overview)
    print(f"{len(paths)} overlay images in {args.out_dir}" + (", first ones stacked in overview.png"
                                                             if paths and args.overview > 0 else ""))


if __name__ == "__main__":
    main()
