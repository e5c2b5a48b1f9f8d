"""Evaluation library (numpy, OpenCV and pycocotools only; no MindSpore).

* ``paste_masks``: per-box mask grids -> full-image masks (bilinear, detectron2 convention).
* ``coco_results``: network outputs -> COCO box / RLE mask results and result json files.
* ``coco_metrics``: COCOeval for 'bbox' and 'segm', summary text and per-category AP CSV.
* ``boundary_iou``: Boundary IoU and Boundary AP (Cheng et al. 2021).
* ``result_collector``: per-image detections -> result files and all of the above.
"""
from src.evaluation.boundary_iou import BoundaryCOCOeval, boundary_ap, boundary_iou, boundary_width, mask_boundary
from src.evaluation.coco_metrics import (STAT_NAMES, evaluate_coco, load_results, per_category_ap,
                                         run_cocoeval)
from src.evaluation.coco_results import (detections_to_coco, encode_mask, ground_truth_as_results,
                                         label_to_category_map, load_coco_gt, write_coco_results)
from src.evaluation.paste_masks import paste_masks
from src.evaluation.result_collector import CocoResultCollector

__all__ = [
    "BoundaryCOCOeval", "boundary_ap", "boundary_iou", "boundary_width", "mask_boundary",
    "STAT_NAMES", "evaluate_coco", "load_results", "per_category_ap", "run_cocoeval",
    "detections_to_coco", "encode_mask", "ground_truth_as_results", "label_to_category_map",
    "load_coco_gt", "write_coco_results",
    "paste_masks",
    "CocoResultCollector",
]
