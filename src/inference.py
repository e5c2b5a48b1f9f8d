"""Inference helpers shared by eval.py, infer.py, export.py and postprogress.py."""
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


class CocoResultCollector:
    """Collects per-image detections as COCO results, then writes and scores them.

    Shared by eval.py (network outputs) and postprogress.py (raw outputs of an exported model).
    """

    def __init__(self, label_to_category, mask_threshold):
        self.label_to_category = label_to_category
        self.mask_threshold = mask_threshold
        self.bbox = []
        self.segm = []
        self.images = 0
        self.without_detections = 0

    def add(self, image_id, det, img_meta, orig_hw):
        """det: {boxes (D, 4), scores (D,), labels (D,), valid (D,), masks (D, M, M)} of one image."""
        from src.evaluation import detections_to_coco
        boxes, segms = detections_to_coco(int(image_id), det["boxes"], det["scores"], det["labels"], det["valid"],
                                          det["masks"], img_meta, orig_hw, self.label_to_category,
                                          mask_threshold=self.mask_threshold)
        self.bbox.extend(boxes)
        self.segm.extend(segms)
        self.images += 1
        self.without_detections += int(not boxes)

    def finish(self, coco_gt, image_ids, out_dir, with_boundary_ap):
        """Write ``results.pkl.{bbox,segm}.json`` and the tables into out_dir; returns the stats dict
        {'bbox': (12,), 'segm': (12,)[, 'boundary': (12,)]}."""
        import os

        from src.evaluation import boundary_ap, evaluate_coco, write_coco_results
        paths = write_coco_results(self.bbox, self.segm, out_dir, prefix="results.pkl")
        stats = evaluate_coco(coco_gt, paths, out_dir=out_dir, image_ids=image_ids)
        if with_boundary_ap:
            stats["boundary"] = boundary_ap(coco_gt, paths["segm"], image_ids=image_ids,
                                            summary_path=os.path.join(out_dir, "boundary_ap.txt"))
            print(f"Boundary AP (segm, dilation 0.02): {stats['boundary'][0]:.4f}", flush=True)
        print(f"bbox AP {stats['bbox'][0]:.4f}  segm AP {stats['segm'][0]:.4f}  "
              f"({self.images} images, {self.without_detections} without detections; results in {out_dir})",
              flush=True)
        return stats


def eval_inputs(cfg):
    """What eval.py and postprogress.py both need: (mindrecord, coco_gt, image ids, label -> category)."""
    import os

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


def batches(dataset, batch_size, columns):
    """Group single-image dataset rows into fixed-size numpy batches.

    The last batch is padded with copies of its last image; yields (batch dict, real count).
    """
    rows = []
    for row in dataset.create_dict_iterator(num_epochs=1, output_numpy=True):
        rows.append(row)
        if len(rows) == batch_size:
            yield {c: np.concatenate([r[c] for r in rows]) for c in columns}, batch_size
            rows = []
    if rows:
        count = len(rows)
        rows += [rows[-1]] * (batch_size - count)
        yield {c: np.concatenate([r[c] for r in rows]) for c in columns}, count
