"""The detectron2 reference of tests/data (made by tools/make_detectron2_reference.py) and this
network built to match it: the reduced-width preset, converted weights, stage-by-stage runners.

Used by test_detectron2_parity.py and by tools/compare_detectron2.py (full size).
"""
import os

import numpy as np

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


def reference_config(ref, overrides=()):
    """The preset at the reference's widths, classes and canvas (the padded input size)."""
    widths = {k.split("/", 1)[1]: int(v) for k, v in ref.items() if k.startswith("width/")}
    hp, wp = (int(v) for v in ref["img0/image_tensor"].shape[1:]) if "img0/image_tensor" in ref else \
        (int(v) for v in ref["padded_hw"])
    stem, res2 = widths["stem"], widths["res2"]
    res = [res2, 2 * res2, 4 * res2, 8 * res2]
    fpn = widths["fpn"]
    argv = [f"--config_path={PRESET}", "--device_target=CPU", f"--img_height={hp}", f"--img_width={wp}",
            f"--num_classes={widths['classes'] + 1}", f"--resnet_in_channels=[{stem}, {res[0]}, {res[1]}, {res[2]}]",
            f"--resnet_out_channels={res}", f"--fpn_in_channels={res}", f"--fpn_out_channels={fpn}",
            f"--rpn_in_channels={fpn}", f"--rpn_feat_channels={fpn}", f"--rcnn_in_channels={fpn}",
            f"--rcnn_fc_out_channels={widths['box_fc']}", f"--coarse_conv_dim={widths['coarse_conv']}",
            f"--coarse_fc_dim={widths['coarse_fc']}", f"--point_fc_dim={widths['point_fc']}",
            f"--min_size_test={int(ref['min_size_test'])}", f"--max_size_test={int(ref['max_size_test'])}",
            "--coco_category_ids=[]", f"--coco_classes={['background'] + [f'c{i}' for i in range(widths['classes'])]}",
            "--test_batch_size=1"]
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
        pyramid, table = net.features(img)
        rpn_cls, rpn_reg = net.rpn_with_loss(pyramid)
        ours, valid = net.proposal_test(rpn_cls, rpn_reg, img_metas)
        cls_logits, deltas = net.rcnn_cls(net.roi_align(table, rois_with_index(self.prop_index, proposals)))
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
    props = ref[f"img{i}/proposals"].astype(np.float32)
    boxes = ref[f"img{i}/pred_boxes"].astype(np.float32)
    classes = ref[f"img{i}/pred_classes"].astype(np.int32) + 1
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


def unpack_masks(ref, i):
    """detectron2's pasted masks of image i (D, H0, W0) bool."""
    h0, w0 = (int(v) for v in ref[f"img{i}/orig_hw"])
    bits = ref[f"img{i}/pasted_masks_packed"]
    count = len(ref[f"img{i}/pred_boxes"])
    return np.unpackbits(bits)[:count * h0 * w0].reshape(count, h0, w0).astype(bool)



