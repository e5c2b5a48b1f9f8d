"""Synthetic COCO ground truth shared by the evaluation tests, and a check of it.

Three 120 x 160 images and one 100 x 140 image; curved polygon objects of all COCO area ranges
(small < 32^2, medium, large > 96^2) in three categories with non-contiguous ids, a fourth category
without annotations, one crowd region, and one image without annotations.
"""
import json

import numpy as np
import pycocotools.mask as mask_utils
from pycocotools.coco import COCO

IMAGES = {11: (120, 160), 22: (120, 160), 33: (120, 160), 44: (100, 140)}
EMPTY_IMAGE = 33
CATEGORIES = {3: "disc", 7: "blob", 12: "star", 20: "unused"}
# (image_id, category_id, centre x, centre y, radius x, radius y, lobes, lobe depth)
OBJECTS = [
    (11, 3, 40.0, 40.0, 30.0, 25.0, 0, 0.0),
    (11, 7, 110.0, 70.0, 28.0, 35.0, 3, 0.2),
    (11, 12, 130.0, 20.0, 7.0, 6.0, 5, 0.3),
    (11, 3, 150.0, 105.0, 12.0, 10.0, 0, 0.0),  # touches the right image border
    (22, 12, 80.0, 60.0, 62.0, 50.0, 5, 0.15),
    (22, 7, 20.0, 100.0, 9.0, 11.0, 2, 0.25),
    (22, 3, 140.0, 15.0, 5.0, 4.0, 0, 0.0),
    (44, 7, 70.0, 50.0, 45.0, 30.0, 4, 0.1),
    (44, 3, 20.0, 20.0, 15.0, 12.0, 0, 0.0),
]
CROWD = (22, 7, (slice(5, 35), slice(5, 45)))  # image, category, (rows, cols) of the crowd region


def blob_polygon(cx, cy, rx, ry, lobes, depth, vertices=48):
    """Closed curve r(t) = 1 + depth * sin(lobes * t) scaled by (rx, ry), as a COCO polygon."""
    t = np.linspace(0.0, 2.0 * np.pi, vertices, endpoint=False)
    r = 1.0 + depth * np.sin(lobes * t)
    xy = np.stack([cx + rx * r * np.cos(t), cy + ry * r * np.sin(t)], 1)
    return [np.round(xy.reshape(-1), 2).tolist()]


def write_synthetic_gt(directory):
    """Write the synthetic annotation file into ``directory``; returns its path."""
    images = [{"id": i, "height": h, "width": w, "file_name": f"{i}.jpg"} for i, (h, w) in IMAGES.items()]
    annotations = []
    for image_id, cat_id, cx, cy, rx, ry, lobes, depth in OBJECTS:
        h, w = IMAGES[image_id]
        poly = blob_polygon(cx, cy, rx, ry, lobes, depth)
        rle = mask_utils.merge(mask_utils.frPyObjects(poly, h, w))
        annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cat_id,
                            "segmentation": poly, "area": float(mask_utils.area(rle)),
                            "bbox": mask_utils.toBbox(rle).tolist(), "iscrowd": 0})
    image_id, cat_id, (rows, cols) = CROWD
    crowd = np.zeros(IMAGES[image_id], np.uint8)
    crowd[rows, cols] = 1
    rle = mask_utils.encode(np.asfortranarray(crowd))
    annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cat_id,
                        "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                        "area": float(mask_utils.area(rle)), "bbox": mask_utils.toBbox(rle).tolist(),
                        "iscrowd": 1})
    categories = [{"id": c, "name": n, "supercategory": "shape"} for c, n in CATEGORIES.items()]
    path = directory / "instances_synthetic.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return str(path)


def test_synthetic_gt_covers_the_cases_the_tests_need(tmp_path):
    coco = COCO(write_synthetic_gt(tmp_path))
    assert coco.getAnnIds(imgIds=[EMPTY_IMAGE]) == []
    assert coco.getAnnIds(catIds=[20]) == []
    areas = [a["area"] for a in coco.loadAnns(coco.getAnnIds(iscrowd=False))]
    assert min(areas) < 32 ** 2 and max(areas) > 96 ** 2 and any(32 ** 2 < a < 96 ** 2 for a in areas)
    assert len(coco.getAnnIds(iscrowd=True)) == 1
    for ann in coco.loadAnns(coco.getAnnIds()):
        assert coco.annToMask(ann).sum() > 0
