"""One image -> one MindRecord row: read and check the image, validate and encode its annotations.

Runs in the conversion worker processes (numpy, cv2 and pycocotools only; no MindSpore).

Row layout (``RECORD_SCHEMA``), n = number of instances:
    image         bytes       the image file as stored (JPEG bytes, not re-encoded)
    image_id      int64       COCO image id
    height, width int32       original image size
    num_instances int32       n (MindRecord returns zero-length arrays as scalars, so n is stored)
    boxes         float32 (n, 4)  x1, y1, x2, y2 in continuous pixels (pixel c covers [c, c + 1)),
                                  clipped to the image, not rounded
    labels        int32 (n,)  contiguous labels 1..K (see class_map.py)
    iscrowd       int32 (n,)  1 for crowd regions
    mask_lengths  int32 (n,)  byte length of each instance's RLE in ``masks``
    masks         bytes       the compressed COCO RLE strings of all instances, concatenated
"""
import math
from dataclasses import dataclass

import cv2
import numpy as np
from pycocotools import mask as mask_utils

RECORD_SCHEMA = {
    "image": {"type": "bytes"},
    "image_id": {"type": "int64"},
    "height": {"type": "int32"},
    "width": {"type": "int32"},
    "num_instances": {"type": "int32"},
    "boxes": {"type": "float32", "shape": [-1, 4]},
    "labels": {"type": "int32", "shape": [-1]},
    "iscrowd": {"type": "int32", "shape": [-1]},
    "mask_lengths": {"type": "int32", "shape": [-1]},
    "masks": {"type": "bytes"},
}

JPEG_START = b"\xff\xd8"
JPEG_END = b"\xff\xd9"
# A complete JPEG ends with the EOI marker; some writers append a few padding bytes after it.
JPEG_END_SEARCH = 4096


@dataclass(frozen=True)
class RecordOptions:
    """How rows are built.

    label_of: {category id: label 1..K}.
    max_instances: keep at most this many instances per image (the largest), None = all.
    keep_empty: keep images without a usable (non-crowd) instance (evaluation keeps every image).
    """
    label_of: dict
    max_instances: int = None
    keep_empty: bool = False


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_polygon(coords):
    """True for a flat list of >= 3 finite (x, y) pairs."""
    if not isinstance(coords, list) or len(coords) < 6 or len(coords) % 2:
        return False
    try:
        return bool(np.isfinite(np.asarray(coords, np.float64)).all())
    except (TypeError, ValueError):
        return False


def _read_image(task, issues):
    """The image file's bytes if it exists, reads and decodes to the annotated size; else None."""
    try:
        with open(task.path, "rb") as f:
            data = f.read()
    except OSError as e:
        issues.append(("image_missing", f"image {task.image_id}: cannot read {task.path}: {e.strerror or e}"))
        return None
    if data[:2] == JPEG_START and data.rfind(JPEG_END, max(0, len(data) - JPEG_END_SEARCH)) < 0:
        issues.append(("image_corrupt", f"image {task.image_id}: {task.path} is truncated (no JPEG end marker)"))
        return None
    # The pipeline decodes without EXIF rotation too: annotations refer to the stored pixel grid.
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION)
    if decoded is None:
        issues.append(("image_corrupt", f"image {task.image_id}: {task.path} does not decode"))
        return None
    if decoded.shape != (task.height, task.width):
        issues.append(("image_size_mismatch", f"image {task.image_id}: {task.path} is {decoded.shape[1]}x"
                       f"{decoded.shape[0]}, the annotation file says {task.width}x{task.height}"))
        return None
    return data


def _segmentation_rle(segmentation, height, width, where, issues):
    """Compressed RLE dict of a COCO segmentation (polygons or RLE), or None if unusable."""
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if _is_polygon(p)]
        if not polygons:
            issues.append(("ann_bad_segmentation", f"{where}: no polygon with >= 3 points"))
            return None
        if len(polygons) < len(segmentation):
            issues.append(("ann_polygon_dropped", f"{where}: dropped {len(segmentation) - len(polygons)} polygon "
                                                  "part(s) with < 3 points"))
        return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    if isinstance(segmentation, dict):
        size, counts = segmentation.get("size"), segmentation.get("counts")
        if size != [height, width]:
            issues.append(("ann_bad_segmentation", f"{where}: RLE size {size!r:.40} is not the image size "
                                                   f"[{height}, {width}]"))
            return None
        try:
            if isinstance(counts, list) and all(_count(v) for v in counts) and sum(counts) == height * width:
                return mask_utils.frPyObjects(segmentation, height, width)
            if isinstance(counts, str):
                rle = {"size": size, "counts": counts.encode("ascii")}
                mask_utils.decode(rle)  # raises ValueError when the runs do not add up to the image
                return rle
        except (ValueError, TypeError, UnicodeEncodeError):
            pass
        issues.append(("ann_bad_segmentation", f"{where}: malformed RLE counts"))
        return None
    issues.append(("ann_bad_segmentation", f"{where}: segmentation is missing or neither polygons nor RLE"))
    return None


def _instance(ann, task, options, issues):
    """(box (4,), label, iscrowd, rle bytes, mask area) of one annotation, or None if unusable."""
    where = f"image {task.image_id} annotation {ann.get('id')}"
    label = options.label_of.get(ann.get("category_id"))
    if label is None:
        issues.append(("ann_unknown_category", f"{where}: unknown category id {ann.get('category_id')!r}"))
        return None
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_number(v) for v in bbox)):
        issues.append(("ann_bad_area", f"{where}: bbox {bbox!r:.60} is not 4 numbers"))
        return None
    x, y, w, h = bbox
    area = ann.get("area", 1.0)
    if w <= 0 or h <= 0 or not _number(area) or area <= 0:
        issues.append(("ann_bad_area", f"{where}: zero/negative size (bbox {bbox}, area {area!r})"))
        return None
    corners = (x, y, x + w, y + h)
    clipped = (max(x, 0), max(y, 0), min(x + w, task.width), min(y + h, task.height))
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        issues.append(("ann_box_outside", f"{where}: bbox {bbox} lies outside the {task.width}x{task.height} image"))
        return None
    if clipped != corners:
        issues.append(("ann_box_clipped", f"{where}: bbox {bbox} clipped to the {task.width}x{task.height} image"))
    box = np.array(clipped, np.float32)
    rle = _segmentation_rle(ann.get("segmentation"), task.height, task.width, where, issues)
    if rle is None:
        return None
    mask_area = int(mask_utils.area(rle))
    if mask_area == 0:
        issues.append(("ann_empty_mask", f"{where}: the segmentation covers no pixel"))
        return None
    return box, label, int(bool(ann.get("iscrowd", 0))), rle["counts"], mask_area


def select_instances(iscrowd, areas, limit):
    """Indices (ascending) of the instances kept when there are more than ``limit``.

    Non-crowd instances come first (they are the training targets), larger masks before smaller.
    """
    order = sorted(range(len(areas)), key=lambda i: (iscrowd[i], -areas[i], i))
    return sorted(order[:limit])


def build_record(task, options):
    """Turn an ImageTask into a MindRecord row.

    Returns (row dict or None if the image is skipped, list of (issue kind, message)).
    """
    issues = []
    data = _read_image(task, issues)
    if data is None:
        return None, issues
    instances = [inst for inst in (_instance(ann, task, options, issues) for ann in task.annotations) if inst]
    if not options.keep_empty and not any(not crowd for _, _, crowd, _, _ in instances):
        issues.append(("image_no_annotations", f"image {task.image_id} ({task.path}): no usable non-crowd "
                                               "annotation"))
        return None, issues
    if options.max_instances is not None and len(instances) > options.max_instances:
        keep = select_instances([i[2] for i in instances], [i[4] for i in instances], options.max_instances)
        issues.append(("too_many_instances", f"image {task.image_id}: {len(instances)} instances, keeping the "
                                             f"{options.max_instances} largest (max_instance_count)"))
        instances = [instances[i] for i in keep]
    n = len(instances)
    row = {
        "image": data,
        "image_id": task.image_id,
        "height": task.height,
        "width": task.width,
        "num_instances": n,
        "boxes": np.array([i[0] for i in instances], np.float32).reshape(n, 4),
        "labels": np.array([i[1] for i in instances], np.int32),
        "iscrowd": np.array([i[2] for i in instances], np.int32),
        "mask_lengths": np.array([len(i[3]) for i in instances], np.int32),
        "masks": b"".join(i[3] for i in instances),
    }
    return row, issues
