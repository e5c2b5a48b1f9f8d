"""COCO result writing and COCOeval reports on synthetic ground truth."""
import csv
import json
import os
import warnings

import numpy as np
import pytest
from pycocotools.coco import COCO

from src.utils.atomic_io import write_json_atomic
from src.evaluation.coco_metrics import PER_CATEGORY_FILE, SUMMARY_FILE, evaluate_coco, load_results
from src.evaluation.coco_results import (detections_to_coco, ground_truth_as_results, label_to_category_map,
                                         write_coco_results)
from test_evaluation_synthetic_gt import CATEGORIES, EMPTY_IMAGE, IMAGES, write_synthetic_gt


def assert_perfect(stats):
    """Every defined statistic is 1 up to float rounding (-1 marks an area range without ground
    truth), except AR at 1 detection per image: image 11 holds two discs."""
    assert stats.shape == (12,)
    rest = np.delete(stats, 6)
    assert np.all(np.isclose(rest, 1.0, rtol=0, atol=1e-12) | (rest == -1.0)), stats.tolist()
    assert rest[0] == pytest.approx(1.0)


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def test_ground_truth_through_the_writer_scores_perfect_ap(tmp_path):
    ann_file = write_synthetic_gt(tmp_path)
    bbox, segm = ground_truth_as_results(ann_file)
    paths = write_coco_results(bbox, segm, tmp_path / "out")
    assert sorted(os.listdir(tmp_path / "out")) == ["results.bbox.json", "results.segm.json"]  # no temp files
    assert all(isinstance(r["segmentation"]["counts"], str) for r in json.load(open(paths["segm"])))
    stats = evaluate_coco(ann_file, paths, out_dir=tmp_path / "report")
    assert_perfect(stats["bbox"])
    assert_perfect(stats["segm"])

    rows = read_csv(tmp_path / "report" / PER_CATEGORY_FILE)
    assert rows[0] == ["category_id", "category", "bbox_AP", "bbox_AP50", "bbox_AP75",
                       "segm_AP", "segm_AP50", "segm_AP75"]
    assert [(int(r[0]), r[1]) for r in rows[1:]] == sorted(CATEGORIES.items())
    for row in rows[1:]:
        expected = "nan" if CATEGORIES[int(row[0])] == "unused" else "1.0000"
        assert row[2:] == [expected] * 6, row
    summary = (tmp_path / "report" / SUMMARY_FILE).read_text()
    assert "== bbox ==" in summary and "== segm ==" in summary
    assert summary.count("Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 1.000") == 2


def resample_into_box(mask, box, cells):
    """(cells, cells) grid of ``mask`` read at the cell centres of ``box`` (nearest pixel)."""
    x1, y1, x2, y2 = box
    centres = (np.arange(cells) + 0.5) / cells
    ys = np.clip(np.floor(y1 + centres * (y2 - y1)).astype(int), 0, mask.shape[0] - 1)
    xs = np.clip(np.floor(x1 + centres * (x2 - x1)).astype(int), 0, mask.shape[1] - 1)
    return mask[np.ix_(ys, xs)].astype(np.float32)


def fake_network_output(coco, image_id, scale_h, scale_w, cells=112, padding=5):
    """What the network would output for a perfect prediction, padded with invalid slots."""
    anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])) if not a["iscrowd"]]
    label_of = {cat: label for label, cat in label_to_category_map(coco).items()}
    boxes, masks = [], []
    for ann in anns:
        x, y, w, h = ann["bbox"]
        box = np.array([x, y, x + w, y + h])
        boxes.append(box * [scale_w, scale_h, scale_w, scale_h])
        masks.append(resample_into_box(coco.annToMask(ann), box, cells))
    n = len(anns)
    rng = np.random.default_rng(image_id)
    boxes = np.concatenate([np.reshape(boxes, (n, 4)), rng.uniform(0, 50, (padding, 4))]).astype(np.float32)
    masks = np.concatenate([np.reshape(masks, (n, cells, cells)), rng.random((padding, cells, cells))])
    scores = np.concatenate([np.linspace(0.9, 0.5, n), np.zeros(padding)]).astype(np.float32)
    labels = np.array([label_of[a["category_id"]] for a in anns] + [99] * padding, np.int32)
    valid = np.arange(n + padding) < n
    return boxes, scores, labels, valid, masks.astype(np.float32)


def test_network_outputs_map_back_to_the_original_image(tmp_path):
    ann_file = write_synthetic_gt(tmp_path)
    coco = COCO(ann_file)
    mapping = label_to_category_map(coco)
    assert mapping == {1: 3, 2: 7, 3: 12, 4: 20}
    scale_h, scale_w = 1.5, 2.0  # anisotropic, so that swapped axes would show
    bbox, segm = [], []
    for image_id, (h, w) in IMAGES.items():
        boxes, scores, labels, valid, masks = fake_network_output(coco, image_id, scale_h, scale_w)
        meta = np.array([h * scale_h, w * scale_w, scale_h, scale_w], np.float32)
        # the class mapping may also be given as a list: entry label - 1
        b, s = detections_to_coco(image_id, boxes, scores, labels, valid, masks, meta, (h, w),
                                  sorted(CATEGORIES))
        assert len(b) == len(s) == int(valid.sum())
        bbox += b
        segm += s
    stats = evaluate_coco(coco, write_coco_results(bbox, segm, tmp_path))
    assert_perfect(stats["bbox"])
    # Masks went through a 112 x 112 grid (finer than the objects) and back: a half-pixel offset
    # would cost the small objects their matches at the high IoU thresholds.
    assert stats["segm"][2] == 1.0 and stats["segm"][0] > 0.95


def test_boxes_are_clipped_to_the_original_image():
    meta = np.array([60.0, 80.0, 0.5, 0.5])
    boxes = np.array([[-4.0, -2.0, 90.0, 70.0], [10.0, 10.0, 20.0, 30.0]], np.float32)
    bbox, segm = detections_to_coco(5, boxes, [0.9, 0.8], [1, 2], [True, True], np.ones((2, 4, 4)), meta,
                                    (120, 160), {1: 3, 2: 7})
    np.testing.assert_allclose(bbox[0]["bbox"], [0.0, 0.0, 160.0, 120.0])
    np.testing.assert_allclose(bbox[1]["bbox"], [20.0, 20.0, 20.0, 40.0])
    assert [b["category_id"] for b in bbox] == [3, 7] and segm[1]["score"] == pytest.approx(0.8)
    with pytest.raises(KeyError, match="labels \\[2\\] have no COCO category"):
        detections_to_coco(5, boxes, [0.9, 0.8], [1, 2], [True, True], None, meta, (120, 160), {1: 3})


def test_image_without_detections_contributes_nothing(tmp_path):
    meta = np.array([120.0, 160.0, 1.0, 1.0])
    empty = detections_to_coco(EMPTY_IMAGE, np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int32),
                               np.zeros(0, bool), np.zeros((0, 28, 28)), meta, (120, 160), {1: 3})
    all_invalid = detections_to_coco(EMPTY_IMAGE, np.ones((3, 4)), np.zeros(3), np.zeros(3, np.int32),
                                     np.zeros(3, bool), np.ones((3, 28, 28)), meta, (120, 160), {1: 3})
    assert empty == all_invalid == ([], [])
    paths = write_coco_results([], [], tmp_path)
    assert json.load(open(paths["bbox"])) == [] and json.load(open(paths["segm"])) == []


def test_empty_results_give_zero_ap_with_a_warning(tmp_path):
    ann_file = write_synthetic_gt(tmp_path)
    paths = write_coco_results([], [], tmp_path)
    with pytest.warns(UserWarning, match="no detections"):
        stats = evaluate_coco(ann_file, paths, out_dir=tmp_path)
    assert stats["bbox"][0] == 0.0 and stats["segm"][0] == 0.0
    rows = read_csv(tmp_path / PER_CATEGORY_FILE)
    assert len(rows) == 1 + len(CATEGORIES)
    assert all(r[2:] == ["0.0000"] * 6 for r in rows[1:] if r[1] != "unused")


def test_result_validation_names_the_problem(tmp_path):
    coco = COCO(write_synthetic_gt(tmp_path))
    good = {"image_id": 11, "category_id": 3, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.5}
    with pytest.raises(ValueError, match="image_id\\(s\\) \\[999\\] are not in the annotation file"):
        load_results(coco, [dict(good, image_id=999)], "bbox")
    with pytest.raises(ValueError, match="category_id\\(s\\) \\[1\\] are not in the annotation file"):
        load_results(coco, [dict(good, category_id=1)], "bbox")
    with pytest.raises(ValueError, match="entry 0 lacks key\\(s\\) \\['segmentation'\\]"):
        load_results(coco, [good], "segm")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_results(coco, str(tmp_path / "missing.json"), "bbox")
    entries = [good]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_results(coco, entries, "bbox")
    assert entries == [{"image_id": 11, "category_id": 3, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.5}]


def test_failed_write_leaves_previous_file_and_no_temp_file(tmp_path):
    path = tmp_path / "results.bbox.json"
    write_json_atomic(path, [1])
    with pytest.raises(TypeError):
        write_json_atomic(path, [object()])
    assert json.loads(path.read_text()) == [1]
    assert os.listdir(tmp_path) == ["results.bbox.json"]
