"""COCO box and mask AP with pycocotools: summary text, per-category AP table and CSV."""
import contextlib
import copy
import csv
import io
import json
import os
import warnings

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from src.utils.atomic_io import write_text_atomic
from src.evaluation.coco_results import load_coco_gt

IOU_TYPES = ("bbox", "segm")
# The 12 numbers of COCOeval.stats, in order.
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
SUMMARY_FILE = "coco_summary.txt"
PER_CATEGORY_FILE = "coco_per_category_ap.csv"
_RESULT_KEY = {"bbox": "bbox", "segm": "segmentation"}


def _read_results(results):
    """(entries, name for messages) from a result json path or an in-memory list."""
    if isinstance(results, (str, os.PathLike)):
        path = os.fspath(results)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"COCO result file not found: {path}")
        with open(path, encoding="utf-8") as f:
            try:
                entries = json.load(f)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: not valid JSON ({err})") from None
        return entries, path
    return results, "results list"


def _empty_results(coco_gt):
    """A result set with no detections; ``COCO.loadRes([])`` would fail on ``anns[0]``."""
    coco_dt = COCO()
    coco_dt.dataset = {
        "images": list(coco_gt.dataset.get("images", [])),
        "categories": copy.deepcopy(coco_gt.dataset.get("categories", [])),
        "annotations": [],
    }
    coco_dt.createIndex()
    return coco_dt


def load_results(coco_gt, results, iou_type):
    """Load detections for COCOeval, checking them against the ground truth first.

    Args:
        coco_gt: ground-truth ``COCO`` object.
        results: path of a COCO result json, or a list of result dicts (not modified).
        iou_type: 'bbox' or 'segm'; every entry must carry 'bbox' or 'segmentation' accordingly.
    Returns:
        ``COCO`` object of the detections; with no detections it holds no annotations (a warning
        is issued and every AP evaluates to 0).
    """
    if iou_type not in _RESULT_KEY:
        raise ValueError(f"iou_type must be one of {sorted(_RESULT_KEY)}, got {iou_type!r}")
    entries, name = _read_results(results)
    if not isinstance(entries, list):
        raise ValueError(f"{name}: expected a list of COCO results, got {type(entries).__name__}")
    required = ("image_id", "category_id", "score", _RESULT_KEY[iou_type])
    for i, entry in enumerate(entries):
        missing = [k for k in required if not isinstance(entry, dict) or k not in entry]
        if missing:
            raise ValueError(f"{name}: entry {i} lacks key(s) {missing} needed for {iou_type} evaluation")
    image_ids = {e["image_id"] for e in entries}
    unknown_images = sorted(image_ids - set(coco_gt.getImgIds()))
    if unknown_images:
        raise ValueError(f"{name}: image_id(s) {unknown_images[:10]} are not in the annotation file")
    unknown_cats = sorted({e["category_id"] for e in entries} - set(coco_gt.getCatIds()))
    if unknown_cats:
        raise ValueError(f"{name}: category_id(s) {unknown_cats[:10]} are not in the annotation file")
    if not entries:
        warnings.warn(f"{name}: no detections, {iou_type} AP is 0")
        return _empty_results(coco_gt)
    # loadRes adds keys (id, area, ...) to the dicts it is given; shallow copies keep ours intact.
    return coco_gt.loadRes([dict(e) for e in entries])


def run_cocoeval(coco_gt, coco_dt, iou_type, image_ids=None, evaluator=COCOeval):
    """Evaluate, accumulate and summarise.

    Args:
        coco_gt, coco_dt: ground truth and detections (``COCO`` objects).
        iou_type: 'bbox' or 'segm'.
        image_ids: images to evaluate; None for every image of the annotation file (images
            without detections then count as misses, as they should).
        evaluator: ``COCOeval`` or a callable with its signature (e.g. a subclass).
    Returns:
        (coco_eval, summary): the evaluated object (``.stats`` holds the 12 numbers of
        ``STAT_NAMES``, ``.eval['precision']`` the precision table) and pycocotools' summary text.
    """
    coco_eval = evaluator(coco_gt, coco_dt, iou_type)
    if image_ids is not None:
        coco_eval.params.imgIds = sorted(int(i) for i in image_ids)
    # pycocotools prints progress and the summary; the summary is returned instead.
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval.evaluate()
        coco_eval.accumulate()
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        coco_eval.summarize()
    return coco_eval, summary.getvalue()


def per_category_ap(coco_eval):
    """AP, AP50 and AP75 of every evaluated category (area 'all', the largest maxDets).

    Returns:
        dict {category_id: (3,) float64 array (AP, AP50, AP75)}; NaN where the category has no
        ground truth in the evaluated images (COCOeval's -1 entries).
    """
    params = coco_eval.params
    precision = coco_eval.eval["precision"]  # (T iou thresholds, R recalls, K cats, A areas, M maxDets)
    area = params.areaRngLbl.index("all")
    thresholds = [slice(None), int(np.argmin(np.abs(params.iouThrs - 0.5))),
                  int(np.argmin(np.abs(params.iouThrs - 0.75)))]
    table = {}
    for k, cat_id in enumerate(params.catIds):
        values = []
        for t in thresholds:
            p = precision[t, :, k, area, -1]
            values.append(float(np.mean(p[p > -1])) if np.any(p > -1) else float("nan"))
        table[int(cat_id)] = np.array(values)
    return table


def _per_category_rows(coco_gt, tables):
    """Rows [category_id, name, AP, AP50, AP75 per iou type] for every category of the GT."""
    rows = []
    for cat in sorted(coco_gt.loadCats(coco_gt.getCatIds()), key=lambda c: c["id"]):
        row = [cat["id"], cat.get("name", str(cat["id"]))]
        for table in tables.values():
            row.extend(table.get(cat["id"], np.full(3, np.nan)).tolist())
        rows.append(row)
    return rows


def _header(iou_types):
    return ["category_id", "category"] + [f"{t}_{m}" for t in iou_types for m in ("AP", "AP50", "AP75")]


def format_per_category_table(coco_gt, tables):
    """Fixed-width text table of ``{iou_type: per_category_ap(...)}``, values in percent."""
    header = _header(list(tables))
    rows = _per_category_rows(coco_gt, tables)
    name_width = max([len(header[1])] + [len(str(r[1])) for r in rows])
    lines = [f"{header[0]:>11} {header[1]:<{name_width}} " + " ".join(f"{h:>10}" for h in header[2:])]
    for row in rows:
        values = " ".join(f"{100 * v:10.1f}" for v in row[2:])
        lines.append(f"{row[0]:>11} {str(row[1]):<{name_width}} {values}")
    return "\n".join(lines) + "\n"


def per_category_csv(coco_gt, tables):
    """CSV text of ``{iou_type: per_category_ap(...)}``: one row per GT category, values in [0, 1]
    with 4 decimals, 'nan' for categories without ground truth."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(_header(list(tables)))
    for row in _per_category_rows(coco_gt, tables):
        writer.writerow(row[:2] + [f"{v:.4f}" for v in row[2:]])
    return out.getvalue()


def evaluate_coco(coco_gt, results, out_dir=None, image_ids=None):
    """COCO AP for every result set given; print and optionally save the reports.

    Args:
        coco_gt: annotation file path or ``COCO`` object.
        results: dict {iou_type: result json path or list of result dicts}, iou_type in
            ``IOU_TYPES`` (e.g. the return value of ``write_coco_results``).
        out_dir: if set, ``coco_summary.txt`` (pycocotools' summaries) and
            ``coco_per_category_ap.csv`` are written there atomically.
        image_ids: images to evaluate; None for all images of the annotation file.
    Returns:
        dict {iou_type: (12,) float64 stats in the order of ``STAT_NAMES``}.
    """
    coco_gt = load_coco_gt(coco_gt)
    unknown = sorted(set(results) - set(IOU_TYPES))
    if unknown:
        raise ValueError(f"unknown iou type(s) {unknown}; expected some of {list(IOU_TYPES)}")
    stats, tables, summaries = {}, {}, []
    for iou_type in (t for t in IOU_TYPES if t in results):
        coco_dt = load_results(coco_gt, results[iou_type], iou_type)
        coco_eval, summary = run_cocoeval(coco_gt, coco_dt, iou_type, image_ids)
        stats[iou_type] = np.asarray(coco_eval.stats, dtype=np.float64)
        tables[iou_type] = per_category_ap(coco_eval)
        summaries.append(f"== {iou_type} ==\n{summary}")
    summary_text = "\n".join(summaries)
    table_text = format_per_category_table(coco_gt, tables)
    print(summary_text)
    print("Per-category AP (%):")
    print(table_text)
    if out_dir is not None:
        write_text_atomic(os.path.join(out_dir, SUMMARY_FILE), summary_text)
        write_text_atomic(os.path.join(out_dir, PER_CATEGORY_FILE), per_category_csv(coco_gt, tables))
    return stats
