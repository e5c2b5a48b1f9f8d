"""COCO-format data: MindRecord conversion, class mapping and the MindSpore input pipeline.

Public API (imported lazily: MindSpore takes seconds to import, and only the pipeline and the
MindRecord writing need it):
    ensure_mindrecord(cfg, is_training) -> first shard path (converts when missing or stale)
    convert_coco_to_mindrecord(cfg, is_training, workers=None) -> meta dict
    mindrecord_path(cfg, is_training) -> the first shard's path (it appears last)
    first_shard_path(cfg, is_training) -> path of a complete, up-to-date conversion, or None
    ann_file_path(cfg) -> the evaluation annotation file
    check_annotations_match(coco_gt, mindrecord_dir, ann_file) -> image ids to evaluate
    create_maskrcnn_dataset(cfg, mindrecord_file, batch_size, is_training, rank_id=0, rank_size=1,
                            num_parallel_workers=2)
    load_class_map(mindrecord_dir) -> ClassMap; label_to_category(mindrecord_dir) -> {label: id}
    resolve_num_classes(cfg, mindrecord_dir=None) -> ClassMap (sets cfg.num_classes, cfg.coco_classes)
    TRAIN_COLUMNS, EVAL_COLUMNS: the columns of a training / evaluation batch, in network input order
    DatasetError: one-line input errors
"""
import importlib

_EXPORTS = {
    "DatasetError": "src.dataset.errors",
    "ClassMap": "src.dataset.class_map",
    "load_class_map": "src.dataset.class_map",
    "label_to_category": "src.dataset.class_map",
    "resolve_num_classes": "src.dataset.class_map",
    "ann_file_path": "src.dataset.layout",
    "check_annotations_match": "src.dataset.layout",
    "first_shard_path": "src.dataset.layout",
    "mindrecord_path": "src.dataset.layout",
    "convert_coco_to_mindrecord": "src.dataset.mindrecord_writer",
    "ensure_mindrecord": "src.dataset.mindrecord_writer",
    "create_maskrcnn_dataset": "src.dataset.pipeline",
    "TRAIN_COLUMNS": "src.dataset.pipeline",
    "EVAL_COLUMNS": "src.dataset.pipeline",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'src.dataset' has no attribute '{name}'")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
