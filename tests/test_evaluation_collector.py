"""Result collection with worker processes gives exactly what collection in the main process gives."""
import json
import os

import numpy as np
import pytest

from src.evaluation import CocoResultCollector, detections_to_coco
from src.evaluation import result_collector
from test_evaluation_synthetic_gt import write_synthetic_gt

LABELS = {1: 3, 2: 7, 3: 11}


def random_detections(rng, num, side=28, canvas=(96, 128)):
    """One image's network outputs: some valid detections with random boxes and mask grids."""
    h, w = canvas
    x1 = rng.uniform(0, w - 20, num)
    y1 = rng.uniform(0, h - 20, num)
    boxes = np.stack([x1, y1, x1 + rng.uniform(4, 40, num), y1 + rng.uniform(4, 40, num)], 1).astype(np.float32)
    return {"boxes": boxes, "scores": rng.uniform(0, 1, num).astype(np.float32),
            "labels": rng.integers(1, 4, num).astype(np.int32), "valid": rng.uniform(0, 1, num) > 0.2,
            "masks": rng.uniform(0, 1, (num, side, side)).astype(np.float32)}


def images(count=9, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        det = random_detections(rng, 10)
        if i == 4:
            det["valid"][:] = False  # an image without detections
        scale = rng.uniform(0.5, 2.0)
        out.append((100 + i, det, np.array([96, 128, scale, scale], np.float32),
                    np.array([round(96 / scale), round(128 / scale)], np.float32)))
    return out


@pytest.mark.parametrize("workers", [1, 2])
def test_workers_give_the_same_results_in_the_same_order(workers, monkeypatch):
    monkeypatch.setattr(result_collector, "PENDING_PER_WORKER", 1)  # the bound is reached and drained on the way
    serial = CocoResultCollector(LABELS, 0.5)
    parallel = CocoResultCollector(LABELS, 0.5, workers=workers)
    for args in images():
        serial.add(*args)
        parallel.add(*args)
        assert len(parallel._pending) <= workers
    parallel.wait()
    assert parallel.bbox == serial.bbox and parallel.segm == serial.segm
    assert (parallel.images, parallel.without_detections) == (serial.images, serial.without_detections) == (9, 1)
    # in image order, as detections_to_coco gives them one image after the other
    expected = []
    for image_id, det, meta, hw in images():
        expected += detections_to_coco(image_id, det["boxes"], det["scores"], det["labels"], det["valid"],
                                       det["masks"], meta, hw, LABELS)[1]
    assert parallel.segm == expected and len(expected) > 40


def test_eval_numbers_and_files_are_identical_with_workers(tmp_path):
    ann_file = write_synthetic_gt(tmp_path)
    with open(ann_file, encoding="utf-8") as f:
        gt = json.load(f)
    labels = {i + 1: c["id"] for i, c in enumerate(sorted(gt["categories"], key=lambda c: c["id"]))}
    rng = np.random.default_rng(1)
    stats, files = [], []
    for workers in (0, 2):
        collector = CocoResultCollector(labels, 0.5, workers=workers)
        rng = np.random.default_rng(1)
        for image in gt["images"]:
            det = random_detections(rng, 8, canvas=(image["height"], image["width"]))
            det["labels"] = rng.integers(1, len(labels) + 1, 8).astype(np.int32)
            collector.add(image["id"], det, np.array([image["height"], image["width"], 1, 1], np.float32),
                          np.array([image["height"], image["width"]], np.float32))
        out = tmp_path / f"out{workers}"
        stats.append(collector.finish(ann_file, [i["id"] for i in gt["images"]], str(out), with_boundary_ap=True))
        files.append({name: (out / name).read_bytes() for name in sorted(os.listdir(out))})
    assert files[0] == files[1] and len(files[0]) == 5
    for key in ("bbox", "segm", "boundary"):
        np.testing.assert_array_equal(stats[0][key], stats[1][key])
    assert stats[0]["segm"][0] >= 0.0  # a defined AP, not -1: the comparison is about real numbers
