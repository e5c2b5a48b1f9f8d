"""Network detections -> COCO result entries (boxes and RLE masks) and result json files.

COCO results are lists of dicts. Box results: ``{image_id, category_id, bbox: [x, y, w, h],
score}``; mask results: ``{image_id, category_id, segmentation: RLE, score}`` with the RLE
``counts`` as a str so that the entry is JSON-serialisable. Coordinates are in the pixels of the
original image.
"""
import os

import numpy as np
import pycocotools.mask as mask_utils
from pycocotools.coco import COCO

from src.utils.atomic_io import write_json_atomic
from src.evaluation.paste_masks import paste_masks


def load_coco_gt(coco_gt):
    """A ``COCO`` object from an annotation file path, or ``coco_gt`` itself if it is one."""
    if isinstance(coco_gt, COCO):
        return coco_gt
    if not os.path.isfile(coco_gt):
        raise FileNotFoundError(f"COCO annotation file not found: {coco_gt}")
    return COCO(coco_gt)


def label_to_category_map(coco_gt):
    """Contiguous label -> COCO category id: label k (1-based) is the k-th smallest category id.

    Args:
        coco_gt: ``COCO`` object or annotation file path.
    Returns:
        dict {label: category_id} for labels 1..K.
    """
    cat_ids = sorted(load_coco_gt(coco_gt).getCatIds())
    return {label: cat_id for label, cat_id in enumerate(cat_ids, start=1)}


def _category_lookup(label_to_category):
    """Normalise the class mapping to a dict {label: category_id}.

    A sequence is read as ``seq[label - 1]``: labels start at 1 because 0 is the background.
    """
    if isinstance(label_to_category, dict):
        return {int(k): int(v) for k, v in label_to_category.items()}
    return {label: int(cat_id) for label, cat_id in enumerate(label_to_category, start=1)}


def encode_mask(mask):
    """(H, W) binary mask -> COCO RLE dict with ``counts`` as str (JSON-ready)."""
    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def detections_to_coco(image_id, boxes, scores, labels, valid, masks, img_meta, orig_hw, label_to_category,
                       mask_threshold=0.5):
    """Turn one image's network output into COCO box and mask results.

    Args:
        image_id: COCO image id.
        boxes: (D, 4) float (x1, y1, x2, y2) on the network's input canvas.
        scores: (D,) float; labels: (D,) int contiguous labels 1..K; valid: (D,) bool.
        masks: (D, M, M) float mask probabilities inside each box, or None for box results only.
        img_meta: (4,) = (h, w, scale_h, scale_w): resized image size and resized / original scale.
        orig_hw: (orig_h, orig_w) size of the original image.
        label_to_category: dict {label: category_id}, or a sequence whose entry ``label - 1`` is
            the category id of ``label`` (e.g. ``sorted(coco.getCatIds())``).
        mask_threshold: probability at which a pasted mask pixel becomes foreground.
    Returns:
        (bbox_results, segm_results): lists of COCO result dicts for the valid detections
        (``segm_results`` is empty when ``masks`` is None). Boxes are scaled back to the original
        image and clipped to [0, orig_w] x [0, orig_h]; the mask score is the box score.
    """
    valid = np.asarray(valid, dtype=bool).reshape(-1)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)[valid]
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)[valid]
    labels = np.asarray(labels).reshape(-1)[valid]
    scale_h, scale_w = float(img_meta[2]), float(img_meta[3])
    if not (scale_h > 0 and scale_w > 0):
        raise ValueError(f"image {image_id}: img_meta scales must be positive, got {scale_h}, {scale_w}")
    orig_h, orig_w = int(orig_hw[0]), int(orig_hw[1])
    lookup = _category_lookup(label_to_category)
    unknown = sorted({int(lb) for lb in labels} - set(lookup))
    if unknown:
        raise KeyError(f"image {image_id}: labels {unknown} have no COCO category in the class mapping")

    orig_boxes = boxes / np.array([scale_w, scale_h, scale_w, scale_h])
    clipped = np.clip(orig_boxes, 0.0, [orig_w, orig_h, orig_w, orig_h])
    bbox_results, segm_results = [], []
    for box, score, label in zip(clipped, scores, labels):
        bbox_results.append({
            "image_id": int(image_id),
            "category_id": lookup[int(label)],
            "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])],
            "score": float(score),
        })
    if masks is not None:
        # The grid was predicted inside the unclipped box, so it is pasted there; clipping only
        # changes the reported box (pasting clips to the image anyway).
        pasted = paste_masks(np.asarray(masks)[valid], orig_boxes, (orig_h, orig_w), mask_threshold)
        for mask, entry in zip(pasted, bbox_results):
            segm_results.append({
                "image_id": entry["image_id"],
                "category_id": entry["category_id"],
                "segmentation": encode_mask(mask),
                "score": entry["score"],
            })
    return bbox_results, segm_results


def ground_truth_as_results(coco_gt, image_ids=None, score=1.0):
    """Every non-crowd ground-truth instance as a perfect detection (for testing the pipeline).

    Crowd regions are not objects to detect (COCOeval only uses them to ignore detections), so
    they are left out.

    Args:
        coco_gt: ``COCO`` object or annotation file path.
        image_ids: images to take annotations from; None for all.
        score: score given to every result.
    Returns:
        (bbox_results, segm_results): the annotation's own ``bbox`` and its rasterised mask
        (``annToMask``) as RLE.
    """
    coco = load_coco_gt(coco_gt)
    if image_ids is None:
        anns = coco.loadAnns(coco.getAnnIds())
    else:
        anns = [ann for image_id in image_ids for ann in coco.imgToAnns[image_id]]
    bbox_results, segm_results = [], []
    for ann in (a for a in anns if not a.get("iscrowd", 0)):
        common = {"image_id": int(ann["image_id"]), "category_id": int(ann["category_id"]), "score": float(score)}
        bbox_results.append(dict(common, bbox=[float(v) for v in ann["bbox"]]))
        segm_results.append(dict(common, segmentation=encode_mask(coco.annToMask(ann))))
    return bbox_results, segm_results


def write_coco_results(bbox_results, segm_results, out_dir, prefix="results"):
    """Write box and mask results as COCO result json files, atomically.

    Returns:
        dict {'bbox': path, 'segm': path} of ``<out_dir>/<prefix>.bbox.json`` and
        ``<out_dir>/<prefix>.segm.json``.
    """
    paths = {}
    for iou_type, results in (("bbox", bbox_results), ("segm", segm_results)):
        paths[iou_type] = os.path.join(out_dir, f"{prefix}.{iou_type}.json")
        write_json_atomic(paths[iou_type], list(results))
    return paths
