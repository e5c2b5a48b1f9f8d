"""This network with the detectron2 preset against detectron2's own PointRend outputs, stage by stage.

    python tools/detectron2_parity.py [--reference REF.npz --weights REF.pkl] [--set KEY=VALUE ...]

A reference (tools/make_detectron2_reference.py, run with detectron2 and torch outside this
project) holds detectron2's weights and what detectron2 computed on a few images. Its weights go
through tools/convert_detectron2.py into the network built from configs/detectron2_pointrend_r50_fpn.yaml
at the reference's widths and canvas; every stage then runs on the same input as detectron2's stage
had (the box head on detectron2's proposals, the mask branch on detectron2's detections), so that a
difference points at one stage. Prints one line per comparison with its tolerance and PASS/FAIL;
``--set`` overrides config keys (e.g. ``--set fpn_upsample=bilinear`` to see what a switch changes).
Defaults: the small reference committed under tests/data (test_detectron2_parity.py checks the
same numbers).
"""
import argparse
import json
import os
import sys
import tempfile

import numpy as np

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from src.utils.runtime import cap_onednn_isa
    cap_onednn_isa()  # before the first convolution

import mindspore as ms
from mindspore import nn

from src.config import load_config
from src.layers.roi_align import rois_with_index
from src.layers.tensor_utils import batch_index_of
from src.maskrcnn_pointrend_r50 import MaskRcnnPointRend

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")
REFERENCE_NPZ = os.path.join(DATA, "detectron2_reference_small.npz")
REFERENCE_PKL = os.path.join(DATA, "detectron2_pointrend_small.pkl")
PRESET = os.path.join(ROOT, "configs", "detectron2_pointrend_r50_fpn.yaml")
LEVELS = ("p2", "p3", "p4", "p5", "p6")


def load_reference(path=REFERENCE_NPZ):
    """{key: array} of a reference file."""
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def num_images(ref):
    return len({k.split("/")[0] for k in ref if k.startswith("img")})


def reference_changes(ref):
    """detectron2 config keys the reference changed from the PointRend 1x config: {key: value}."""
    return dict(json.loads(str(ref["meta/config_changes"])))


def reference_config(ref, overrides=()):
    """The preset at the reference's widths, classes and canvas (its padded input size)."""
    changes = reference_changes(ref)
    hp, wp = (int(v) for v in ref["img0/padded_hw"])
    stem = changes.get("MODEL.RESNETS.STEM_OUT_CHANNELS", 64)
    res2 = changes.get("MODEL.RESNETS.RES2_OUT_CHANNELS", 256)
    res = [res2, 2 * res2, 4 * res2, 8 * res2]
    fpn = changes.get("MODEL.FPN.OUT_CHANNELS", 256)
    classes = changes.get("MODEL.ROI_HEADS.NUM_CLASSES", 80)
    argv = [f"--config_path={PRESET}", "--device_target=CPU", f"--img_height={hp}", f"--img_width={wp}",
            "--test_batch_size=1",
            f"--min_size_test={changes.get('INPUT.MIN_SIZE_TEST', 800)}",
            f"--max_size_test={changes.get('INPUT.MAX_SIZE_TEST', 1333)}"]
    if classes != 80:
        names = ["background"] + [f"class{i}" for i in range(1, classes + 1)]
        argv += [f"--num_classes={classes + 1}", "--coco_category_ids=[]", f"--coco_classes={names}"]
    if res2 != 256 or stem != 64 or fpn != 256:
        argv += [f"--resnet_in_channels={[stem] + res[:3]}", f"--resnet_out_channels={res}",
                 f"--fpn_in_channels={res}", f"--fpn_out_channels={fpn}", f"--rpn_in_channels={fpn}",
                 f"--rpn_feat_channels={fpn}", f"--rcnn_in_channels={fpn}",
                 f"--rcnn_fc_out_channels={changes.get('MODEL.ROI_BOX_HEAD.FC_DIM', 1024)}",
                 f"--coarse_conv_dim={changes.get('MODEL.ROI_MASK_HEAD.CONV_DIM', 256)}",
                 f"--coarse_fc_dim={changes.get('MODEL.ROI_MASK_HEAD.FC_DIM', 1024)}",
                 f"--point_fc_dim={changes.get('MODEL.POINT_HEAD.FC_DIM', 256)}"]
    argv += [f"--{k}={v}" for k, v in overrides]
    return load_config(argv)


def normalized_input(ref, i, cfg):
    """(1, 3, H, W) network input of image i built by our transform from the resized BGR image."""
    from src.dataset.transforms import normalize_and_pad
    bgr = ref[f"img{i}/input_bgr"]
    img = normalize_and_pad(bgr, cfg.img_height, cfg.img_width, cfg.img_mean, cfg.img_std, cfg.img_format)
    h, w = bgr.shape[:2]
    h0, w0 = (int(v) for v in ref[f"img{i}/orig_hw"])
    metas = np.array([[h, w, h / h0, w / w0]], np.float32)
    return img[None], metas


class StageRunner(nn.Cell):
    """Every stage of ``net`` on one image, the later ones fed with detectron2's own inputs, so that
    each comparison isolates one stage.

    construct(img (1, 3, H, W), img_metas (1, 4), proposals (P, 4) from detectron2, det_boxes (D, 4),
    det_classes (D,) int32 ours (1..K)) -> (P2..P6, rpn logits (1, N), rpn deltas (1, N, 4),
    our proposals (1, P', 4), their valid flags, box-head logits (P, K+1) and deltas (P, 4(K+1)) on
    detectron2's proposals, coarse logits (D, K+1, 7, 7) and mask probabilities (D, 224, 224) on
    detectron2's detections).
    """

    def __init__(self, net, num_proposals, num_dets):
        super().__init__()
        self.net = net
        self.prop_index = batch_index_of(1, num_proposals)
        self.det_index = batch_index_of(1, num_dets).reshape(-1)

    def construct(self, img, img_metas, proposals, det_boxes, det_classes):
        net = self.net
        pyramid, table, anchor_valid, extents = net.features(img, img_metas, net.size_divisibility > 0)
        rpn_cls, rpn_reg = net.rpn_with_loss(pyramid)
        ours, valid = net.proposal_test(rpn_cls, rpn_reg, img_metas, anchor_valid)
        cls_logits, deltas = net.rcnn_cls(net.roi_align(table, rois_with_index(self.prop_index, proposals), extents))
        branch = net.mask_branch
        coarse = branch.coarse_logits(table, det_boxes, self.det_index)
        masks = branch.predict(table, det_boxes, self.det_index, det_classes)
        return pyramid + (rpn_cls, rpn_reg, ours, valid, cls_logits, deltas, coarse, masks)


def build_network(cfg, checkpoint):
    """Inference network with the converted weights (only the unused standard mask head may be missing)."""
    from src.checkpoint_utils import load_pretrained
    net = MaskRcnnPointRend(cfg, 1)
    net.set_train(False)
    report = load_pretrained(net, checkpoint, log=lambda *_: None)
    missing = [n for n in report["missing"] if not n.startswith("rcnn_mask.")]
    assert not missing and not report["unexpected"] and not report["mismatched"], (
        missing[:3], report["unexpected"][:3], report["mismatched"][:3])
    return net


def padded(rows, count, fill=0.0):
    """rows (n, ...) padded with ``fill`` to (count, ...) (fixed shapes for one compiled graph)."""
    out = np.full((count,) + rows.shape[1:], fill, rows.dtype)
    out[:len(rows)] = rows
    return out


def run_stages(runner, ref, i, cfg):
    """Our outputs for image i as numpy, cut to detectron2's counts."""
    img, metas = normalized_input(ref, i, cfg)
    props = ref[f"img{i}/proposals_boxes"].astype(np.float32)
    boxes = ref[f"img{i}/det_boxes"].astype(np.float32)
    classes = ref[f"img{i}/det_classes"].astype(np.int32) + 1
    p, d = runner.prop_index.shape[0], runner.det_index.shape[0]
    dummy_box = np.array([[0.0, 0.0, 16.0, 16.0]], np.float32)
    outs = runner(ms.Tensor(img), ms.Tensor(metas), ms.Tensor(padded(props, p)),
                  ms.Tensor(np.concatenate([boxes, np.repeat(dummy_box, d - len(boxes), 0)])),
                  ms.Tensor(padded(classes, d, 1)))
    outs = [o.asnumpy() for o in outs]
    result = dict(zip(LEVELS, (o[0] for o in outs[:5])))
    rpn_cls, rpn_reg, ours, valid, cls_logits, deltas, coarse, masks = outs[5:]
    result.update(rpn_cls=rpn_cls[0], rpn_reg=rpn_reg[0], proposals=ours[0][valid[0]],
                  cls_logits=cls_logits[:len(props)], deltas=deltas[:len(props)], coarse=coarse[:len(boxes)],
                  masks=masks[:len(boxes)])
    return result


def detectron2_rpn_order(objectness, deltas):
    """detectron2's per-level RPN maps -> our flat order (y, x, anchor).

    objectness (A, H, W) -> (H * W * A,); deltas (A * 4, H, W) -> (H * W * A, 4).
    """
    a, h, w = objectness.shape
    return (objectness.transpose(1, 2, 0).reshape(-1),
            deltas.reshape(a, 4, h, w).transpose(2, 3, 0, 1).reshape(-1, 4))


def box_iou(a, b):
    """(N, 4) x (M, 4) -> (N, M) IoU, areas as (x2 - x1) * (y2 - y1)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def match_one_to_one(ours, theirs, threshold=0.99):
    """Greedy one-to-one matching of boxes by IoU > threshold, in ``theirs`` order.

    Returns: list of (their index, our index) pairs.
    """
    if len(ours) == 0 or len(theirs) == 0:
        return []
    iou = box_iou(theirs, ours)
    taken = np.zeros(len(ours), bool)
    pairs = []
    for t in range(len(theirs)):
        candidates = np.where(~taken & (iou[t] > threshold))[0]
        if len(candidates):
            o = candidates[np.argmax(iou[t, candidates])]
            taken[o] = True
            pairs.append((t, int(o)))
    return pairs


def relative_error(ours, theirs):
    """max |ours - theirs| / max |theirs|: one number per tensor, robust to values near zero."""
    return float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-12))


def inference_outputs(net, ref, i, cfg):
    """The whole network's detections for image i: boxes (n, 4), scores, labels (ours), masks (n, 224, 224)."""
    img, metas = normalized_input(ref, i, cfg)
    boxes, scores, labels, valid, masks = (o.asnumpy()[0] for o in net(ms.Tensor(img), ms.Tensor(metas)))
    return boxes[valid], scores[valid], labels[valid], masks[valid]


def pasted_masks(ref, i):
    """detectron2's final masks of image i at its original size (D, H0, W0) bool, in ``det_*`` order
    (``post_keep`` maps them)."""
    h0, w0 = (int(v) for v in ref[f"img{i}/orig_hw"])
    count = len(ref[f"img{i}/post_keep"])
    bits = np.unpackbits(ref[f"img{i}/post_masks_packed"])[:count * h0 * w0]
    return bits.reshape(count, h0, w0).astype(bool)


def subdivided_logits(ref, i, upsample):
    """detectron2's final (D', 224, 224) mask logits of the first D' detections, rebuilt from what the
    reference records: the point head's logits on the initial regular grid, then per step the x2
    bilinear upsampling (``upsample``: (D, 1, h, w) -> (D, 1, 2h, 2w), align_corners=False) and the
    point logits scattered at the chosen cells."""
    steps = sorted(int(k.split("step")[1].split("_")[0]) for k in ref if k.startswith(f"img{i}/mask_step")
                   and k.endswith("_indices"))
    count = len(ref[f"img{i}/mask_step{steps[0]}_indices"])
    logits = ref[f"img{i}/mask_init_logits"][:count]
    for s in steps:
        logits = upsample(logits)
        d, _, h, w = logits.shape
        flat = logits.reshape(d, h * w).copy()
        np.put_along_axis(flat, ref[f"img{i}/mask_step{s}_indices"].astype(np.int64),
                          ref[f"img{i}/mask_step{s}_point_logits"], axis=1)
        logits = flat.reshape(d, 1, h, w)
    return logits[:, 0]


def upsample2x_bilinear(x):
    """torch's interpolate(scale_factor=2, mode="bilinear", align_corners=False): (N, C, h, w) -> (N, C, 2h, 2w)."""
    def taps(n):
        src = np.maximum((np.arange(2 * n) + 0.5) / 2 - 0.5, 0.0)
        lo = np.minimum(np.floor(src).astype(int), n - 1)
        return lo, np.minimum(lo + 1, n - 1), src - lo
    ylo, yhi, fy = taps(x.shape[2])
    xlo, xhi, fx = taps(x.shape[3])
    rows = x[:, :, ylo] * (1 - fy)[:, None] + x[:, :, yhi] * fy[:, None]
    return rows[..., xlo] * (1 - fx) + rows[..., xhi] * fx


def mask_iou(a, b):
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def capped_rois(boxes, cfg):
    """(N,) bool: RoIs whose adaptive sampling needs more than roi_layer.max_sample_num samples per
    bin side (detectron2's level rule), which this network pools with fewer samples."""
    side = np.sqrt(np.prod(boxes[:, 2:] - boxes[:, :2], axis=1))
    level = np.clip(np.floor(4 + np.log2(side / 224 + 1e-8)), 2, 5)
    longest = np.max(boxes[:, 2:] - boxes[:, :2], axis=1) / 2 ** level
    return np.ceil(longest / cfg.roi_layer.out_size) > cfg.roi_layer.max_sample_num


# comparison -> (tolerance, description); a metric passes when it is <= (errors) or >= (rates) it
TOLERANCES = {
    "anchors_max_abs": (1e-3, "anchors: max |ours - detectron2| (pixels)"),
    "features_rel": (1e-4, "P2..P6 features: max relative error"),
    "rpn_rel": (1e-4, "RPN objectness and deltas: max relative error"),
    "proposals_matched": (0.99, "proposals matched one to one at IoU > 0.99 (rate)"),
    "box_head_rel": (1e-4, "box-head logits/deltas on detectron2's proposals: max relative error, uncapped RoIs"),
    "box_head_capped_rel": (0.05, "the same on RoIs under the sampling cap"),
    "detections_matched": (0.98, "detections matched (IoU > 0.99, same class) (rate)"),
    "detection_scores_close": (0.95, "matched detections with |score difference| < 1e-3 (rate)"),
    "coarse_rel": (1e-4, "coarse mask logits on detectron2's detections: max relative error"),
    "subdivided_pixels_close": (0.99, "224x224 mask probabilities within 1e-3 of detectron2's (rate)"),
    "subdivided_iou_min": (0.98, "224x224 masks: smallest IoU"),
    "final_masks_iou98": (0.98, "pasted masks of matched detections with IoU > 0.98 (rate)"),
}
RATES = {"proposals_matched", "detections_matched", "detection_scores_close", "subdivided_pixels_close",
         "subdivided_iou_min", "final_masks_iou98"}


def compare(ref, cfg, checkpoint):
    """All comparisons of ``TOLERANCES`` for one reference; returns {name: value} plus counts."""
    from src.evaluation import detections_to_coco
    from src.maskrcnn.anchor_generator import multi_level_anchors
    from pycocotools import mask as mask_utils

    net = build_network(cfg, checkpoint)
    images = sorted({k.split("/")[0] for k in ref if k.startswith("img")})
    runner = StageRunner(net, len(ref["img0/proposals_boxes"]), cfg.test_max_per_img)
    out = {"images": len(images)}
    anchors = multi_level_anchors(cfg.feature_shapes, cfg.anchor_strides, cfg.anchor_scales, cfg.anchor_ratios,
                                  cfg.anchor_style)
    out["anchors_max_abs"] = max(float(np.abs(anchors[lv][:len(ref[f"anchors/cell_{n}"])] - ref[f"anchors/cell_{n}"])
                                       .max()) for lv, n in enumerate(LEVELS))
    out["anchors_max_abs"] = max([out["anchors_max_abs"]] + [float(np.abs(anchors[lv] - ref[f"anchors/{n}"]).max())
                                                            for lv, n in enumerate(LEVELS) if f"anchors/{n}" in ref
                                                            and anchors[lv].shape == ref[f"anchors/{n}"].shape])
    feats, rpn, box, capped_err, coarse = [], [], [], [], []
    matched_props = total_props = matched_dets = total_dets = 0
    score_close, pixels_close, sub_iou, final_iou, capped_count = [], [], [], [], 0
    for i in range(len(images)):
        stage = run_stages(runner, ref, i, cfg)
        # on a canvas larger than detectron2's padded input, the region detectron2 computed
        feats += [relative_error(stage[n][:, :ref[f"img{i}/{n}"].shape[1], :ref[f"img{i}/{n}"].shape[2]],
                                 ref[f"img{i}/{n}"]) for n in LEVELS if f"img{i}/{n}" in ref]
        begin = 0
        for level, name in enumerate(LEVELS):
            h, w = cfg.feature_shapes[level]
            count = h * w * cfg.num_anchors
            key = f"img{i}/rpn_objectness_{name}"
            if key in ref and ref[key].shape[1:] == (h, w):
                obj = ref[f"img{i}/rpn_objectness_{name}"]
                key = f"img{i}/rpn_deltas_{name}"
                logits, deltas = detectron2_rpn_order(obj, ref[key] if key in ref else np.zeros(
                    (4 * obj.shape[0],) + obj.shape[1:], np.float32))
                rpn.append(relative_error(stage["rpn_cls"][begin:begin + count], logits))
                if key in ref:
                    rpn.append(relative_error(stage["rpn_reg"][begin:begin + count], deltas))
            begin += count
        theirs = ref[f"img{i}/proposals_boxes"]
        matched_props += len(match_one_to_one(stage["proposals"], theirs, 0.99))
        total_props += max(len(theirs), len(stage["proposals"]))
        capped = capped_rois(theirs, cfg)
        capped_count += int(capped.sum())
        logits = ref[f"img{i}/box_cls_logits"]
        ours = np.concatenate([stage["cls_logits"][:, 1:], stage["cls_logits"][:, :1]], 1)  # background last
        diff = np.abs(ours - logits) / np.abs(logits).max()
        box.append(float(diff[~capped].max()))
        capped_err.append(float(diff[capped].max(initial=0.0)))
        if f"img{i}/box_deltas" in ref:
            deltas = ref[f"img{i}/box_deltas"]
            box.append(float((np.abs(stage["deltas"][:, 4:] - deltas)[~capped]).max() / np.abs(deltas).max()))
        theirs = ref[f"img{i}/coarse_logits"]
        coarse.append(relative_error(stage["coarse"][:len(theirs), 1:], theirs))
        theirs = subdivided_logits(ref, i, upsample2x_bilinear)
        ours = stage["masks"][:len(theirs)]
        pixels_close.append(np.abs(ours - 1 / (1 + np.exp(-theirs))) <= 1e-3)
        sub_iou += [mask_iou(o >= 0.5, t >= 0.0) for o, t in zip(ours, theirs)]

        boxes, scores, labels, masks = inference_outputs(net, ref, i, cfg)
        theirs = ref[f"img{i}/det_boxes"]
        pairs = [(t, o) for t, o in match_one_to_one(boxes, theirs, 0.99)
                 if labels[o] == ref[f"img{i}/det_classes"][t] + 1]
        matched_dets += len(pairs)
        total_dets += max(len(theirs), len(boxes))
        score_close += [abs(scores[o] - ref[f"img{i}/det_scores"][t]) < 1e-3 for t, o in pairs]
        _, metas = normalized_input(ref, i, cfg)
        h0, w0 = (int(v) for v in ref[f"img{i}/orig_hw"])
        box_results, segm_results = detections_to_coco(0, boxes, scores, labels, np.ones(len(boxes), bool), masks,
                                                        metas[0], (h0, w0), list(range(1, cfg.num_classes)),
                                                        mask_threshold=cfg.mask_thr_binary)
        ours_xyxy = np.array([[x, y, x + w, y + h] for x, y, w, h in (b["bbox"] for b in box_results)]).reshape(-1, 4)
        their_masks = pasted_masks(ref, i)
        for t, o in match_one_to_one(ours_xyxy, ref[f"img{i}/post_boxes"], 0.99):
            final_iou.append(mask_iou(mask_utils.decode(segm_results[o]["segmentation"]).astype(bool), their_masks[t]))
    out.update(features_rel=max(feats), rpn_rel=max(rpn) if rpn else float("nan"),
               proposals_matched=matched_props / total_props,
               box_head_rel=max(box), box_head_capped_rel=max(capped_err), capped_rois=capped_count,
               proposals=total_props, detections_matched=matched_dets / max(total_dets, 1), detections=total_dets,
               detection_scores_close=float(np.mean(score_close)) if score_close else 0.0,
               coarse_rel=max(coarse), subdivided_pixels_close=float(np.mean(np.concatenate(
                   [p.reshape(-1) for p in pixels_close]))), subdivided_iou_min=min(sub_iou),
               final_masks_iou98=float(np.mean(np.array(final_iou) > 0.98)) if final_iou else 0.0,
               final_masks=len(final_iou), feature_tensors=len(feats))
    return out


def passed(name, value):
    """Whether a comparison meets its tolerance; NaN (not comparable on this canvas) passes."""
    if np.isnan(value):
        return True
    tolerance = TOLERANCES[name][0]
    return value >= tolerance if name in RATES else value <= tolerance


def report(metrics):
    """Text lines: each comparison, its value, tolerance and PASS/FAIL."""
    lines = []
    for name, (tolerance, text) in TOLERANCES.items():
        sign = ">=" if name in RATES else "<="
        lines.append(f"{'PASS' if passed(name, metrics[name]) else 'FAIL'}  {text}: {metrics[name]:.6g} "
                     f"(needs {sign} {tolerance:g})")
    lines.append(f"counts: {metrics['images']} images, {metrics['proposals']} proposals ({metrics['capped_rois']} "
                 f"under the sampling cap), {metrics['detections']} detections, {metrics['final_masks']} pasted "
                 f"masks compared")
    return lines


def main():
    from tools.convert_detectron2 import convert

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default=REFERENCE_NPZ, help="reference .npz")
    parser.add_argument("--weights", default=REFERENCE_PKL, help="its detectron2 weights (.pkl)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--checkpoint", default="", help="converted checkpoint to write/reuse (default: temporary)")
    args = parser.parse_args()
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device("CPU")
    ref = load_reference(args.reference)
    cfg = reference_config(ref, [tuple(item.split("=", 1)) for item in args.set])
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or os.path.join(tmp, "converted.ckpt")
        if not os.path.isfile(checkpoint):
            convert(args.weights, checkpoint, log=lambda *_: None)
        metrics = compare(ref, cfg, checkpoint)
    print("\n".join(report(metrics)), flush=True)
    sys.exit(0 if all(passed(n, metrics[n]) for n in TOLERANCES) else 1)


if __name__ == "__main__":
    main()
