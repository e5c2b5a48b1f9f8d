"""The synthetic toy COCO data set: layout, valid COCO content, occlusion, determinism."""
import json
import os

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from src.demo import toy_data


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("toy"))
    toy_data.make_toy_coco(root, num_train=40, num_val=10, seed=0)
    return root


def _files(root):
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(folder, name), "rb") as f:
                out[os.path.relpath(os.path.join(folder, name), root)] = f.read()
    return out


def test_layout_and_coco_content(toy_root):
    for split, count in (("train2017", 40), ("val2017", 10)):
        coco = COCO(os.path.join(toy_root, "annotations", f"instances_{split}.json"))
        assert len(coco.getImgIds()) == count
        cat_ids = sorted(coco.getCatIds())
        assert cat_ids == [cid for cid, _ in toy_data.CATEGORIES]
        assert cat_ids != list(range(1, len(cat_ids) + 1))  # deliberately not contiguous
        for info in coco.loadImgs(coco.getImgIds()):
            img = cv2.imread(os.path.join(toy_root, split, info["file_name"]))
            assert img is not None and img.shape[:2] == (info["height"], info["width"])
        for ann in coco.loadAnns(coco.getAnnIds()):
            info = coco.imgs[ann["image_id"]]
            assert all(isinstance(v, float) for v in ann["bbox"]) and ann["bbox"][2] > 0 and ann["bbox"][3] > 0
            mask = coco.annToMask(ann)
            assert ann["area"] == float(mask.sum()) > 0
            if ann["iscrowd"]:
                assert isinstance(ann["segmentation"], dict) and ann["segmentation"]["size"] == [info["height"],
                                                                                                   info["width"]]
            else:
                assert isinstance(ann["segmentation"], list)
                assert all(len(p) >= 6 and len(p) % 2 == 0 for p in ann["segmentation"])
                # the bbox is the polygon extent and contains the mask
                ys, xs = np.nonzero(mask)
                x, y, w, h = ann["bbox"]
                assert xs.min() >= np.floor(x) - 1 and xs.max() + 1 <= np.ceil(x + w) + 1
                assert ys.min() >= np.floor(y) - 1 and ys.max() + 1 <= np.ceil(y + h) + 1


def test_variety_crowd_and_empty_images(toy_root):
    coco = COCO(os.path.join(toy_root, "annotations", "instances_train2017.json"))
    anns = coco.loadAnns(coco.getAnnIds())
    assert {a["category_id"] for a in anns} == {cid for cid, _ in toy_data.CATEGORIES}
    assert any(a["iscrowd"] for a in anns)
    sizes = {(i["height"], i["width"]) for i in coco.loadImgs(coco.getImgIds())}
    assert len(sizes) > 10  # sizes vary around 320x240


def test_occluded_objects_are_annotated_by_their_visible_part(toy_root):
    """Visible masks of one image are disjoint (up to polygon boundary pixels)."""
    coco = COCO(os.path.join(toy_root, "annotations", "instances_train2017.json"))
    overlapping_scenes = 0
    for image_id in coco.getImgIds():
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id)) if not a["iscrowd"]]
        masks = [coco.annToMask(a).astype(bool) for a in anns]
        for i in range(len(masks)):
            for j in range(i + 1, len(masks)):
                overlap = (masks[i] & masks[j]).sum()
                assert overlap <= 0.05 * min(masks[i].sum(), masks[j].sum()) + 3
        boxes = [a["bbox"] for a in anns]
        if any(_boxes_overlap(a, b) for k, a in enumerate(boxes) for b in boxes[k + 1:]):
            overlapping_scenes += 1
    assert overlapping_scenes >= 5  # occlusions do happen


def _boxes_overlap(a, b):
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def test_deterministic_for_a_seed(tmp_path):
    a, b, c = (str(tmp_path / name) for name in "abc")
    toy_data.make_toy_coco(a, 6, 3, seed=5)
    toy_data.make_toy_coco(b, 6, 3, seed=5)
    toy_data.make_toy_coco(c, 6, 3, seed=6)
    files_a, files_b, files_c = _files(a), _files(b), _files(c)
    assert files_a == files_b
    assert files_a.keys() == files_c.keys() and files_a != files_c


def test_cli(tmp_path, capsys):
    out = str(tmp_path / "cli")
    assert toy_data.main(["--out", out, "--train", "3", "--val", "2", "--seed", "1", "--width", "160",
                          "--height", "120"]) == 0
    printed = capsys.readouterr().out
    assert "toy train2017: 3 images" in printed and "images/s" in printed
    with open(os.path.join(out, "annotations", "instances_val2017.json"), encoding="utf-8") as f:
        val = json.load(f)
    assert len(val["images"]) == 2 and all(i["id"] > toy_data.VAL_ID_OFFSET for i in val["images"])
    with pytest.raises(SystemExit):
        toy_data.main(["--out", out, "--train", "-1"])
