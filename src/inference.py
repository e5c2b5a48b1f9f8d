"""Running the detector: building it with its weights, batching inputs, reading its outputs.

Shared by eval.py, infer.py, export.py and postprogress.py.
"""
import os

import numpy as np

import mindspore as ms

from src.checkpoint_utils import load_network_checkpoint
from src.maskrcnn_pointrend_r50 import MaskRcnnPointRend

OUTPUT_NAMES = ("boxes", "scores", "labels", "valid", "masks")


def build_detector(cfg, checkpoint_path, batch_size, log=print):
    """Inference network for ``batch_size`` images with weights from ``checkpoint_path``."""
    net = MaskRcnnPointRend(cfg, batch_size)
    net.set_train(False)
    if checkpoint_path:
        load_network_checkpoint(net, checkpoint_path, log=log)
    return net


def outputs_to_numpy(outputs):
    """Network outputs -> {name: numpy array} with the batch as first axis."""
    return {name: (x.asnumpy() if isinstance(x, ms.Tensor) else np.asarray(x)) for name, x in zip(OUTPUT_NAMES, outputs)}


def split_images(outputs, count=None):
    """{name: (B, ...)} -> list of per-image {name: (...)} (the first ``count`` images)."""
    batch = len(outputs["boxes"]) if count is None else count
    return [{name: value[i] for name, value in outputs.items()} for i in range(batch)]


def pad_batch(items, batch_size):
    """``items`` (1..batch_size of them) filled up to ``batch_size`` with copies of the last one:
    the graph has a fixed batch, and the outputs of the copies are dropped."""
    return list(items) + [items[-1]] * (batch_size - len(items))


def batches(dataset, batch_size, columns):
    """Group single-image dataset rows into fixed-size numpy batches.

    The last batch is padded (``pad_batch``); yields (batch dict, real count).
    """
    rows = []
    for row in dataset.create_dict_iterator(num_epochs=1, output_numpy=True):
        rows.append(row)
        if len(rows) == batch_size:
            yield {c: np.concatenate([r[c] for r in rows]) for c in columns}, batch_size
            rows = []
    if rows:
        padded = pad_batch(rows, batch_size)
        yield {c: np.concatenate([r[c] for r in padded]) for c in columns}, len(rows)


def eval_inputs(cfg):
    """What eval.py and postprogress.py both need: (mindrecord, coco_gt, image ids, label -> category)."""
    from src.dataset import (ann_file_path, check_annotations_match, ensure_mindrecord, label_to_category,
                             resolve_num_classes)
    from src.evaluation import load_coco_gt
    mindrecord = ensure_mindrecord(cfg, is_training=False)
    mindrecord_dir = os.path.dirname(mindrecord)
    resolve_num_classes(cfg, mindrecord_dir)
    ann_file = ann_file_path(cfg)
    coco_gt = load_coco_gt(ann_file)
    image_ids = check_annotations_match(coco_gt, mindrecord_dir, ann_file)
    return mindrecord, coco_gt, image_ids, label_to_category(mindrecord_dir)
