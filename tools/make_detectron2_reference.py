#!/usr/bin/env python3
"""Produce stage-by-stage reference outputs of detectron2's own PointRend (R50-FPN).

This is a developer tool for the MindSpore port.  It runs ONLY inside a separate
PyTorch + detectron2 environment; it is never imported by the project and it does
not import mindspore.

What it does
------------
1. Builds detectron2's ``PointRend R50-FPN 1x`` instance-segmentation model
   (``projects/PointRend/configs/InstanceSegmentation/pointrend_rcnn_R_50_FPN_1x_coco.yaml``)
   with random weights, either at the real width (``--size full``) or at a reduced
   width that keeps the outputs small enough to commit (``--size small``).
2. Gives the random network realistic statistics: every FrozenBatchNorm layer gets
   running_mean/running_var equal to the per-channel mean/var of its input on the
   batch of all three images (calibrated layer by layer in network order during one pass), and
   the linear/conv layers of the heads are rescaled (and re-centred through their
   biases) so that RPN objectness, box deltas, class scores and mask logits are
   spread instead of ~0.  The background bias of the class predictor is tuned so
   that every image has a useful number of final detections.
3. Runs inference (``model.eval()``, ``torch.no_grad()``, batch 1) on three images
   (skimage ``coffee``, skimage ``rocket``, one synthetic image) and records the
   intermediate tensors with hooks (see ``--help`` and the ``meta/keys_doc`` entry
   of the output).
4. Writes ``--out`` (``np.savez_compressed``) and the weights as a detectron2-style
   ``.pkl`` (``{"model": {name: np.ndarray}, "__author__": ..., "matching_heuristics": True}``)
   next to it (``--pkl``).  Both files are written atomically (temp file + os.replace).

Environment set-up (outside the repository)
-------------------------------------------
::

    python3 -m venv /work/d2venv
    /work/d2venv/bin/pip install torch==2.14.1 torchvision==0.29.1 'numpy<2' fvcore iopath \\
        yacs omegaconf hydra-core termcolor tabulate cloudpickle pycocotools scikit-image
    # detectron2 is not on PyPI: take a source checkout (no compilation needed,
    # detectron2._C is not used by this script), e.g.
    git clone https://github.com/facebookresearch/detectron2 /work/detectron2

OpenCV is not needed: if ``cv2`` is not installed a dummy module is registered so
that detectron2's import-time ``import cv2`` succeeds (no cv2 function is called).

Usage
-----
::

    # small model, committed to tests/data (npz + pkl < 5 MB together)
    /work/d2venv/bin/python tools/make_detectron2_reference.py --detectron2 /work/detectron2 \\
        --size small --out tests/data/detectron2_reference_small.npz \\
        --pkl tests/data/detectron2_pointrend_small.pkl

    # real-width model (not committed, ~hundreds of MB)
    /work/d2venv/bin/python tools/make_detectron2_reference.py --detectron2 /work/detectron2 \\
        --size full --out /tmp/d2_full_reference.npz --pkl /tmp/d2_full_reference.pkl

Output layout (npz)
-------------------
``meta/*``   strings/ints: detectron2 commit, torch version, config changes (JSON),
             full config (YAML), weights key layout, weights file name + sha256, ...
``anchors/p2..p6``  (N_l, 4) anchors as detectron2 generates them (same for every image).
``img{i}/...``      per image, see ``meta/keys_doc``.
The weights are stored in the ``.pkl`` only (``--embed-weights`` additionally stores
them as ``weights/<name>`` in the npz; not done for the small committed files to
stay under the size budget).
"""

import argparse
import copy
import hashlib
import json
import os
import pickle
import subprocess
import sys
import tempfile
import types

import numpy as np

CONFIG_REL = "projects/PointRend/configs/InstanceSegmentation/pointrend_rcnn_R_50_FPN_1x_coco.yaml"

SMALL_CHANGES = [
    ("MODEL.RESNETS.STEM_OUT_CHANNELS", 8),
    ("MODEL.RESNETS.RES2_OUT_CHANNELS", 32),
    ("MODEL.RESNETS.WIDTH_PER_GROUP", 8),
    ("MODEL.FPN.OUT_CHANNELS", 32),
    ("MODEL.ROI_BOX_HEAD.FC_DIM", 64),
    ("MODEL.ROI_HEADS.NUM_CLASSES", 4),
    ("MODEL.ROI_MASK_HEAD.FC_DIM", 64),
    # == FPN.OUT_CHANNELS, so (as in the real model, 256 == 256) the coarse head
    # has no reduce_channel_dim_conv, only reduce_spatial_dim_conv.
    ("MODEL.ROI_MASK_HEAD.CONV_DIM", 32),
    ("MODEL.POINT_HEAD.FC_DIM", 32),
    ("MODEL.POINT_HEAD.NUM_CLASSES", 4),
    ("INPUT.MIN_SIZE_TEST", 256),
    ("INPUT.MAX_SIZE_TEST", 448),
]
COMMON_CHANGES = [("MODEL.DEVICE", "cpu"), ("MODEL.WEIGHTS", "")]

KEYS_DOC = """\
Which keys exist for which image (and how many detections) depends on --size: see meta/size_policy.
anchors/cell_p{l}: (A,4) f32 cell anchors of level p{l}; anchors/p{l}: (N_l,4) f32 anchors as detectron2 generates them
  (XYXY, padded-input coords, order (H,W,A)); same for every image (small: levels p4..p6 only, others = cell + shifts).
img{i}/orig_hw: (2,) int32 original (H0,W0); img{i}/input_hw: (2,) int32 resized (H,W); img{i}/padded_hw: (2,) int32.
img{i}/input_bgr: (H,W,3) uint8, resized BGR image exactly as fed to the model (detectron2 ResizeShortestEdge = PIL bilinear).
img{i}/image_tensor: (3,Hp,Wp) f32 = (input_bgr.transpose(2,0,1) - PIXEL_MEAN[:,None,None]) / PIXEL_STD, zero padded to
  padded_hw (ImageList.from_tensors); full only (small: rebuild it from input_bgr and meta/pixel_mean, meta/pixel_std).
img{i}/p{2..6}: (C,H_l,W_l) f32 FPN features.
img{i}/rpn_objectness_p{l}: (A,H_l,W_l) raw RPN objectness logits; img{i}/rpn_deltas_p{l}: (A*4,H_l,W_l) raw anchor deltas.
img{i}/proposals_boxes: (P,4), img{i}/proposals_logits: (P,) RPN output after NMS, detectron2 order (sorted by logit).
img{i}/box_features: (P,FC) box head output (fc2 + relu) = box_predictor input.
img{i}/box_cls_logits: (P,K+1) (last column = background); img{i}/box_deltas: (P,4K) box_predictor outputs.
img{i}/det_boxes: (D,4), det_scores: (D,), det_classes: (D,) int32 -- model.inference(do_postprocess=False), input-image coords.
img{i}/coarse_input: (n,C,14,14) coarse mask head input (point_sample of p2 on a 14x14 box grid), first n detections.
img{i}/coarse_logits: (n,K,7,7) coarse mask head output, first n detections.
img{i}/mask_init_logits: (n,1,28,28) subdivision step 0: point-head logits of the predicted class on the regular 28x28 grid.
img{i}/mask_step{s}_indices: (n,784) int32 flat indices (into the 56/112/224 grid for s=1/2/3) of the points chosen at
  step s; img{i}/mask_step{s}_point_logits: (n,784) f32 point-head logits (predicted class) at those points.
  Together with mask_init_logits they determine the final 224x224 mask logits exactly: see reconstruct_mask_logits().
img{i}/mask_logits: (D,1,224,224) f32 final mask LOGITS of the predicted class (before sigmoid); full only.
img{i}/post_keep: (D',) int32 indices of detections kept by detector_postprocess (Boxes.nonempty after scaling).
img{i}/post_boxes: (D',4) boxes scaled+clipped to the ORIGINAL image size; post_scores (D',), post_classes (D',) int32.
img{i}/post_masks_packed: uint8 np.packbits(bool masks (D',H0,W0), axis=None) pasted at threshold 0.5;
  unpack: np.unpackbits(x, count=D'*H0*W0).reshape(D',H0,W0).astype(bool).
"""


def die(msg):
    print("error: " + msg, file=sys.stderr)
    sys.exit(2)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--detectron2", required=True, help="path of a detectron2 source checkout")
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--pkl", default=None, help="output weights .pkl (default: --out with .pkl suffix)")
    p.add_argument("--size", choices=["small", "full"], default="small")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--commit", default=None, help="detectron2 commit hash to record (default: git rev-parse)")
    p.add_argument("--embed-weights", action="store_true", help="also store weights/<name> in the npz")
    p.add_argument("--min-dets", type=int, default=20, help="min detections per image when tuning the class bias")
    p.add_argument("--target-dets", type=int, default=60, help="target median detections per image")
    return p.parse_args()


def setup_detectron2(path):
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        die("detectron2 path does not exist: %s" % path)
    if not os.path.isfile(os.path.join(path, "detectron2", "__init__.py")):
        die("not a detectron2 source checkout (no detectron2/__init__.py): %s" % path)
    if not os.path.isfile(os.path.join(path, CONFIG_REL)):
        die("PointRend config not found: %s" % os.path.join(path, CONFIG_REL))
    for p in (os.path.join(path, "projects", "PointRend"), path):
        if p not in sys.path:
            sys.path.insert(0, p)
    try:
        import cv2  # noqa: F401
    except ImportError:
        stub = types.ModuleType("cv2")
        stub.__version__ = "0.0.0"
        sys.modules["cv2"] = stub
    try:
        import torch  # noqa: F401
    except ImportError:
        die("torch is not importable: run this script with the detectron2 venv's python")
    return path


def get_commit(path, given):
    if given:
        return given
    try:
        return subprocess.check_output(["git", "-C", path, "rev-parse", "HEAD"], stderr=subprocess.DEVNULL).decode().strip()
    except Exception:
        return "unknown"


def calibrate_frozen_batch_norms(model, batched_inputs, seed):
    """Give a random detectron2 model's backbone realistic statistics: each FrozenBatchNorm2d gets a
    random affine map (weight ~ 1, bias ~ 0) and, layer by layer in one forward pass over
    ``batched_inputs`` (detectron2's input dicts), the per-channel mean and variance of its own
    input. Returns the number of layers calibrated."""
    import torch
    from detectron2.layers import FrozenBatchNorm2d

    gen = torch.Generator().manual_seed(seed + 1)
    hooks = []

    def pre_hook(mod, inp):
        x = inp[0]
        mod.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        mod.running_var.copy_(x.var(dim=(0, 2, 3), unbiased=False).clamp_min(1e-4))

    for m in model.backbone.modules():
        if isinstance(m, FrozenBatchNorm2d):
            c = m.weight.shape[0]
            m.weight.copy_(1.0 + 0.1 * torch.randn(c, generator=gen))
            m.bias.copy_(0.1 * torch.randn(c, generator=gen))
            hooks.append(m.register_forward_pre_hook(pre_hook))
    with torch.no_grad():
        model.backbone(model.preprocess_image(batched_inputs).tensor)
    for h in hooks:
        h.remove()
    return len(hooks)


def make_images(seed):
    import skimage.data

    coffee = skimage.data.coffee()[:, :, ::-1]  # RGB -> BGR
    rocket = skimage.data.rocket()[:, :, ::-1]
    rng = np.random.default_rng(seed + 12345)
    h, w = coffee.shape[:2]
    img = rng.normal(110, 2.5, size=(h, w, 3))
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(10):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(20, 120), rng.uniform(20, 160)
        col = rng.uniform(0, 255, size=3)
        m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        img[m] = col + rng.normal(0, 3, size=(int(m.sum()), 3))
    for _ in range(6):
        y0, x0 = int(rng.uniform(0, h - 40)), int(rng.uniform(0, w - 40))
        y1, x1 = y0 + int(rng.uniform(20, 150)), x0 + int(rng.uniform(20, 200))
        img[y0:y1, x0:x1] = rng.uniform(0, 255, size=3)
    synth = np.clip(np.round(img), 0, 255).astype(np.uint8)
    return [("coffee", np.ascontiguousarray(coffee)), ("rocket", np.ascontiguousarray(rocket)), ("synthetic", synth)]


def upsample2x_bilinear(x):
    """numpy equivalent of F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    for x of shape (N, H, W) (float32)."""
    n, h, w = x.shape

    def idx(out_len, in_len):
        src = (np.arange(out_len, dtype=np.float32) + 0.5) / 2.0 - 0.5
        src = np.maximum(src, 0.0)
        i0 = np.floor(src).astype(np.int64)
        i0 = np.minimum(i0, in_len - 1)
        i1 = np.minimum(i0 + 1, in_len - 1)
        l1 = (src - i0).astype(np.float32)
        return i0, i1, (1.0 - l1).astype(np.float32), l1

    y0, y1, wy0, wy1 = idx(2 * h, h)
    x0, x1, wx0, wx1 = idx(2 * w, w)
    top = x[:, y0] * wy0[None, :, None] + x[:, y1] * wy1[None, :, None]
    return top[:, :, x0] * wx0[None, None, :] + top[:, :, x1] * wx1[None, None, :]


def reconstruct_mask_logits(init_logits, steps):
    """Rebuild PointRend's final mask logits of the predicted class from the stored pieces:
    init_logits (n, R, R) = img{i}/mask_init_logits[:n, 0]; steps = [(indices (n, P),
    point_logits (n, P)) for s = 1..S] = img{i}/mask_step{s}_indices / _point_logits.
    Each step: upsample x2 (bilinear, align_corners=False), then overwrite the selected
    flat indices with the point-head logits (what PointRendMaskHead._subdivision_inference does)."""
    m = np.asarray(init_logits, dtype=np.float32)
    for indices, point_logits in steps:
        m = upsample2x_bilinear(m)
        n, h, w = m.shape
        flat = m.reshape(n, h * w)
        np.put_along_axis(flat, indices.astype(np.int64), point_logits.astype(np.float32), axis=1)
        m = flat.reshape(n, h, w)
    return m


def atomic_write(path, writer):
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp_", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def main():
    args = parse_args()
    d2path = setup_detectron2(args.detectron2)
    commit = get_commit(d2path, args.commit)
    pkl_path = args.pkl or os.path.splitext(args.out)[0] + ".pkl"

    import torch
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model
    from detectron2.modeling.postprocessing import detector_postprocess
    import detectron2.data.transforms as T
    import point_rend.mask_head as pr_mask_head
    from point_rend import add_pointrend_config

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)

    cfg = get_cfg()
    add_pointrend_config(cfg)
    cfg.merge_from_file(os.path.join(d2path, CONFIG_REL))
    changes = list(COMMON_CHANGES) + (SMALL_CHANGES if args.size == "small" else [])
    opts = []
    for k, v in changes:
        opts += [k, v]
    cfg.merge_from_list(opts)
    cfg.freeze()

    model = build_model(cfg)
    model.eval()
    K = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
    assert cfg.INPUT.FORMAT == "BGR"

    # ------------------------------------------------------------------ inputs
    images = make_images(args.seed)
    inputs = []
    for name, img in images:
        h0, w0 = img.shape[:2]
        resized = aug.get_transform(img).apply_image(img)
        t = torch.as_tensor(resized.astype("float32").transpose(2, 0, 1))
        inputs.append(dict(name=name, orig=img, resized=resized, batched=[{"image": t, "height": h0, "width": w0}]))
    padded = []
    for inp in inputs:
        il = model.preprocess_image(inp["batched"])
        padded.append(tuple(il.tensor.shape[-2:]))
        print("image %-9s orig %dx%d -> resized %dx%d -> padded %dx%d" % (
            (inp["name"],) + inp["orig"].shape[:2] + inp["resized"].shape[:2] + padded[-1]))
    if len(set(padded)) != 1:
        die("images do not share one padded size: %s" % padded)

    # ------------------------------------------------------------- calibration
    # All calibration statistics are taken over the batch of the three images (one
    # forward pass), so that no image is far out of the calibrated distribution.
    all_batched = [inp["batched"][0] for inp in inputs]
    def normalizing_hook(target_std, offset=0.0, center=True, once=True):
        """Forward hook: on the first call rescale the layer (weight*a, bias re-centred)
        so that its output has per-channel mean `offset` (if center) and global std
        `target_std`; return the corrected output so downstream layers see it."""
        state = {"done": False}

        def hook(mod, inp, out):
            if state["done"] and once:
                return None
            state["done"] = True
            act = getattr(mod, "activation", None)
            if act is not None:  # detectron2 Conv2d with fused activation: work on the pre-activation
                assert getattr(mod, "norm", None) is None
                out = mod._conv_forward(inp[0], mod.weight, mod.bias)
            ch_dim = 1 if out.dim() in (3, 4) else out.dim() - 1
            red = [d for d in range(out.dim()) if d != ch_dim]
            b = mod.bias.detach().clone() if mod.bias is not None else torch.zeros(out.shape[ch_dim])
            shape = [1] * out.dim()
            shape[ch_dim] = -1
            nob = out - b.view(shape)
            mean = nob.mean(dim=red) if center else torch.zeros_like(b)
            std = (nob - mean.view(shape)).std()
            a = float(target_std / max(float(std), 1e-12))
            with torch.no_grad():
                mod.weight.mul_(a)
                new_b = (-a * mean + offset) if center else (a * b)
                if mod.bias is not None:
                    mod.bias.copy_(new_b)
            res = a * nob + new_b.view(shape)
            return act(res) if act is not None else res

        return hook

    with torch.no_grad():
        count = calibrate_frozen_batch_norms(model, all_batched, args.seed)
        print("calibrated %d FrozenBatchNorm layers on the batch of all %d images" % (count, len(inputs)))
        rh = model.proposal_generator.rpn_head
        # the default RPN init (std 0.01) gives ~0 objectness everywhere: use realistic scales
        hooks = [
            rh.conv.register_forward_hook(normalizing_hook(1.0)),
            rh.objectness_logits.register_forward_hook(normalizing_hook(2.0, offset=-1.0)),
            rh.anchor_deltas.register_forward_hook(normalizing_hook(0.15)),
        ]
        bh = model.roi_heads.box_head
        for fc in [getattr(bh, n) for n in ("fc1", "fc2") if hasattr(bh, n)]:
            hooks.append(fc.register_forward_hook(normalizing_hook(1.0)))
        bp = model.roi_heads.box_predictor
        hooks.append(bp.cls_score.register_forward_hook(normalizing_hook(2.0)))
        hooks.append(bp.bbox_pred.register_forward_hook(normalizing_hook(0.5)))
        # pass 1 (boxes only, batch of all images): calibrates RPN and box head
        model.roi_heads.mask_on = False
        model.inference(all_batched, do_postprocess=False)
        for h in hooks:
            h.remove()

        # tune background bias: capture box predictor outputs + proposals for all images
        cap = {}
        h1 = bp.register_forward_hook(lambda m, i, o: cap.setdefault("pred", []).append(o))
        h2 = model.proposal_generator.register_forward_hook(lambda m, i, o: cap.setdefault("props", []).append(o[0]))
        for inp in inputs:
            model.inference(inp["batched"], do_postprocess=False)
        h1.remove()
        h2.remove()

        def counts_for(delta):
            res = []
            for (scores, deltas), props in zip(cap["pred"], cap["props"]):
                s = scores.clone()
                s[:, -1] += delta
                r, _ = bp.inference((s, deltas), props)
                res.append(len(r[0]))
            return res

        best = None
        for delta in np.arange(-6.0, 30.01, 0.25):
            c = counts_for(float(delta))
            ok = min(c) >= args.min_dets
            key = (0 if ok else 1, float(np.sum(np.abs(np.log(np.maximum(c, 1) / args.target_dets)))))
            if best is None or key < best[0]:
                best = (key, float(delta), c)
        bp.cls_score.bias[-1] += best[1]
        print("background-bias delta %.2f -> detections per image %s" % (best[1], best[2]))

        # pass 2 (with masks, batch of all images): calibrates the coarse head and point head
        model.roi_heads.mask_on = True
        mh = model.roi_heads.mask_head
        ch = mh.coarse_head
        hooks = []
        for layer in ch.conv_layers:
            hooks.append(layer.register_forward_hook(normalizing_hook(1.0)))
        for layer in ch.fcs:
            hooks.append(layer.register_forward_hook(normalizing_hook(1.0)))
        hooks.append(ch.prediction.register_forward_hook(normalizing_hook(3.0)))
        ph = mh.point_head
        for layer in ph.fc_layers:
            hooks.append(layer.register_forward_hook(normalizing_hook(1.0)))
        hooks.append(ph.predictor.register_forward_hook(normalizing_hook(3.0)))
        model.inference(all_batched, do_postprocess=False)
        for h in hooks:
            h.remove()

    # ---------------------------------------------------------- weights (pkl)
    sd = model.state_dict()
    weights = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in sd.items()}
    layout = "new (roi_heads.mask_head.coarse_head.* / roi_heads.mask_head.point_head.*)"
    assert any(k.startswith("roi_heads.mask_head.coarse_head.") for k in weights), "unexpected key layout"
    blob = pickle.dumps(
        {"model": weights, "__author__": "tools/make_detectron2_reference.py (random weights, seed %d)" % args.seed,
         "matching_heuristics": True},
        protocol=pickle.HIGHEST_PROTOCOL)
    atomic_write(pkl_path, lambda f: f.write(blob))
    sha = hashlib.sha256(blob).hexdigest()
    print("wrote %s (%d tensors, %.2f MB)" % (pkl_path, len(weights), len(blob) / 1e6))

    # --------------------------------------------------------- reference pass
    out = {}
    f16 = []
    small = args.size == "small"
    # Size policy.  full: everything for every image.  small (committed, < 5 MB with the
    # pkl): image 0 gets the stage-by-stage tensors, images 1/2 the end-to-end ones.
    # A key is stored for image i when POLICY[key] is None (all) or i in POLICY[key].
    det0 = (0,)
    POLICY = {
        "image_tensor": (), "p2": det0, "p3": det0, "p4": det0, "p5": None, "p6": None,
        "rpn_objectness_p2": det0, "rpn_objectness_p3": det0, "rpn_objectness_p4": det0,
        "rpn_objectness_p5": det0, "rpn_objectness_p6": det0,
        "rpn_deltas_p2": (), "rpn_deltas_p3": (), "rpn_deltas_p4": det0,
        "rpn_deltas_p5": det0, "rpn_deltas_p6": det0,
        "box_features": (), "box_deltas": det0, "coarse_input": det0, "mask_logits": (),
    } if small else {}
    # number of detections (the first n, in detectron2's order) for per-detection mask tensors,
    # (n for image 0, n for images 1/2)
    N_DETAIL = {"coarse_input": (1, 1), "mask_steps": (6, 3), "coarse_logits": (16, 16),
                "mask_init_logits": (16, 8)} if small else {}
    ANCHOR_LEVELS = ("p4", "p5", "p6") if small else ("p2", "p3", "p4", "p5", "p6")
    in_feats = list(cfg.MODEL.RPN.IN_FEATURES)

    def want(key, i):
        pol = POLICY.get(key)
        return pol is None or i in pol

    def ndet(key, D, i):
        n = N_DETAIL.get(key)
        if n is None:
            return D
        return min(n[0] if i == 0 else n[1], D)

    rec = {}
    hooks = [
        model.backbone.register_forward_hook(lambda m, i, o: rec.__setitem__("feats", o)),
        model.proposal_generator.rpn_head.register_forward_hook(lambda m, i, o: rec.__setitem__("rpn", o)),
        model.proposal_generator.anchor_generator.register_forward_hook(lambda m, i, o: rec.__setitem__("anchors", o)),
        model.proposal_generator.register_forward_hook(lambda m, i, o: rec.__setitem__("props", o[0])),
        model.roi_heads.box_predictor.register_forward_hook(
            lambda m, i, o: rec.update(box_in=i[0], box_out=o)),
        model.roi_heads.mask_head.coarse_head.register_forward_hook(
            lambda m, i, o: rec.update(coarse_in=i[0], coarse_out=o)),
    ]
    orig_mri = pr_mask_head.mask_rcnn_inference
    orig_unc = pr_mask_head.get_uncertain_point_coords_on_grid
    orig_gpl = pr_mask_head.PointRendMaskHead._get_point_logits

    def mri(pred_mask_logits, pred_instances):
        cls = torch.cat([x.pred_classes for x in pred_instances])
        if pred_mask_logits.shape[1] == 1:
            rec["mask_logits"] = pred_mask_logits.clone()
        else:
            rec["mask_logits"] = pred_mask_logits[torch.arange(len(cls)), cls][:, None].clone()
        return orig_mri(pred_mask_logits, pred_instances)

    def unc(uncertainty_map, num_points):
        idx, coords = orig_unc(uncertainty_map, num_points)
        rec.setdefault("indices", []).append(idx.clone())
        return idx, coords

    def gpl(self, fine, coords, coarse):
        o = orig_gpl(self, fine, coords, coarse)
        rec.setdefault("point_logits", []).append(o.clone())
        return o

    pr_mask_head.mask_rcnn_inference = mri
    pr_mask_head.get_uncertain_point_coords_on_grid = unc
    pr_mask_head.PointRendMaskHead._get_point_logits = gpl
    mh = model.roi_heads.mask_head
    init_res = mh.mask_point_subdivision_init_resolution

    def put(key, arr, dtype=np.float32):
        if isinstance(arr, torch.Tensor):
            arr = arr.detach().cpu().numpy()
        out[key] = np.ascontiguousarray(np.asarray(arr).astype(dtype))

    summary = []
    recon_err = []
    with torch.no_grad():
        for i, inp in enumerate(inputs):
            rec.clear()
            pre = "img%d/" % i
            res = model.inference(inp["batched"], do_postprocess=False)[0]
            h0, w0 = inp["orig"].shape[:2]
            D = len(res)
            cls = res.pred_classes
            put(pre + "orig_hw", [h0, w0], np.int32)
            put(pre + "input_hw", inp["resized"].shape[:2], np.int32)
            put(pre + "padded_hw", padded[i], np.int32)
            put(pre + "input_bgr", inp["resized"], np.uint8)
            if want("image_tensor", i):
                il = model.preprocess_image(inp["batched"])
                put(pre + "image_tensor", il.tensor[0])
            for k in ("p2", "p3", "p4", "p5", "p6"):
                if want(k, i):
                    put(pre + k, rec["feats"][k][0])
            obj, dl = rec["rpn"]
            for l, k in enumerate(in_feats):
                if want("rpn_objectness_" + k, i):
                    put(pre + "rpn_objectness_" + k, obj[l][0])
                if want("rpn_deltas_" + k, i):
                    put(pre + "rpn_deltas_" + k, dl[l][0])
            if i == 0:
                ag = model.proposal_generator.anchor_generator
                for l, k in enumerate(in_feats):
                    put("anchors/cell_" + k, list(ag.cell_anchors)[l])
                    if k in ANCHOR_LEVELS:
                        put("anchors/" + k, rec["anchors"][l].tensor)
            props = rec["props"][0]
            put(pre + "proposals_boxes", props.proposal_boxes.tensor)
            put(pre + "proposals_logits", props.objectness_logits)
            if want("box_features", i):
                put(pre + "box_features", rec["box_in"])
            put(pre + "box_cls_logits", rec["box_out"][0])
            if want("box_deltas", i):
                put(pre + "box_deltas", rec["box_out"][1])
            put(pre + "det_boxes", res.pred_boxes.tensor)
            put(pre + "det_scores", res.scores)
            put(pre + "det_classes", cls, np.int32)
            put(pre + "coarse_logits", rec["coarse_out"][: ndet("coarse_logits", D, i)])
            if want("coarse_input", i):
                put(pre + "coarse_input", rec["coarse_in"][: ndet("coarse_input", D, i)])
            # point-head logits of the predicted class at every subdivision step
            pls = [pl[torch.arange(D), cls] for pl in rec["point_logits"]]  # each (D, P_s)
            nmi = ndet("mask_init_logits", D, i)
            put(pre + "mask_init_logits", pls[0][:nmi].reshape(nmi, 1, init_res, init_res))
            nst = ndet("mask_steps", D, i)
            for s_, idx in enumerate(rec.get("indices", []), start=1):
                put(pre + "mask_step%d_indices" % s_, idx[:nst], np.int32)
                put(pre + "mask_step%d_point_logits" % s_, pls[s_][:nst])
            # the stored steps determine the final 224x224 logits exactly: check it
            rebuilt = reconstruct_mask_logits(out[pre + "mask_init_logits"][:nst, 0],
                                              [(out[pre + "mask_step%d_indices" % s_], out[pre + "mask_step%d_point_logits" % s_])
                                               for s_ in range(1, len(rec.get("indices", [])) + 1)])
            err = float(np.abs(rebuilt - rec["mask_logits"][:nst, 0].numpy()).max()) if nst else 0.0
            assert err < 1e-4, err
            recon_err.append(err)
            if want("mask_logits", i):
                ml = rec["mask_logits"][: ndet("mask_logits", D, i)]
                if small:
                    put(pre + "mask_logits", ml, np.float16)
                    f16.append(pre + "mask_logits")
                else:
                    put(pre + "mask_logits", ml)
            # detector_postprocess mutates the Boxes in place: work on a deep copy
            r2 = copy.deepcopy(res)
            r2.keep_idx = torch.arange(D)
            pp = detector_postprocess(r2, h0, w0)
            put(pre + "post_keep", pp.keep_idx, np.int32)
            put(pre + "post_boxes", pp.pred_boxes.tensor)
            put(pre + "post_scores", pp.scores)
            put(pre + "post_classes", pp.pred_classes, np.int32)
            pm = pp.pred_masks.cpu().numpy().astype(bool)
            assert pm.shape == (len(pp), h0, w0), pm.shape
            put(pre + "post_masks_packed", np.packbits(pm, axis=None), np.uint8)
            sc = res.scores.numpy()
            if D and (sc > 0.9999).sum() > 1:
                print("warning: img%d has %d saturated scores (> 0.9999)" % (i, int((sc > 0.9999).sum())))
            ml_all = rec["mask_logits"]
            summary.append(dict(name=inp["name"], dets=D, post=len(pp),
                                score_min=float(sc.min()) if D else None, score_max=float(sc.max()) if D else None,
                                classes=np.bincount(res.pred_classes.numpy(), minlength=K).tolist(),
                                proposals=len(props),
                                prop_logit_range=[float(props.objectness_logits.min()), float(props.objectness_logits.max())],
                                mask_pos_frac=float((ml_all > 0).float().mean()) if D else 0.0,
                                score_quantiles=[float(q) for q in np.quantile(sc, [0.1, 0.5, 0.9])] if D else []))
            print("img%d %-9s proposals %d, detections %d (post %d), scores [%.3f, %.3f], per class %s, "
                  "score quantiles(.1,.5,.9) %s, mask logits>0 fraction %.3f" % (
                      i, inp["name"], len(props), D, len(pp), summary[-1]["score_min"] or 0,
                      summary[-1]["score_max"] or 0, summary[-1]["classes"],
                      np.round(summary[-1]["score_quantiles"], 3).tolist(), summary[-1]["mask_pos_frac"]))
    for h in hooks:
        h.remove()
    pr_mask_head.mask_rcnn_inference = orig_mri
    pr_mask_head.get_uncertain_point_coords_on_grid = orig_unc
    pr_mask_head.PointRendMaskHead._get_point_logits = orig_gpl

    # ------------------------------------------------------------------- meta
    import torchvision
    meta = {
        "detectron2_commit": commit,
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "numpy_version": np.__version__,
        "size": args.size,
        "seed": args.seed,
        "config_file": CONFIG_REL,
        "config_changes": json.dumps(changes),
        "config_yaml": cfg.dump(),
        "weights_pkl": os.path.basename(pkl_path),
        "weights_sha256": sha,
        "weights_key_layout": layout,
        "weights_keys": json.dumps([[k, list(v.shape)] for k, v in weights.items()]),
        "stored_as_float16": json.dumps(f16),
        "mask_reconstruction_max_abs_err": json.dumps(recon_err),
        "mask_logits_kind": "logits (before sigmoid) of the predicted class, as passed to mask_rcnn_inference",
        "size_policy": json.dumps({"per_image_keys": {k: (None if v is None else list(v)) for k, v in POLICY.items()},
                                   "first_n_detections": N_DETAIL, "anchor_levels": list(ANCHOR_LEVELS)}),
        "pixel_mean": json.dumps(list(cfg.MODEL.PIXEL_MEAN)),
        "pixel_std": json.dumps(list(cfg.MODEL.PIXEL_STD)),
        "background_bias_delta": str(best[1]),
        "summary": json.dumps(summary),
        "keys_doc": KEYS_DOC,
        "images": json.dumps([inp["name"] for inp in inputs]),
    }
    for k, v in meta.items():
        out["meta/" + k] = np.array(v)
    if args.embed_weights:
        for k, v in weights.items():
            out["weights/" + k] = v

    atomic_write(args.out, lambda f: np.savez_compressed(f, **out))
    print("wrote %s (%.2f MB, %d arrays)" % (args.out, os.path.getsize(args.out) / 1e6, len(out)))


if __name__ == "__main__":
    main()
