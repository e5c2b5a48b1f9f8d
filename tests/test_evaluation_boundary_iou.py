"""Boundary IoU against a numpy erosion written from the definition, and Boundary AP."""
import cv2
import numpy as np
import pycocotools.mask as mask_utils
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from pycocotools.coco import COCO

from src.evaluation.boundary_iou import BoundaryCOCOeval, boundary_ap, boundary_iou, boundary_width, mask_boundary
from src.evaluation.coco_metrics import evaluate_coco, load_results, per_category_ap, run_cocoeval
from src.evaluation.coco_results import encode_mask, ground_truth_as_results
from test_evaluation_synthetic_gt import CROWD, write_synthetic_gt


def reference_boundary(mask, d):
    """Mask pixels whose (2d+1) x (2d+1) square neighbourhood is not entirely mask, where
    everything outside the image counts as background."""
    padded = np.pad(mask.astype(bool), d)
    eroded = sliding_window_view(padded, (2 * d + 1, 2 * d + 1)).all(axis=(2, 3))
    return mask.astype(bool) & ~eroded


def reference_boundary_iou(a, b, d):
    ga, gb = reference_boundary(a, d), reference_boundary(b, d)
    union = np.count_nonzero(ga | gb)
    return np.count_nonzero(ga & gb) / union if union else 0.0


def random_blob(rng, shape):
    """Smooth random shape: thresholded blurred noise, some of it touching the image border."""
    noise = cv2.GaussianBlur(rng.random(shape).astype(np.float32), (0, 0), 6)
    return (noise > np.quantile(noise, rng.uniform(0.4, 0.8))).astype(np.uint8)


def test_boundary_width():
    assert boundary_width((120, 160)) == 4  # 0.02 * 200
    assert boundary_width((120, 160), 0.05) == 10
    assert boundary_width((10, 10)) == 1  # round(0.28) = 0, but at least one pixel


def test_boundary_and_boundary_iou_match_numpy_reference():
    rng = np.random.default_rng(0)
    shape = (60, 90)
    masks = [random_blob(rng, shape) for _ in range(6)]
    full = np.ones(shape, np.uint8)
    dot = np.zeros(shape, np.uint8)
    dot[30, 40] = 1
    masks += [full, dot, np.zeros(shape, np.uint8)]
    for ratio in (0.02, 0.05):
        d = boundary_width(shape, ratio)
        for m in masks:
            np.testing.assert_array_equal(mask_boundary(m, ratio), reference_boundary(m, d))
        for a in masks:
            for b in masks[:4]:
                assert boundary_iou(a, b, ratio) == reference_boundary_iou(a, b, d)
    assert boundary_iou(masks[0], masks[0]) == 1.0
    # The image border is contour: the boundary of the full mask is a frame of width d.
    assert mask_boundary(full).sum() == full.size - (60 - 2 * 2) * (90 - 2 * 2)


def eroded_results(segm, pixels):
    """Mask results with every mask eroded by ``pixels`` (3x3 square, iterated)."""
    out = []
    for r in segm:
        mask = cv2.erode(mask_utils.decode(r["segmentation"]), np.ones((3, 3), np.uint8), iterations=pixels)
        out.append(dict(r, segmentation=encode_mask(mask)))
    return out


def test_boundary_ap_is_perfect_on_ground_truth_and_lower_for_eroded_masks(tmp_path):
    ann_file = write_synthetic_gt(tmp_path)
    _, segm = ground_truth_as_results(ann_file)
    summary = tmp_path / "boundary.txt"
    perfect = boundary_ap(ann_file, segm, summary_path=summary)
    assert perfect[0] == pytest.approx(1.0) and perfect[1] == perfect[2] == 1.0
    assert "Average Precision" in summary.read_text()

    eroded = eroded_results(segm, 1)
    mask_ap = evaluate_coco(ann_file, {"segm": eroded})["segm"]
    boundary = boundary_ap(ann_file, eroded)
    # min(mask IoU, boundary IoU) can only be stricter, and the 4 px boundary bands punish a 1 px
    # erosion much more than the whole masks do (measured: AP 0.17 vs 0.51).
    assert np.all(boundary[:6] <= mask_ap[:6] + 1e-12)
    assert boundary[0] < mask_ap[0] - 0.1, (boundary[0], mask_ap[0])


def test_pair_iou_is_min_of_mask_and_boundary_iou_and_crowd_keeps_mask_iou(tmp_path):
    coco = COCO(write_synthetic_gt(tmp_path))
    image_id, cat_id, (rows, cols) = CROWD
    gt = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=[image_id], catIds=[cat_id])) if not a["iscrowd"]][0]
    gt_mask = coco.annToMask(gt)
    shifted = np.roll(gt_mask, 2, axis=1)
    inside_crowd = np.zeros_like(gt_mask)
    inside_crowd[rows.start + 5:rows.stop - 5, cols.start + 5:cols.stop - 5] = 1
    dets = [{"image_id": image_id, "category_id": cat_id, "segmentation": encode_mask(m), "score": s}
            for m, s in ((inside_crowd, 0.95), (shifted, 0.9))]
    coco_eval, _ = run_cocoeval(coco, load_results(coco, dets, "segm"), "segm", [image_id], BoundaryCOCOeval)
    ious = coco_eval.ious[image_id, cat_id]  # (detections by score, ground truths)
    order = [g["iscrowd"] for g in coco_eval._gts[image_id, cat_id]]
    obj_col, crowd_col = order.index(0), order.index(1)
    mask_iou = mask_utils.iou([encode_mask(shifted)], [encode_mask(gt_mask)], [0])[0, 0]
    assert ious[1, obj_col] == pytest.approx(min(mask_iou, boundary_iou(gt_mask, shifted)))
    assert boundary_iou(gt_mask, shifted) < mask_iou
    # The top detection lies inside the crowd region: crowd IoU = |det & crowd| / |det| = 1 on the
    # masks, so it is ignored; counted as a false positive it would halve AP50.
    assert ious[0, crowd_col] == 1.0
    assert ious[0, obj_col] == 0.0
    assert per_category_ap(coco_eval)[cat_id][1] == pytest.approx(1.0)


def test_boundary_ap_of_no_detections_is_zero(tmp_path):
    with pytest.warns(UserWarning, match="no detections"):
        stats = boundary_ap(write_synthetic_gt(tmp_path), [])
    assert stats[0] == 0.0
