"""Bad input during the MindRecord conversion: counted warnings, one-line errors, interrupted runs."""
import json
import os
import shutil
import signal
import subprocess
import sys

import mindspore.dataset as ds
import numpy as np
import pytest
from mindspore.mindrecord import FileWriter
from pycocotools import mask as mask_utils

from src.demo import toy_data
from src.dataset import ensure_mindrecord, first_shard_path, mindrecord_path
from src.dataset import mindrecord_writer
from src.dataset.mindrecord_writer import convert_coco_to_mindrecord
from src.config import config_from_dict
from src.utils.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_INSTANCES = 4


def square(x, y, size):
    return [[x, y, x + size, y, x + size, y + size, x, y + size]]


def compressed_rle(height, width):
    """A COCO compressed RLE string of a 3x3 square at the top-left corner."""
    mask = np.zeros((height, width), np.uint8)
    mask[:3, :3] = 1
    return mask_utils.encode(np.asfortranarray(mask))["counts"].decode("ascii")


def ann(ann_id, image_id, category_id, bbox, segmentation, area=None, iscrowd=0):
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox,
            "segmentation": segmentation, "area": bbox[2] * bbox[3] if area is None else area, "iscrowd": iscrowd}


def good(ann_id, image_id, category_id, x, y, size):
    return ann(ann_id, image_id, category_id, [x, y, size, size], square(x, y, size))


@pytest.fixture(scope="module")
def bad_coco(tmp_path_factory):
    """Toy images 1..6 with hand-made annotations, plus broken image entries (see the expectations below)."""
    root = str(tmp_path_factory.mktemp("bad"))
    toy_data.write_split(root, "train2017", 6, seed=3, first_image_id=1)
    image_dir = os.path.join(root, "train2017")
    ann_path = os.path.join(root, "annotations", "instances_train2017.json")
    with open(ann_path, encoding="utf-8") as f:
        coco = json.load(f)
    sizes = {i["id"]: (i["height"], i["width"]) for i in coco["images"]}
    real = os.path.join(image_dir, coco["images"][0]["file_name"])
    with open(real, "rb") as f:
        jpeg = f.read()
    with open(os.path.join(image_dir, "garbage.jpg"), "wb") as f:
        f.write(np.random.default_rng(0).bytes(5000))
    with open(os.path.join(image_dir, "truncated.jpg"), "wb") as f:
        f.write(jpeg[:len(jpeg) // 2])
    shutil.copy(real, os.path.join(image_dir, "resized.jpg"))
    h2, w2 = sizes[2]
    coco["images"] += [
        {"id": 100, "file_name": "missing.jpg", "height": 240, "width": 320},
        {"id": 101, "file_name": "garbage.jpg", "height": 240, "width": 320},
        {"id": 102, "file_name": "truncated.jpg", "height": sizes[1][0], "width": sizes[1][1]},
        {"id": 103, "file_name": "resized.jpg", "height": sizes[1][0] + 10, "width": sizes[1][1]},
        {"id": 1, "file_name": "duplicate.jpg", "height": 240, "width": 320},
        {"id": 104, "height": 240, "width": 320},
    ]
    rle_h, rle_w = sizes[6]
    coco["annotations"] = [
        # image 1: an unknown category between two good annotations, and a mask outside the image
        good(1, 1, 2, 10, 10, 30), good(2, 1, 99, 50, 10, 30), good(3, 1, 23, 90, 10, 30),
        ann(4, 1, 5, [1, 1, 4, 4], [[-50, -50, -40, -50, -40, -40]]),
        # image 2: zero-size box, zero area, malformed RLE, a box reaching past the right edge
        ann(5, 2, 2, [10, 10, 0, 20], square(10, 10, 20)), ann(6, 2, 2, [10, 10, 20, 20], square(10, 10, 20), area=0),
        ann(7, 2, 5, [10, 10, 20, 20], {"size": [h2, w2], "counts": [5, 7]}),
        ann(12, 2, 5, [10, 10, 20, 20], {"size": [h2, w2], "counts": "c" * 50}),
        ann(8, 2, 9, [w2 - 20.5, 30, 40, 20], [[w2 - 20.5, 30, w2 + 19.5, 30, w2 + 19.5, 50, w2 - 20.5, 50]]),
        # image 3: a box outside the image, a degenerate polygon, a polygon with one degenerate part
        good(9, 3, 2, w2 + 1000, 10, 20), ann(10, 3, 2, [1, 1, 4, 4], [[1, 1, 5, 5]]),
        ann(11, 3, 14, [10, 10, 20, 20], square(10, 10, 20) + [[60, 60, 70, 70]]),
        # image 4: none; image 5: MAX_INSTANCES + 2 instances of growing size
        *[good(20 + k, 5, 2, 5 + 25 * k, 5, 8 + 2 * k) for k in range(MAX_INSTANCES + 2)],
        # image 6: only a crowd region (uncompressed RLE)
        ann(30, 6, 2, [0, 0, 1, 3], {"size": [rle_h, rle_w], "counts": [0, 3, rle_h * rle_w - 3]}, iscrowd=1),
        ann(32, 6, 5, [0, 0, 3, 3], {"size": [rle_h, rle_w], "counts": compressed_rle(rle_h, rle_w)}, iscrowd=1),
        # an annotation of an image that does not exist
        good(31, 999, 2, 10, 10, 10),
    ]
    with open(ann_path, "w", encoding="utf-8") as f:
        json.dump(coco, f)
    return root, sizes


COMMON_ISSUES = {
    "image_missing": 1, "image_corrupt": 2, "image_size_mismatch": 1, "image_duplicate_id": 1, "image_bad_entry": 1,
    "ann_unknown_image": 1, "ann_unknown_category": 1, "ann_bad_area": 2, "ann_box_clipped": 1, "ann_box_outside": 1,
    "ann_bad_segmentation": 3, "ann_polygon_dropped": 1, "ann_empty_mask": 1,
}


def config(root, mindrecord_dir, **overrides):
    values = {"coco_root": root, "mindrecord_dir": mindrecord_dir, "val_data_type": "train2017",
              "max_instance_count": MAX_INSTANCES, "convert_workers": 1}
    values.update(overrides)
    return config_from_dict(values)


def rows_by_id(path):
    columns = ["image_id", "num_instances", "boxes", "labels", "iscrowd", "mask_lengths"]
    rows = ds.MindDataset(path, columns_list=columns, shuffle=False).create_dict_iterator(output_numpy=True)
    return {int(r["image_id"]): r for r in rows}


def test_training_conversion_skips_and_counts(bad_coco, tmp_path, capsys):
    root, sizes = bad_coco
    meta = convert_coco_to_mindrecord(config(root, str(tmp_path)), True)
    assert meta["issues"] == dict(COMMON_ISSUES, image_no_annotations=2, too_many_instances=1)
    out = capsys.readouterr()
    assert "unknown category id 99" in out.err and "skipped or repaired input" in out.out
    rows = rows_by_id(first_shard_path(config(root, str(tmp_path)), True))
    assert sorted(rows) == [1, 2, 3, 5]
    # the unknown category is dropped, not shifted onto its neighbours: disc (2) -> 1, blob (23) -> 5
    np.testing.assert_array_equal(rows[1]["labels"], [1, 5])
    np.testing.assert_allclose(rows[1]["boxes"], [[10, 10, 40, 40], [90, 10, 120, 40]])
    w2 = sizes[2][1]
    np.testing.assert_array_equal(rows[2]["labels"], [3])
    np.testing.assert_allclose(rows[2]["boxes"], [[w2 - 20.5, 30, w2, 50]])  # clipped, not rounded
    np.testing.assert_array_equal(rows[3]["labels"], [4])
    assert int(rows[5]["num_instances"]) == MAX_INSTANCES  # the largest squares are kept
    np.testing.assert_allclose(rows[5]["boxes"][:, 2] - rows[5]["boxes"][:, 0], [12, 14, 16, 18])


def test_eval_conversion_keeps_images_without_annotations(bad_coco, tmp_path):
    root, _ = bad_coco
    meta = convert_coco_to_mindrecord(config(root, str(tmp_path)), False)
    assert meta["issues"] == COMMON_ISSUES
    rows = rows_by_id(first_shard_path(config(root, str(tmp_path)), False))
    assert sorted(rows) == [1, 2, 3, 4, 5, 6]
    assert int(rows[4]["num_instances"]) == 0
    assert int(rows[5]["num_instances"]) == MAX_INSTANCES + 2  # evaluation keeps all
    np.testing.assert_array_equal(rows[6]["iscrowd"], [1, 1])
    np.testing.assert_array_equal(rows[6]["labels"], [1, 2])


def one_line_error(call, *needles):
    with pytest.raises(UserError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message
    return message


def test_missing_paths_and_empty_results_are_one_line_errors(bad_coco, tmp_path):
    root, _ = bad_coco
    one_line_error(lambda: ensure_mindrecord(config("/no/such/coco", str(tmp_path)), True),
                   "coco_root not found: /no/such/coco")
    one_line_error(lambda: ensure_mindrecord(config("", str(tmp_path)), True), "coco_root")
    one_line_error(lambda: ensure_mindrecord(config(root, ""), True), "mindrecord_dir")
    one_line_error(lambda: ensure_mindrecord(config(root, str(tmp_path), train_data_type="val2017"), True),
                   "annotation file not found", os.path.join(root, "annotations", "instances_val2017.json"))
    bad_json = tmp_path / "broken.json"
    bad_json.write_text('{"images": [', encoding="utf-8")
    one_line_error(lambda: ensure_mindrecord(config(root, str(tmp_path), ann_file=str(bad_json)), False),
                   "is not valid JSON", str(bad_json))
    no_images = tmp_path / "only_missing.json"
    no_images.write_text(json.dumps({"images": [{"id": 1, "file_name": "missing.jpg", "height": 5, "width": 5}],
                                     "annotations": [], "categories": [{"id": 1, "name": "a"}]}), encoding="utf-8")
    one_line_error(lambda: ensure_mindrecord(config(root, str(tmp_path), ann_file=str(no_images)), False),
                   "no usable image", str(no_images))
    assert not [f for f in os.listdir(tmp_path) if "mindrecord" in f.lower()]


def test_conversion_failing_midway_leaves_nothing_and_reruns(bad_coco, tmp_path, monkeypatch):
    root, _ = bad_coco
    cfg = config(root, str(tmp_path))
    original = FileWriter.write_raw_data
    calls = []

    def failing(self, rows, *args, **kwargs):
        calls.append(len(rows))
        if len(calls) == 2:
            # what MindSpore raises when a shard cannot be written: a multi-line C++ report
            raise RuntimeError("Unexpected error. Failed to write the page of a shard.\n\n"
                               "- C++ Call Stack: (For framework developers)\nshard_writer.cc:123 WriteRawData")
        return original(self, rows, *args, **kwargs)

    monkeypatch.setattr(mindrecord_writer, "WRITE_BATCH", 1)
    monkeypatch.setattr(FileWriter, "write_raw_data", failing)
    one_line_error(lambda: ensure_mindrecord(cfg, True),
                   f"cannot write the MindRecord files in {tmp_path}: Unexpected error. Failed to write the page")
    assert os.listdir(tmp_path) == [] and first_shard_path(cfg, True) is None
    monkeypatch.setattr(FileWriter, "write_raw_data", original)
    assert len(rows_by_id(ensure_mindrecord(cfg, True))) == 4


def test_conversion_checks_free_space_before_it_starts(bad_coco, tmp_path, monkeypatch):
    root, _ = bad_coco
    cfg = config(root, str(tmp_path))
    real = shutil.disk_usage
    images = sum(os.path.getsize(os.path.join(root, "train2017", f)) for f in os.listdir(os.path.join(root, "train2017")))
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=images // 2))
    calls = []
    monkeypatch.setattr(mindrecord_writer, "_rows", lambda *a: calls.append(a) or iter(()))
    message = one_line_error(lambda: ensure_mindrecord(cfg, True), f"not enough free space in {tmp_path}")
    assert "MB needed" in message and not calls and os.listdir(tmp_path) == []
    monkeypatch.undo()
    assert len(rows_by_id(ensure_mindrecord(cfg, True))) == 4


KILLED_CONVERSION = """
import sys, time
sys.path.insert(0, {root!r})
from mindspore.mindrecord import FileWriter
from pycocotools import mask as mask_utils
from src.dataset import mindrecord_writer
from src.config import config_from_dict
original = FileWriter.write_raw_data
def write_then_hang(self, rows, *args, **kwargs):
    original(self, rows, *args, **kwargs)
    print("WROTE", flush=True)
    time.sleep(120)
FileWriter.write_raw_data = write_then_hang
mindrecord_writer.WRITE_BATCH = 1
cfg = config_from_dict({{"coco_root": {coco_root!r}, "mindrecord_dir": {mindrecord_dir!r},
                         "max_instance_count": {max_instances}, "convert_workers": 2}})
mindrecord_writer.convert_coco_to_mindrecord(cfg, True)
"""


def test_killed_conversion_is_not_mistaken_for_finished(bad_coco, tmp_path):
    root, _ = bad_coco
    mindrecord_dir = str(tmp_path / "mr")
    script = KILLED_CONVERSION.format(root=ROOT, coco_root=root, mindrecord_dir=mindrecord_dir,
                                      max_instances=MAX_INSTANCES)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    try:
        for line in proc.stdout:
            if line.startswith("WROTE"):
                break
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    leftovers = os.listdir(mindrecord_dir)
    assert leftovers == [".MaskRcnn.mindrecord.partial"]  # a half-written conversion, under its temporary name
    cfg = config(root, mindrecord_dir)
    assert first_shard_path(cfg, True) is None
    path = ensure_mindrecord(cfg, True)
    assert sorted(rows_by_id(path)) == [1, 2, 3, 5]
    assert sorted(os.listdir(mindrecord_dir)) == ["MaskRcnn.mindrecord.meta.json", "MaskRcnn.mindrecord0",
                                                  "MaskRcnn.mindrecord0.db", "classes.json"]


def test_categories_of_another_data_set_are_refused(bad_coco, tmp_path):
    root, _ = bad_coco
    convert_coco_to_mindrecord(config(root, str(tmp_path)), True)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 7, "name": "x"}]}),
                     encoding="utf-8")
    one_line_error(lambda: convert_coco_to_mindrecord(config(root, str(tmp_path), ann_file=str(other)), False),
                   "differ from", "classes.json")


def test_first_shard_is_the_last_name_to_appear(bad_coco, tmp_path, monkeypatch):
    """Ranks that wait for mindrecord_path() see a complete conversion (meta and classes.json first)."""
    root, _ = bad_coco
    cfg = config(root, str(tmp_path))
    renamed = []
    original = os.replace

    def record(source, target):
        renamed.append(os.path.basename(target))
        return original(source, target)

    monkeypatch.setattr(os, "replace", record)
    path = ensure_mindrecord(cfg, True)
    assert path == mindrecord_path(cfg, True) == str(tmp_path / "MaskRcnn.mindrecord0")
    assert renamed[-1] == "MaskRcnn.mindrecord0"
    assert {"MaskRcnn.mindrecord0.db", "classes.json", "MaskRcnn.mindrecord.meta.json"} <= set(renamed[:-1])
