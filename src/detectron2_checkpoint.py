"""detectron2 PointRend / Mask R-CNN weights -> this network's parameter names and layouts (numpy only).

detectron2 checkpoints (``.pkl``: a pickle of {"model": {name: numpy array}, ...}) name layers by
module path. What changes on the way:
- names: ``backbone.bottom_up.resN.i.convK(.norm)`` -> ``backbone.layer{N-1}.i.convK`` / ``bnK``,
  ``shortcut`` -> ``conv_down_sample`` / ``bn_down_sample``, FrozenBN weight/bias/running_mean/
  running_var -> gamma/beta/moving_mean/moving_variance; FPN, RPN, box head and PointRend heads
  by the table in ``_direct_name``;
- classes: detectron2 puts the background LAST in ``cls_score`` and has no background entry in the
  class-specific layers (``bbox_pred``, the coarse mask prediction, the point head); this network
  has the background as class 0 everywhere. Background entries of class-specific layers are zero
  (never read at inference: boxes and masks are decoded for classes 1..K only), and the point head's
  extra input channel (the background coarse logit) gets zero weights, so outputs are unchanged;
- layouts: the box head's FCs are stored (in, out) here (``DenseNoTranpose``); Conv1d weights
  (out, in, 1) become (out, in, 1, 1).

ImageNet backbones in Caffe2 naming (detectron2's ``R-50.pkl`` / ``R-101.pkl``, the initialisation of
its COCO recipes: ``conv1_w``, ``res_conv1_bn_s``, ``res2_0_branch2a_w``, ...) are renamed as
detectron2 renames them (``convert_basic_c2_names``) and give the backbone only; their AffineChannel
norms (scale, bias) become BatchNorm with moving mean 0 and variance 1, as detectron2's
FrozenBatchNorm2d loads them; the ImageNet classifier and ``*_momentum`` blobs are left out.

Both PointRend key layouts are read: the published 1x/3x files (``roi_heads.mask_coarse_head.*``,
``roi_heads.mask_point_head.*``) and detectron2's current one (``roi_heads.mask_head.coarse_head.*``,
``roi_heads.mask_head.point_head.*``).

With a ``num_classes`` other than the source's, everything but the class-specific layers is kept
(fine-tuning on another data set): the classifier, the box regressor, the coarse prediction and the
point predictor are left out (the network initialises them) and the point head's coarse-logit
input columns are zero.
"""
import os
import pickle
import re

import numpy as np

from src.utils.errors import UserError

# keys that hold no weights of the network: input normalisation is config (img_mean/img_std), anchors
# are generated from the config
NON_WEIGHT_KEYS = ("pixel_mean", "pixel_std")
NON_WEIGHT_PREFIXES = ("proposal_generator.anchor_generator.",)

OLD_TO_NEW_PREFIXES = (("roi_heads.mask_coarse_head.", "roi_heads.mask_head.coarse_head."),
                       ("roi_heads.mask_point_head.", "roi_heads.mask_head.point_head."))

BN_NAMES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}


class ConversionError(UserError, ValueError):
    """A detectron2 checkpoint that cannot be converted (one-line message naming the key)."""


def read_detectron2_weights(path):
    """{name: float32 numpy array} of a detectron2 ``.pkl`` or ``.pth`` checkpoint.

    ``.pth`` files need torch (not a dependency of this project): without it, a ConversionError
    says so.
    """
    if not os.path.isfile(path):
        raise ConversionError(f"detectron2 checkpoint not found: {path}")
    if path.endswith(".pth"):
        try:
            import torch  # pylint: disable=import-outside-toplevel
        except ImportError:
            raise ConversionError(f"{path}: reading .pth files needs torch (pip install torch); detectron2's "
                                  "published .pkl files need nothing") from None
        data = torch.load(path, map_location="cpu", weights_only=False)
        model = data.get("model", data) if isinstance(data, dict) else None
        if not isinstance(model, dict):
            raise ConversionError(f"{path}: no 'model' state dict in this .pth file")
        return {k: v.detach().cpu().numpy() for k, v in model.items() if hasattr(v, "detach")}
    try:
        with open(path, "rb") as f:
            data = pickle.load(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as e:
        raise ConversionError(f"{path}: not a detectron2 .pkl checkpoint ({type(e).__name__}: {e})") from None
    if isinstance(data, dict) and "blobs" in data:  # Caffe2 Detectron files
        data = data["blobs"]
    model = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(model, dict) or not model:
        raise ConversionError(f"{path}: expected a pickle of {{'model': {{name: array}}}}")
    out = {}
    for name, value in model.items():
        array = np.asarray(value)
        if array.dtype.kind not in "fiu":
            raise ConversionError(f"{path}: key {name!r} is not a numeric array")
        out[name] = array
    return out


def _new_layout(name):
    for old, new in OLD_TO_NEW_PREFIXES:
        if name.startswith(old):
            return new + name[len(old):]
    return name


def _backbone_name(rest):
    """Name under ``backbone.bottom_up.`` -> ours, or None."""
    m = re.fullmatch(r"stem\.conv1\.(weight)", rest)
    if m:
        return "backbone.conv1.weight"
    m = re.fullmatch(r"stem\.conv1\.norm\.(\w+)", rest)
    if m and m.group(1) in BN_NAMES:
        return f"backbone.bn1.{BN_NAMES[m.group(1)]}"
    m = re.fullmatch(r"res([2-5])\.(\d+)\.(conv[123]|shortcut)\.weight", rest)
    if m:
        conv = "conv_down_sample" if m.group(3) == "shortcut" else m.group(3)
        return f"backbone.layer{int(m.group(1)) - 1}.{m.group(2)}.{conv}.weight"
    m = re.fullmatch(r"res([2-5])\.(\d+)\.(conv[123]|shortcut)\.norm\.(\w+)", rest)
    if m and m.group(4) in BN_NAMES:
        bn = "bn_down_sample" if m.group(3) == "shortcut" else "bn" + m.group(3)[-1]
        return f"backbone.layer{int(m.group(1)) - 1}.{m.group(2)}.{bn}.{BN_NAMES[m.group(4)]}"
    return None


CAFFE2_IGNORED = re.compile(r"(fc1000|pred)_[wb]$|_momentum$")  # ImageNet classifier, optimizer state


def is_caffe2_backbone(state):
    """True for an ImageNet ResNet in Caffe2 naming (``R-50.pkl``)."""
    return "conv1_w" in state and "res2_0_branch2a_w" in state


def _caffe2_to_detectron2(name):
    """Caffe2 blob name -> detectron2's name under ``backbone.bottom_up.`` (its basic renaming)."""
    name = name.replace("_", ".")
    name = re.sub(r"\.b$", ".bias", name)
    name = re.sub(r"\.w$", ".weight", name)
    name = re.sub(r"bn\.s$", "norm.weight", name)
    name = re.sub(r"bn\.bias$", "norm.bias", name)
    name = re.sub(r"^res\.conv1\.norm\.", "conv1.norm.", name)
    name = re.sub(r"^conv1\.", "stem.conv1.", name)
    for c2, d2 in ((".branch1.", ".shortcut."), (".branch2a.", ".conv1."), (".branch2b.", ".conv2."),
                   (".branch2c.", ".conv3.")):
        name = name.replace(c2, d2)
    return name


def convert_caffe2_backbone(state):
    """Caffe2 ImageNet ResNet -> ({our backbone parameter name: array}, [ignored names]).

    Raises ConversionError naming the first blob that is not a backbone weight.
    """
    params, ignored = {}, []
    for name in sorted(state):
        if CAFFE2_IGNORED.search(name):
            ignored.append(name)
            continue
        ours = _backbone_name(_caffe2_to_detectron2(name))
        if ours is None:
            raise ConversionError(f"unrecognised Caffe2 blob {name!r} (shape {tuple(np.shape(state[name]))}): not "
                                  "a ResNet backbone weight")
        params[ours] = np.ascontiguousarray(state[name], np.float32)
        if ours.endswith(".gamma"):  # AffineChannel: no statistics, FrozenBatchNorm2d loads 0 and 1
            norm = ours[:-len("gamma")]
            params[norm + "moving_mean"] = np.zeros_like(params[ours])
            params[norm + "moving_variance"] = np.ones_like(params[ours])
    return params, ignored


def _direct_name(name):
    """Our name of a layer copied without change of layout (or a transposed FC), or None."""
    if name.startswith("backbone.bottom_up."):
        return _backbone_name(name[len("backbone.bottom_up."):])
    m = re.fullmatch(r"backbone\.fpn_(lateral|output)([2-5])\.(weight|bias)", name)
    if m:
        cells = "lateral_convs_list" if m.group(1) == "lateral" else "fpn_convs_list"
        return f"fpn_ncek.{cells}.{int(m.group(2)) - 2}.{m.group(3)}"
    m = re.fullmatch(r"proposal_generator\.rpn_head\.(conv|objectness_logits|anchor_deltas)\.(weight|bias)", name)
    if m:
        cell = {"conv": "rpn_conv", "objectness_logits": "rpn_cls", "anchor_deltas": "rpn_reg"}[m.group(1)]
        return f"rpn_with_loss.rpn_convs_list.0.{cell}.{m.group(2)}"
    m = re.fullmatch(r"roi_heads\.box_head\.fc([12])\.(weight|bias)", name)
    if m:
        return f"rcnn_cls.fpn_cls.shared_fc_{int(m.group(1)) - 1}.{m.group(2)}"
    m = re.fullmatch(r"roi_heads\.mask_head\.coarse_head\.reduce_spatial_dim_conv\.(weight|bias)", name)
    if m:
        return f"mask_coarse_head.reduce_spatial_dim_conv.{m.group(1)}"
    m = re.fullmatch(r"roi_heads\.mask_head\.coarse_head\.(?:coarse_mask_)?fc(\d+)\.(weight|bias)", name)
    if m:
        return f"mask_coarse_head.fcs_seq.{int(m.group(1)) - 1}.{m.group(2)}"
    return None


def _with_background_rows(array, groups, rows_per_class):
    """Insert a zero background class before the K classes of ``array``'s first axis.

    Args:
        array: (K * rows_per_class, ...) class-major rows; groups: K.
    Returns:
        ((K + 1) * rows_per_class, ...).
    """
    zeros = np.zeros((rows_per_class,) + array.shape[1:], array.dtype)
    return np.concatenate([zeros, array.reshape((groups * rows_per_class,) + array.shape[1:])], 0)


def _with_background_column(weight, position):
    """(out, in) -> (out, in + 1) with a zero column at ``position`` (the background coarse logit)."""
    return np.insert(weight, position, 0.0, axis=1)


def source_num_classes(state):
    """Foreground classes K of a detectron2 state dict (from ``roi_heads.box_predictor.cls_score``)."""
    key = "roi_heads.box_predictor.cls_score.weight"
    if key not in state:
        raise ConversionError(f"no {key!r}: not a detectron2 Mask R-CNN / PointRend checkpoint")
    return state[key].shape[0] - 1


def convert_state_dict(state, num_classes=None):
    """detectron2 weights -> {our parameter name: float32 array}.

    Args:
        state: {detectron2 name: array} (``read_detectron2_weights``).
        num_classes: classes of the target network including background; None = the source's K + 1.
    Returns:
        (params, report): report holds ``converted`` (count), ``ignored`` [names that are not
        weights], ``reinitialised`` [our names of class-specific layers left to the network's
        initialiser], ``num_classes``, ``source_classes`` (both None for an ImageNet backbone,
        ``backbone_only`` True then).
    Raises:
        ConversionError naming the first key it does not recognise or whose shape is unexpected.
    """
    if is_caffe2_backbone(state):
        params, ignored = convert_caffe2_backbone(state)
        return params, {"converted": len(params), "ignored": ignored, "reinitialised": [], "num_classes": None,
                        "source_classes": None, "backbone_only": True}
    state = {_new_layout(k): np.asarray(v, np.float32) for k, v in state.items()}
    k = source_num_classes(state)
    target = k + 1 if num_classes is None else int(num_classes)
    if target < 2:
        raise ConversionError(f"--num_classes must be >= 2 (background included), got {target}")
    same_classes = target == k + 1
    params, ignored, reinit = {}, [], []

    def put(ours, value):
        params[ours] = np.ascontiguousarray(value, np.float32)

    point_fc_in = {}
    for name in sorted(state):
        value = state[name]
        if name in NON_WEIGHT_KEYS or name.startswith(NON_WEIGHT_PREFIXES):
            ignored.append(name)
            continue
        ours = _direct_name(name)
        if ours is not None:
            if ours.startswith("rcnn_cls.fpn_cls.shared_fc_") and ours.endswith(".weight"):
                value = value.T  # (out, in) -> (in, out)
            put(ours, value)
            continue
        m = re.fullmatch(r"roi_heads\.box_predictor\.(cls_score|bbox_pred)\.(weight|bias)", name)
        if m:
            kind, field = m.groups()
            ours = f"rcnn_cls.fpn_cls.{'cls_scores' if kind == 'cls_score' else 'reg_scores'}.{field}"
            if not same_classes:
                reinit.append(ours)
                continue
            if kind == "cls_score":
                if value.shape[0] != k + 1:
                    raise ConversionError(f"key {name!r}: expected {k + 1} rows, got shape {value.shape}")
                value = np.concatenate([value[k:], value[:k]], 0)  # background last -> first
            else:
                if value.shape[0] != 4 * k:
                    raise ConversionError(f"key {name!r}: expected {4 * k} rows (class-specific boxes), got "
                                          f"shape {value.shape}")
                value = _with_background_rows(value, k, 4)
            put(ours, value.T if field == "weight" else value)
            continue
        m = re.fullmatch(r"roi_heads\.mask_head\.coarse_head\.prediction\.(weight|bias)", name)
        if m:
            ours = f"mask_coarse_head.prediction.{m.group(1)}"
            if not same_classes:
                reinit.append(ours)
                continue
            cells, rest = divmod(value.shape[0], k)
            if rest:
                raise ConversionError(f"key {name!r}: {value.shape[0]} rows are not {k} classes x cells")
            put(ours, _with_background_rows(value, k, cells))
            continue
        m = re.fullmatch(r"roi_heads\.mask_head\.point_head\.(fc(\d+)|predictor)\.(weight|bias)", name)
        if m:
            layer, index, field = m.groups()
            cell = f"seq.{int(index) - 1}" if layer != "predictor" else "predictor"
            ours = f"mask_point_head.{cell}.{field}"
            if layer == "predictor" and not same_classes:
                reinit.append(ours)
                continue
            if field == "weight":
                if value.ndim != 3 or value.shape[2] != 1:
                    raise ConversionError(f"key {name!r}: expected a Conv1d weight (out, in, 1), got {value.shape}")
                weight = value[:, :, 0]
                coarse_from = weight.shape[1] - k  # input = [fine or hidden features, K coarse logits]
                point_fc_in[ours] = coarse_from
                extra = np.zeros((weight.shape[0], target - 1), np.float32)
                if same_classes:
                    weight = _with_background_column(weight, coarse_from)
                else:
                    weight = np.concatenate([weight[:, :coarse_from], np.zeros((weight.shape[0], 1), np.float32),
                                             extra], 1)
                if layer == "predictor":
                    weight = _with_background_rows(weight, k, 1)
                put(ours, weight[:, :, None, None])
            else:
                put(ours, _with_background_rows(value, k, 1) if layer == "predictor" else value)
            continue
        raise ConversionError(f"unrecognised detectron2 key {name!r} (shape {tuple(value.shape)}): not converted; "
                              "is this a PointRend / Mask R-CNN R50/R101-FPN checkpoint?")
    if not same_classes:
        reinit.extend(f"{n} (coarse-logit input columns zero)" for n in point_fc_in if "predictor" not in n)
    report = {"converted": len(params), "ignored": ignored, "reinitialised": reinit, "num_classes": target,
              "source_classes": k, "backbone_only": False}
    return params, report
