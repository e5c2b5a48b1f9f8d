"""Toy COCO -> MindRecord -> pipeline round trip, checked against pycocotools and independent numpy."""
import os

import cv2
import mindspore.dataset as ds
import numpy as np
import pytest
from pycocotools.coco import COCO

from src.demo import toy_data
from src.dataset import (DatasetError, ann_file_path, check_annotations_match, create_maskrcnn_dataset,
                         ensure_mindrecord, first_shard_path, label_to_category, load_class_map, resolve_num_classes)
from src.dataset.mindrecord_writer import convert_coco_to_mindrecord
from src.dataset.transforms import TrainTransform, packed_mask_bytes
from src.config import ConfigError, config_from_dict
from test_mask_targets import source_index

MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)
SMALL = {"img_height": 128, "img_width": 160, "max_instance_count": 8, "num_classes": 0,
         "expand_ratio": 0.0, "flip_ratio": 0.0}


def small_config(root, mindrecord_dir, **overrides):
    values = dict(SMALL, coco_root=root, mindrecord_dir=mindrecord_dir)
    values.update(overrides)
    return config_from_dict(values)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Toy COCO (16 train / 6 val images) converted once with 2 worker processes."""
    root = str(tmp_path_factory.mktemp("toy"))
    toy_data.make_toy_coco(root, num_train=16, num_val=6, seed=1)
    mindrecord_dir = os.path.join(root, "mindrecord")
    cfg = small_config(root, mindrecord_dir, convert_workers=2)
    train_file = ensure_mindrecord(cfg, True)
    eval_file = ensure_mindrecord(cfg, False)
    coco_train = COCO(os.path.join(root, "annotations", "instances_train2017.json"))
    coco_val = COCO(os.path.join(root, "annotations", "instances_val2017.json"))
    return {"root": root, "dir": mindrecord_dir, "train": train_file, "eval": eval_file,
            "coco_train": coco_train, "coco_val": coco_val}


def expected_size(h, w, canvas_h, canvas_w):
    """Keep-ratio rescale restated: long side to the long canvas side, short to short, then fit."""
    scale = min(max(canvas_h, canvas_w) / max(h, w), min(canvas_h, canvas_w) / min(h, w), canvas_h / h, canvas_w / w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def expected_instances(coco, image_id, class_map, new_hw, flip):
    """(boxes on the canvas (n, 4), labels (n,), crowd (n,), full masks) straight from the json."""
    info = coco.imgs[image_id]
    sx, sy = new_hw[1] / info["width"], new_hw[0] / info["height"]
    anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
    boxes = np.array([[x * sx, y * sy, (x + w) * sx, (y + h) * sy] for x, y, w, h in (a["bbox"] for a in anns)],
                     np.float64).reshape(-1, 4)
    if flip:
        boxes[:, [0, 2]] = new_hw[1] - boxes[:, [2, 0]]
    labels = np.array([class_map.label_of(a["category_id"]) for a in anns])
    crowd = np.array([a["iscrowd"] for a in anns], bool)
    return boxes, labels, crowd, [coco.annToMask(a) for a in anns]


def unpack(packed, canvas_h, canvas_w):
    """(G, L) packed GT masks -> (G, canvas_h, canvas_w) uint8."""
    return np.unpackbits(packed, axis=-1)[..., :canvas_h * canvas_w].reshape(packed.shape[:-1] + (canvas_h, canvas_w))


def check_sample(sample, toy, class_map, cfg, flip):
    """Find the source image of one training sample and check every output against it."""
    coco = toy["coco_train"]
    h, w = int(sample["img_metas"][0]), int(sample["img_metas"][1])
    valid_n = int((sample["gt_labels"] > 0).sum())
    matches = []
    for image_id, info in coco.imgs.items():
        if expected_size(info["height"], info["width"], cfg.img_height, cfg.img_width) != (h, w):
            continue
        boxes, labels, crowd, masks = expected_instances(coco, image_id, class_map, (h, w), flip)
        if len(boxes) == valid_n and np.allclose(sample["gt_bboxes"][:valid_n], boxes, atol=1e-3):
            matches.append((image_id, info, boxes, labels, crowd, masks))
    assert len(matches) == 1
    image_id, info, boxes, labels, crowd, masks = matches[0]
    n = len(boxes)
    scale_x, scale_y = w / info["width"], h / info["height"]
    np.testing.assert_allclose(sample["img_metas"], [h, w, scale_y, scale_x], rtol=1e-6)
    np.testing.assert_array_equal(sample["gt_labels"][:n], labels)
    np.testing.assert_array_equal(sample["gt_labels"][n:], 0)
    np.testing.assert_array_equal(sample["gt_valids"][:n], ~crowd)
    assert not sample["gt_valids"][n:].any() and not sample["gt_bboxes"][n:].any()
    canvas = unpack(sample["gt_masks"], cfg.img_height, cfg.img_width)
    assert not canvas[n:].any() and not canvas[:, h:].any() and not canvas[:, :, w:].any()
    # each canvas pixel holds the pycocotools mask's pixel under its centre (integer arithmetic)
    cols, col_tie = source_index(np.arange(w), info["width"], w, 0, flip)
    rows, row_tie = source_index(np.arange(h), info["height"], h, 0, False)
    decided = ~row_tie[:, None] & ~col_tie[None, :]
    for k in range(n):
        if crowd[k]:
            assert not canvas[k].any()
            continue
        np.testing.assert_array_equal(canvas[k, :h, :w][decided], masks[k][np.ix_(rows, cols)][decided])
        assert canvas[k].any()
    # the image: resized source, flipped, normalised RGB, zero padding
    source = cv2.imread(os.path.join(toy["root"], "train2017", info["file_name"]))
    resized = cv2.resize(source, (w, h), interpolation=cv2.INTER_LINEAR)
    if flip:
        resized = resized[:, ::-1]
    expected = (resized[:, :, ::-1].astype(np.float32) - MEAN) / STD
    np.testing.assert_allclose(sample["img"][:, :h, :w], expected.transpose(2, 0, 1), atol=1e-4)
    assert not sample["img"][:, h:, :].any() and not sample["img"][:, :, w:].any()
    return image_id


@pytest.mark.parametrize("flip", [False, True])
def test_train_pipeline_matches_source(toy, flip):
    cfg = small_config(toy["root"], toy["dir"], flip_ratio=1.0 if flip else 0.0)
    class_map = resolve_num_classes(cfg)
    dataset = create_maskrcnn_dataset(cfg, toy["train"], batch_size=2, is_training=True)
    seen = []
    for batch in dataset.create_dict_iterator(output_numpy=True):
        assert batch["img"].shape == (2, 3, 128, 160) and batch["img"].dtype == np.float32
        assert batch["img_metas"].shape == (2, 4) and batch["img_metas"].dtype == np.float32
        assert batch["gt_bboxes"].shape == (2, 8, 4) and batch["gt_bboxes"].dtype == np.float32
        assert batch["gt_labels"].shape == (2, 8) and batch["gt_labels"].dtype == np.int32
        assert batch["gt_valids"].shape == (2, 8) and batch["gt_valids"].dtype == np.bool_
        assert batch["gt_masks"].shape == (2, 8, packed_mask_bytes(128, 160)) and batch["gt_masks"].dtype == np.uint8
        for i in range(2):
            seen.append(check_sample({k: v[i] for k, v in batch.items()}, toy, class_map, cfg, flip))
    with_objects = [i for i in toy["coco_train"].imgs
                    if any(not a["iscrowd"] for a in toy["coco_train"].imgToAnns[i])]
    assert len(seen) == len(set(seen)) == len(with_objects) // 2 * 2


def _raw_rows(path):
    columns = ["image", "image_id", "num_instances", "boxes", "labels", "iscrowd", "mask_lengths", "masks"]
    return list(ds.MindDataset(path, columns_list=columns, shuffle=False).create_dict_iterator(output_numpy=True))


def test_flip_moves_boxes_masks_and_image_together(toy):
    row = max(_raw_rows(toy["train"]), key=lambda r: int(r["num_instances"]))
    args = [row[k] for k in ("image", "num_instances", "boxes", "labels", "iscrowd", "mask_lengths", "masks")]
    plain = TrainTransform(small_config(toy["root"], toy["dir"], flip_ratio=0.0))(*args)
    flipped = TrainTransform(small_config(toy["root"], toy["dir"], flip_ratio=1.0))(*args)
    h, w = int(plain[1][0]), int(plain[1][1])
    np.testing.assert_array_equal(plain[1], flipped[1])
    n = int(row["num_instances"])
    np.testing.assert_allclose(flipped[2][:n, [0, 2]], w - plain[2][:n, [2, 0]], atol=1e-4)
    np.testing.assert_array_equal(flipped[2][:n, [1, 3]], plain[2][:n, [1, 3]])
    np.testing.assert_array_equal(flipped[3], plain[3])
    np.testing.assert_array_equal(unpack(flipped[5], 128, 160)[:, :h, :w], unpack(plain[5], 128, 160)[:, :h, ::-1][:, :, -w:])
    assert plain[5].any()
    np.testing.assert_allclose(flipped[0][:, :h, :w], plain[0][:, :h, ::-1][:, :, -w:], atol=1e-6)


def test_expand_keeps_boxes_masks_and_image_consistent(toy):
    cfg = small_config(toy["root"], toy["dir"], expand_ratio=1.0, flip_ratio=0.5)
    rows = _raw_rows(toy["train"])
    coco = toy["coco_train"]
    transform = TrainTransform(cfg, seed=3)
    expanded = 0
    for row in rows:
        info = coco.imgs[int(row["image_id"])]
        out = transform(*[row[k] for k in ("image", "num_instances", "boxes", "labels", "iscrowd", "mask_lengths",
                                             "masks")])
        img, metas, boxes, _, valids, masks = out
        h, w = int(metas[0]), int(metas[1])
        scale_x, scale_y = float(metas[3]), float(metas[2])
        if scale_x < w / info["width"] - 1e-6:
            expanded += 1
        anns = coco.loadAnns(coco.getAnnIds(imgIds=info["id"]))
        for k, ann in enumerate(anns):
            box = boxes[k]
            assert 0 <= box[0] < box[2] <= w + 1e-3 and 0 <= box[1] < box[3] <= h + 1e-3
            np.testing.assert_allclose(box[2] - box[0], ann["bbox"][2] * scale_x, rtol=1e-4)
            if valids[k]:
                # canvas mask: area = mask area x scale (up to the boundary), inside the box
                canvas = unpack(masks[k], cfg.img_height, cfg.img_width)
                area = int(canvas.sum())
                assert abs(area - ann["area"] * scale_x * scale_y) < 0.08 * ann["area"] * scale_x * scale_y + 4
                ys, xs = np.nonzero(canvas)
                assert box[0] - 1 <= xs.min() and xs.max() + 1 <= box[2] + 1
                assert box[1] - 1 <= ys.min() and ys.max() + 1 <= box[3] + 1
        # the expand canvas is mean-coloured: ~0 after normalisation, and the padding exactly 0
        assert not img[:, h:, :].any() and not img[:, :, w:].any()
    assert 0 < expanded < len(rows)


def test_eval_pipeline_keeps_every_image_in_order(toy):
    cfg = small_config(toy["root"], toy["dir"])
    coco = toy["coco_val"]
    dataset = create_maskrcnn_dataset(cfg, toy["eval"], batch_size=1, is_training=False)
    ids = []
    for batch in dataset.create_dict_iterator(output_numpy=True):
        assert set(batch) == {"img", "img_metas", "image_id", "orig_hw"}
        assert batch["image_id"].dtype == np.int32 and batch["orig_hw"].dtype == np.float32
        info = coco.imgs[int(batch["image_id"][0])]
        np.testing.assert_array_equal(batch["orig_hw"][0], [info["height"], info["width"]])
        h, w = expected_size(info["height"], info["width"], 128, 160)
        np.testing.assert_allclose(batch["img_metas"][0], [h, w, h / info["height"], w / info["width"]], rtol=1e-6)
        assert not batch["img"][0, :, h:, :].any() and not batch["img"][0, :, :, w:].any()
        ids.append(info["id"])
    assert ids == [i["id"] for i in coco.dataset["images"]]


def test_classes_mapping_and_num_classes(toy):
    class_map = load_class_map(toy["dir"])
    assert class_map.category_ids == [2, 5, 9, 14, 23] and class_map.num_classes == 6
    assert [class_map.label_of(c) for c in (2, 5, 9, 14, 23, 3)] == [1, 2, 3, 4, 5, None]
    assert class_map.category_id_of(4) == 14
    cfg = small_config(toy["root"], toy["dir"])
    resolve_num_classes(cfg)
    assert cfg.num_classes == 6 and cfg.coco_classes[1:] == class_map.names
    cfg = small_config(toy["root"], toy["dir"], num_classes=6)
    resolve_num_classes(cfg)
    cfg = small_config(toy["root"], toy["dir"], num_classes=81)
    with pytest.raises(ConfigError, match="'num_classes' is 81 but the data set has 5 categories"):
        resolve_num_classes(cfg)


def test_second_call_reuses_and_stale_conversion_is_redone(toy, tmp_path):
    cfg = small_config(toy["root"], str(tmp_path / "mr"))
    path = ensure_mindrecord(cfg, True)
    mtime = os.path.getmtime(path)
    assert ensure_mindrecord(cfg, True) == path and os.path.getmtime(path) == mtime
    cfg_more = small_config(toy["root"], str(tmp_path / "mr"), max_instance_count=12)
    assert first_shard_path(cfg_more, True) is None  # built for max_instance_count 8
    assert ensure_mindrecord(cfg_more, True) == path
    assert first_shard_path(cfg, True) is None and first_shard_path(cfg_more, True) == path


def test_shards_and_rank_split(toy, tmp_path):
    cfg = small_config(toy["root"], str(tmp_path / "mr"), mindrecord_shards=3)
    meta = convert_coco_to_mindrecord(cfg, True, workers=1, min_shard_bytes=1)
    assert meta["files"] == ["MaskRcnn.mindrecord0", "MaskRcnn.mindrecord1", "MaskRcnn.mindrecord2"]
    first = first_shard_path(cfg, True)
    assert first.endswith("MaskRcnn.mindrecord0")
    total = ds.MindDataset(first, columns_list=["image_id"], shuffle=False).get_dataset_size()
    assert total == meta["num_images"]
    per_rank = [create_maskrcnn_dataset(cfg, first, 1, True, rank_id=r, rank_size=2).get_dataset_size()
                for r in (0, 1)]
    assert per_rank == [(total + 1) // 2] * 2


def test_too_small_for_a_batch(toy):
    cfg = small_config(toy["root"], toy["dir"])
    with pytest.raises(DatasetError, match="fewer than the batch size 100"):
        create_maskrcnn_dataset(cfg, toy["eval"], batch_size=100, is_training=False)


def test_pipeline_keeps_the_largest_instances_when_g_is_smaller(toy):
    row = max(_raw_rows(toy["train"]), key=lambda r: int((r["iscrowd"].reshape(-1) == 0).sum()))
    n = int(row["num_instances"])
    args = [row[k] for k in ("image", "num_instances", "boxes", "labels", "iscrowd", "mask_lengths", "masks")]
    full = TrainTransform(small_config(toy["root"], toy["dir"]))(*args)
    trimmed = TrainTransform(small_config(toy["root"], toy["dir"], max_instance_count=2))(*args)
    assert trimmed[2].shape == (2, 4) and trimmed[5].shape == (2, packed_mask_bytes(128, 160)) and trimmed[4].all()
    valid = np.flatnonzero(full[4][:n])
    areas = unpack(full[5][valid], 128, 160).sum(axis=(1, 2))
    largest = sorted(valid[np.argsort(-areas)[:2]])
    np.testing.assert_allclose(trimmed[2], full[2][largest], atol=1e-6)
    np.testing.assert_array_equal(trimmed[5], full[5][largest])


def test_stretch_resize_without_keep_ratio(toy):
    row = _raw_rows(toy["train"])[0]
    info = toy["coco_train"].imgs[int(row["image_id"])]
    args = [row[k] for k in ("image", "num_instances", "boxes", "labels", "iscrowd", "mask_lengths", "masks")]
    img, metas, boxes, _, _, _ = TrainTransform(small_config(toy["root"], toy["dir"], keep_ratio=False))(*args)
    sy, sx = 128 / info["height"], 160 / info["width"]
    np.testing.assert_allclose(metas, [128, 160, sy, sx], rtol=1e-6)
    n = int(row["num_instances"])
    np.testing.assert_allclose(boxes[:n], row["boxes"].reshape(n, 4) * [sx, sy, sx, sy], rtol=1e-5)
    assert np.abs(img[:, -1, :]).sum() > 0 and np.abs(img[:, :, -1]).sum() > 0  # no padding: it fills the canvas


def test_evaluation_helpers(toy, tmp_path):
    cfg = small_config(toy["root"], toy["dir"])
    ann_file = ann_file_path(cfg)
    assert ann_file == os.path.join(toy["root"], "annotations", "instances_val2017.json")
    coco = toy["coco_val"]
    assert check_annotations_match(coco, toy["dir"], ann_file) == [i["id"] for i in coco.dataset["images"]]
    assert label_to_category(toy["dir"]) == {1: 2, 2: 5, 3: 9, 4: 14, 5: 23}
    with pytest.raises(DatasetError, match="was converted from"):
        check_annotations_match(coco, toy["dir"], os.path.join(toy["root"], "annotations", "instances_train2017.json"))
    with pytest.raises(DatasetError, match="no complete evaluation MindRecord"):
        check_annotations_match(coco, str(tmp_path), ann_file)


def test_each_images_draws_do_not_depend_on_the_order_of_the_images(toy):
    """The map's worker threads share one transform and call it in an order that varies between
    runs: the k-th visit of an image must get the same augmentation whatever ran before it."""
    cfg = small_config(toy["root"], toy["dir"], expand_ratio=1.0, flip_ratio=0.5)
    rows = _raw_rows(toy["train"])
    keys = ("image", "num_instances", "boxes", "labels", "iscrowd", "mask_lengths", "masks")

    def two_epochs(order, seed=7):
        transform, out = TrainTransform(cfg, seed=seed), {}
        for _ in range(2):
            for i in order:
                out.setdefault(i, []).append(transform(*[rows[i][k] for k in keys]))
        return out

    forward = two_epochs(range(len(rows)))
    backward = two_epochs(reversed(range(len(rows))))
    for i, visits in forward.items():
        for a, b in zip(visits, backward[i]):
            for x, y in zip(a, b):
                np.testing.assert_array_equal(x, y)
    # the draws are random: they differ between an image's visits and with the seed
    def geometry(out):
        return [np.concatenate([metas, boxes.ravel()]) for _, metas, boxes, _, _, _ in out]
    assert any(not np.array_equal(*geometry(visits)) for visits in forward.values())
    other = two_epochs(range(len(rows)), seed=8)
    assert any(not np.array_equal(geometry(forward[i])[0], geometry(other[i])[0]) for i in forward)
