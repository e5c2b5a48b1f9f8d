"""Where the data lives: source paths, MindRecord file names, and the completion marker (meta file).

Layout in ``cfg.mindrecord_dir``:
    MaskRcnn.mindrecord0..N-1 (+ .db)     training rows, N shards (the first is always ...mindrecord0)
    MaskRcnn_eval.mindrecord (+ .db)      evaluation rows (one shard, every decodable image)
    MaskRcnn*.mindrecord.meta.json        files, counts and source of a finished conversion
    classes.json                          category id <-> label mapping (class_map.py)

A split counts as converted only when its meta file exists and every file it names exists; the
first shard is the last name to appear, so waiting for it is waiting for the whole conversion.
"""
import json
import os

from src.dataset.class_map import classes_path, load_class_map
from src.config import ConfigError
from src.dataset.errors import DatasetError

TRAIN_FILE = "MaskRcnn.mindrecord"
EVAL_FILE = "MaskRcnn_eval.mindrecord"
META_SUFFIX = ".meta.json"
META_FORMAT = 1


def split_name(is_training):
    return "train" if is_training else "eval"


def mindrecord_prefix(cfg, is_training):
    """``mindrecord_dir/MaskRcnn[_eval].mindrecord``, the FileWriter base name of a split."""
    if not cfg.mindrecord_dir:
        raise ConfigError("config key 'mindrecord_dir' is empty: set it to a folder for the MindRecord files")
    return os.path.join(cfg.mindrecord_dir, TRAIN_FILE if is_training else EVAL_FILE)


def mindrecord_path(cfg, is_training):
    """The first shard's path (it may not exist yet): ``...MaskRcnn.mindrecord0`` / ``...MaskRcnn_eval.mindrecord``."""
    prefix = mindrecord_prefix(cfg, is_training)
    return prefix + "0" if is_training else prefix


def source_paths(cfg, is_training):
    """(annotation file, image folder) of the training or evaluation split.

    Evaluation uses ``cfg.ann_file`` when set. Raises DatasetError naming the missing path.
    """
    if not cfg.coco_root:
        raise ConfigError("config key 'coco_root' is empty: set it to the COCO folder (with annotations/ and images)")
    if not os.path.isdir(cfg.coco_root):
        raise DatasetError(f"coco_root not found: {cfg.coco_root}")
    split = cfg.train_data_type if is_training else cfg.val_data_type
    if not is_training and cfg.ann_file:
        ann_file = cfg.ann_file
    else:
        ann_file = os.path.join(cfg.coco_root, cfg.instance_set.format(split))
    return ann_file, os.path.join(cfg.coco_root, split)


def ann_file_path(cfg):
    """The evaluation annotation file: ``cfg.ann_file``, else coco_root/instance_set of val_data_type."""
    if cfg.ann_file:
        return cfg.ann_file
    return source_paths(cfg, False)[0]


def read_meta(prefix):
    """The meta dict of a complete conversion of ``prefix``, or None (missing, malformed or files missing)."""
    try:
        with open(prefix + META_SUFFIX, encoding="utf-8") as f:
            meta = json.load(f)
        files = meta["files"] + meta["index_files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    folder = os.path.dirname(prefix)
    if meta.get("format") != META_FORMAT or not meta["files"]:
        return None
    if not all(os.path.isfile(os.path.join(folder, name)) for name in files):
        return None
    return meta


def stale_reason(meta, cfg, is_training):
    """Why a complete conversion no longer matches the config/source, or None if it does."""
    if is_training and meta.get("max_instance_count") != cfg.max_instance_count:
        return f"it keeps {meta.get('max_instance_count')} instances per image, config max_instance_count is " \
               f"{cfg.max_instance_count}"
    try:
        ann_file, _ = source_paths(cfg, is_training)
        size = os.path.getsize(ann_file)
    except (DatasetError, OSError):
        return None  # the source is gone (e.g. only the MindRecord was copied): use what exists
    if size != meta.get("annotation_bytes"):
        return f"{ann_file} changed since the conversion ({meta.get('annotation_bytes')} -> {size} bytes)"
    return None


def first_shard_path(cfg, is_training):
    """Path of the first shard of a complete, up-to-date conversion, or None."""
    prefix = mindrecord_prefix(cfg, is_training)
    meta = read_meta(prefix)
    if meta is None or stale_reason(meta, cfg, is_training) is not None:
        return None
    return os.path.join(os.path.dirname(prefix), meta["files"][0])


def check_annotations_match(coco_gt, mindrecord_dir, ann_file):
    """Check that the evaluation MindRecord in ``mindrecord_dir`` was made from ``ann_file``.

    Args:
        coco_gt: pycocotools ``COCO`` of ``ann_file``.
    Returns:
        the image ids stored in the MindRecord (file order): the images to evaluate. Images the
        conversion skipped (missing or corrupt files) are not among them.
    Raises:
        DatasetError (one line) when categories, annotation file or image ids disagree.
    """
    prefix = os.path.join(mindrecord_dir, EVAL_FILE)
    meta = read_meta(prefix)
    if meta is None:
        raise DatasetError(f"no complete evaluation MindRecord {prefix} (convert it first)")
    class_map = load_class_map(mindrecord_dir)
    gt_category_ids = sorted(coco_gt.getCatIds())
    if gt_category_ids != class_map.category_ids:
        raise DatasetError(f"the categories of {ann_file} ({len(gt_category_ids)}) differ from "
                        f"{classes_path(mindrecord_dir)} ({len(class_map.category_ids)})")
    size = os.path.getsize(ann_file) if os.path.isfile(ann_file) else None
    if size != meta["annotation_bytes"]:
        raise DatasetError(f"{prefix} was converted from {meta['annotation_file']} ({meta['annotation_bytes']} bytes), "
                        f"not from {ann_file} ({size} bytes); delete it to convert again")
    unknown = sorted(set(meta["image_ids"]) - set(coco_gt.getImgIds()))
    if unknown:
        raise DatasetError(f"{prefix} holds {len(unknown)} image ids that {ann_file} does not list, e.g. {unknown[:3]}")
    return list(meta["image_ids"])
