"""Per-image detections -> COCO result files and metrics, for eval.py (network outputs) and
postprogress.py (raw outputs of an exported model)."""
import os

from src.evaluation.boundary_iou import boundary_ap
from src.evaluation.coco_metrics import evaluate_coco
from src.evaluation.coco_results import detections_to_coco, write_coco_results


class CocoResultCollector:
    """Collects per-image detections as COCO results, then writes and scores them.

    Args:
        label_to_category: {contiguous label: COCO category id}; mask_threshold: mask probability threshold.
    """

    def __init__(self, label_to_category, mask_threshold):
        self.label_to_category = label_to_category
        self.mask_threshold = mask_threshold
        self.bbox = []
        self.segm = []
        self.images = 0
        self.without_detections = 0

    def add(self, image_id, det, img_meta, orig_hw):
        """det: {boxes (D, 4), scores (D,), labels (D,), valid (D,), masks (D, M, M)} of one image;
        img_meta (4,) = (h, w, scale_h, scale_w) on the canvas; orig_hw (2,) of the original image."""
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
