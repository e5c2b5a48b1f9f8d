"""Reading a COCO-format annotation file: one-line errors for unusable files, counted warnings for
unusable entries, and the per-image work items of the MindRecord conversion.

Nothing here imports MindSpore: conversion worker processes import this module.
"""
import json
import os
import sys
from collections import Counter
from dataclasses import dataclass, field

from src.dataset.class_map import ClassMap
from src.dataset.errors import DatasetError

# Every kind of skipped or repaired input, with the text of the summary line.
ISSUE_KINDS = {
    "image_bad_entry": "image entries without a usable id/file_name/height/width (skipped)",
    "image_duplicate_id": "image entries repeating an earlier image id (skipped)",
    "image_missing": "image files missing or unreadable (skipped)",
    "image_corrupt": "image files that do not decode (skipped)",
    "image_size_mismatch": "images whose decoded size differs from the annotation file (skipped)",
    "image_no_annotations": "images without a usable annotation (skipped for training)",
    "too_many_instances": "images with more than max_instance_count instances (largest kept)",
    "ann_unknown_image": "annotations of an image id that is not in the file (skipped)",
    "ann_unknown_category": "annotations with an unknown category id (skipped)",
    "ann_bad_area": "annotations with a zero/negative/invalid area or box (skipped)",
    "ann_box_clipped": "boxes reaching outside the image (clipped)",
    "ann_box_outside": "boxes outside the image (annotation skipped)",
    "ann_polygon_dropped": "degenerate polygon parts, < 3 points (part dropped)",
    "ann_bad_segmentation": "annotations with a missing or unusable segmentation (skipped)",
    "ann_empty_mask": "annotations whose mask covers no pixel (skipped)",
}


class Issues:
    """Counts skipped/repaired inputs by kind and prints the first few of each kind.

    Args:
        max_printed: warnings printed per kind; the rest are only counted.
        stream: where warnings go (default: stderr).
    """

    def __init__(self, max_printed=5, stream=None):
        self.max_printed = max_printed
        self.stream = stream
        self.counts = {}

    def add(self, kind, message):
        if kind not in ISSUE_KINDS:
            raise ValueError(f"unknown issue kind {kind!r}")
        count = self.counts.get(kind, 0) + 1
        self.counts[kind] = count
        if count <= self.max_printed:
            more = f" (further '{kind}' warnings are only counted)" if count == self.max_printed else ""
            print(f"warning: {message}{more}", file=self.stream or sys.stderr, flush=True)

    def extend(self, issues):
        """Add a list of (kind, message) pairs, e.g. the issues returned by a worker."""
        for kind, message in issues:
            self.add(kind, message)

    def count(self, kind):
        return self.counts.get(kind, 0)

    def summary_lines(self):
        """One line per kind that occurred, in ISSUE_KINDS order."""
        return [f"{self.counts[kind]:>8d} {text}" for kind, text in ISSUE_KINDS.items() if kind in self.counts]


@dataclass
class ImageTask:
    """Everything a worker needs to turn one image into a MindRecord row (picklable).

    annotations: raw COCO annotation dicts of this image, in file order.
    """
    image_id: int
    path: str
    height: int
    width: int
    annotations: list = field(default_factory=list)


def load_coco_json(path):
    """The parsed annotation file; DatasetError (one line) if missing, unreadable or not COCO-shaped."""
    if not os.path.isfile(path):
        raise DatasetError(f"annotation file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(f"annotation file {path} is not valid JSON: {e.msg} at line {e.lineno}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"annotation file {path} cannot be read: {e}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"annotation file {path} must hold a JSON object with images/annotations/categories")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"annotation file {path}: key '{key}' is missing or not a list")
    if not isinstance(data.get("annotations", []), list):
        raise DatasetError(f"annotation file {path}: key 'annotations' is not a list")
    return data


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def class_map_from_coco(data, path):
    """ClassMap of the annotation file's categories; DatasetError if there are none or they are malformed."""
    pairs = []
    for i, cat in enumerate(data["categories"]):
        cid = cat.get("id") if isinstance(cat, dict) else None
        if not _is_int(cid):
            raise DatasetError(f"annotation file {path}: categories[{i}] has no integer 'id' ({cat!r:.80})")
        pairs.append((cid, cat.get("name", str(cid))))
    if not pairs:
        raise DatasetError(f"annotation file {path}: 'categories' is empty")
    duplicates = sorted(cid for cid, count in Counter(cid for cid, _ in pairs).items() if count > 1)
    if duplicates:
        raise DatasetError(f"annotation file {path}: duplicate category ids {duplicates}")
    return ClassMap(pairs)


def image_tasks(data, image_dir, issues):
    """Group the annotations by image: a list of ImageTask in the file's image order.

    Broken image entries and annotations of unknown images are skipped with counted warnings.
    """
    tasks = {}
    for i, entry in enumerate(data["images"]):
        image_id = entry.get("id") if isinstance(entry, dict) else None
        if (not _is_int(image_id) or not isinstance(entry.get("file_name"), str)
                or not _is_int(entry.get("height")) or not _is_int(entry.get("width"))
                or entry["height"] <= 0 or entry["width"] <= 0):
            issues.add("image_bad_entry", f"images[{i}] lacks a usable id/file_name/height/width: {entry!r:.120}")
            continue
        if not -2 ** 31 <= image_id < 2 ** 31:
            raise DatasetError(f"image id {image_id} (images[{i}]) does not fit int32, as the eval output requires")
        if image_id in tasks:
            issues.add("image_duplicate_id", f"images[{i}] repeats image id {image_id}")
            continue
        tasks[image_id] = ImageTask(image_id, os.path.join(image_dir, entry["file_name"]),
                                    entry["height"], entry["width"])
    for i, ann in enumerate(data.get("annotations", [])):
        image_id = ann.get("image_id") if isinstance(ann, dict) else None
        task = tasks.get(image_id) if _is_int(image_id) else None
        if task is None:
            issues.add("ann_unknown_image", f"annotations[{i}] refers to image id {image_id!r}, "
                                            "which is not in 'images'")
            continue
        task.annotations.append(ann)
    return list(tasks.values())
