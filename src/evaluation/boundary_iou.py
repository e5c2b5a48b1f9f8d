"""Boundary IoU and Boundary AP (Cheng et al., "Boundary IoU: Improving Object-Centric Image
Segmentation Evaluation", CVPR 2021).

The boundary region of a mask G is ``G_d = G - erode(G, d)``: the mask pixels within distance d of
its contour, where d = round(dilation_ratio * image diagonal), at least 1 pixel. The erosion is d
iterations of a 3x3 square (i.e. one (2d+1) x (2d+1) square) on the mask padded with one pixel of
zeros, so the image border counts as contour: a mask pixel closer than d + 1 pixels (Chebyshev)
to the image edge is always boundary.

Boundary IoU of G and P is |G_d & P_d| / |G_d | P_d|. Boundary AP is COCO mask AP with the IoU of
every (detection, ground truth) pair replaced by min(mask IoU, boundary IoU).

Crowd ground truth keeps pycocotools' crowd IoU (intersection over the detection's area) on the
masks. A crowd region is not an object outline to be traced: COCOeval only uses it to ignore
detections that fall inside it, and a boundary criterion would stop ignoring correct detections in
crowds just because the crowd outline differs from theirs.
"""
import functools
import math

import cv2
import numpy as np
import pycocotools.mask as mask_utils
from pycocotools.cocoeval import COCOeval

from src.utils.atomic_io import write_text_atomic
from src.evaluation.coco_metrics import load_results, run_cocoeval
from src.evaluation.coco_results import load_coco_gt

_KERNEL = np.ones((3, 3), np.uint8)


def boundary_width(image_hw, dilation_ratio=0.02):
    """Boundary width d in pixels for an image of size (H, W): round(ratio * diagonal), >= 1."""
    return max(int(round(dilation_ratio * math.hypot(image_hw[0], image_hw[1]))), 1)


class _BoundaryRegion:
    """Boundary pixels of one mask, stored as a crop of the mask's bounding box.

    Erosion is local, so eroding the tight crop padded with one zero pixel gives exactly the
    full-image result: outside the crop the mask is 0 anyway. This keeps Boundary AP memory and
    time proportional to the object sizes, not to the image size.
    """

    __slots__ = ("y0", "x0", "region", "area")

    def __init__(self, mask, width):
        """mask: (H, W) binary array; width: boundary width d in pixels."""
        rows = np.flatnonzero(np.any(mask, axis=1))
        cols = np.flatnonzero(np.any(mask, axis=0))
        if rows.size == 0:
            self.y0, self.x0, self.region, self.area = 0, 0, np.zeros((0, 0), bool), 0
            return
        self.y0, self.x0 = int(rows[0]), int(cols[0])
        crop = np.ascontiguousarray(mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1], dtype=np.uint8)
        padded = cv2.copyMakeBorder(crop, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
        eroded = cv2.erode(padded, _KERNEL, iterations=width)[1:-1, 1:-1]
        self.region = (crop > 0) & (eroded == 0)
        self.area = int(np.count_nonzero(self.region))

    def iou(self, other):
        """Boundary IoU with another region of the same image; 0 when both are empty."""
        y0, x0 = max(self.y0, other.y0), max(self.x0, other.x0)
        y1 = min(self.y0 + self.region.shape[0], other.y0 + other.region.shape[0])
        x1 = min(self.x0 + self.region.shape[1], other.x0 + other.region.shape[1])
        inter = 0
        if y1 > y0 and x1 > x0:
            inter = int(np.count_nonzero(
                self.region[y0 - self.y0:y1 - self.y0, x0 - self.x0:x1 - self.x0]
                & other.region[y0 - other.y0:y1 - other.y0, x0 - other.x0:x1 - other.x0]))
        union = self.area + other.area - inter
        return inter / union if union else 0.0


def mask_boundary(mask, dilation_ratio=0.02):
    """Boundary region G - erode(G, d) of a (H, W) binary mask, as a (H, W) uint8 {0, 1} array."""
    mask = np.asarray(mask)
    boundary = _BoundaryRegion(mask, boundary_width(mask.shape, dilation_ratio))
    out = np.zeros(mask.shape, np.uint8)
    h, w = boundary.region.shape
    out[boundary.y0:boundary.y0 + h, boundary.x0:boundary.x0 + w] = boundary.region
    return out


def boundary_iou(gt_mask, dt_mask, dilation_ratio=0.02):
    """Boundary IoU of two (H, W) binary masks of the same image; 0.0 if both are empty."""
    gt_mask, dt_mask = np.asarray(gt_mask), np.asarray(dt_mask)
    if gt_mask.shape != dt_mask.shape or gt_mask.ndim != 2:
        raise ValueError(f"boundary_iou: masks must be 2-D of equal shape, got {gt_mask.shape} and {dt_mask.shape}")
    width = boundary_width(gt_mask.shape, dilation_ratio)
    return _BoundaryRegion(gt_mask, width).iou(_BoundaryRegion(dt_mask, width))


class BoundaryCOCOeval(COCOeval):
    """COCOeval for masks with IoU = min(mask IoU, boundary IoU) for non-crowd ground truth.

    Everything else (matching, crowd handling, area ranges, accumulation, summary) is
    pycocotools' 'segm' protocol unchanged.
    """

    def __init__(self, coco_gt, coco_dt, iou_type="segm", dilation_ratio=0.02):
        if iou_type != "segm":
            raise ValueError(f"Boundary AP is defined for iou_type 'segm', got {iou_type!r}")
        super().__init__(coco_gt, coco_dt, "segm")
        self.dilation_ratio = dilation_ratio

    def _pair_lists(self, img_id, cat_id):
        """The ground truths and detections in the order of ``COCOeval.computeIoU``'s matrix."""
        p = self.params
        if p.useCats:
            gts, dts = self._gts[img_id, cat_id], self._dts[img_id, cat_id]
        else:
            gts = [g for c in p.catIds for g in self._gts[img_id, c]]
            dts = [d for c in p.catIds for d in self._dts[img_id, c]]
        order = np.argsort([-d["score"] for d in dts], kind="mergesort")
        return gts, [dts[i] for i in order[:p.maxDets[-1]]]

    def _region(self, ann):
        rle = ann["segmentation"]  # COCOeval._prepare turned every segmentation into RLE
        return _BoundaryRegion(mask_utils.decode(rle), boundary_width(rle["size"], self.dilation_ratio))

    def computeIoU(self, imgId, catId):  # noqa: N802 (pycocotools' method name)
        ious = super().computeIoU(imgId, catId)
        if len(ious) == 0:
            return ious
        gts, dts = self._pair_lists(imgId, catId)
        if ious.shape != (len(dts), len(gts)):
            raise RuntimeError(f"image {imgId}, category {catId}: IoU matrix {ious.shape} does not match "
                               f"{len(dts)} detections x {len(gts)} ground truths")
        # Each boundary is computed once, and only for instances in a pair that overlaps at all
        # (a zero mask IoU already is the minimum).
        gt_regions, dt_regions = {}, {}
        for d, g in zip(*np.nonzero(ious > 0)):
            if gts[g].get("iscrowd", 0):
                continue
            if g not in gt_regions:
                gt_regions[g] = self._region(gts[g])
            if d not in dt_regions:
                dt_regions[d] = self._region(dts[d])
            ious[d, g] = min(ious[d, g], dt_regions[d].iou(gt_regions[g]))
        return ious


def boundary_ap(coco_gt, segm_results, dilation_ratio=0.02, image_ids=None, summary_path=None):
    """Boundary AP of mask results.

    Args:
        coco_gt: annotation file path or ``COCO`` object.
        segm_results: COCO mask result json path or list of result dicts.
        dilation_ratio: boundary width as a fraction of the image diagonal (0.02 in the paper).
        image_ids: images to evaluate; None for all images of the annotation file.
        summary_path: if set, the summary text is written there atomically.
    Returns:
        (12,) float64 stats in COCOeval order (``coco_metrics.STAT_NAMES``) with boundary IoU.
    """
    coco_gt = load_coco_gt(coco_gt)
    coco_dt = load_results(coco_gt, segm_results, "segm")
    evaluator = functools.partial(BoundaryCOCOeval, dilation_ratio=dilation_ratio)
    coco_eval, summary = run_cocoeval(coco_gt, coco_dt, "segm", image_ids, evaluator)
    text = f"== boundary (dilation ratio {dilation_ratio}) ==\n{summary}"
    print(text)
    if summary_path is not None:
        write_text_atomic(summary_path, text)
    return np.asarray(coco_eval.stats, dtype=np.float64)
