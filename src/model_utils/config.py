"""Configuration: default_config.yaml + ``--key=value`` command-line overrides.

The YAML file holds plain values only. Command-line values are parsed as YAML scalars/lists
(``--img_height=512``, ``--anchor_ratios=[0.5,1,2]``, ``--roi_layer.sample_num=2``) and must have the
type of the default. Unknown keys and wrongly typed values raise ``ConfigError`` with a one-line
message naming the key. Values derived from others (feature map shapes, anchor counts, ...) are
computed here once, so no module types them by hand.
"""
import math
import os
import sys

import yaml

DEFAULT_CONFIG_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                   "default_config.yaml")

CHOICES = {
    "device_target": ("GPU", "CPU"),
    "backbone_norm": ("frozen_bn", "bn", "gn"),
    "mask_head": ("pointrend", "standard"),
    "file_format": ("MINDIR",),
    "lr_schedule": ("cosine", "step"),
    "stage": ("infer", "postprocess", "all"),
}

# Keys computed by derive(); they may not be set by hand.
DERIVED_KEYS = ("feature_shapes", "num_bboxes", "num_anchors", "num_gts", "num_bboxes_stage2",
                "roi_sample_num", "rank_size")


class ConfigError(ValueError):
    """A bad configuration key or value (message is one line, naming the key)."""


class Config(dict):
    """A dict whose keys are also attributes (``config.img_height``)."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"config has no key '{key}'") from None

    def __setattr__(self, key, value):
        self[key] = value


def _to_config(value):
    if isinstance(value, dict):
        return Config({k: _to_config(v) for k, v in value.items()})
    return value


def _type_name(value):
    return type(value).__name__


def _check_type(key, default, value):
    """Return ``value`` converted to the type of ``default`` or raise ConfigError."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected true/false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
        return float(value)
    if isinstance(default, str):
        if value is None:
            return ""
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
        return value
    if isinstance(default, list):
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        if default and value:
            return [_check_type(f"{key}[{i}]", default[0], v) for i, v in enumerate(value)]
        return value
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        out = dict(default)
        for k, v in value.items():
            if k not in default:
                raise ConfigError(f"unknown config key '{key}.{k}'")
            out[k] = _check_type(f"{key}.{k}", default[k], v)
        return out
    raise ConfigError(f"config key '{key}': unsupported default type {_type_name(default)}")


def _parse_overrides(argv):
    """``['--a=1', '--b', '2']`` -> ``{'a': '1', 'b': '2'}`` (raw strings)."""
    overrides = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected command-line argument {arg!r} (use --key=value)")
        if "=" in arg:
            key, raw = arg[2:].split("=", 1)
        else:
            if i + 1 >= len(argv):
                raise ConfigError(f"command-line option '{arg}' has no value (use --key=value)")
            key, raw = arg[2:], argv[i + 1]
            i += 1
        overrides[key.replace("-", "_")] = raw
        i += 1
    return overrides


def _parse_value(key, raw):
    try:
        return yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        raise ConfigError(f"config key '{key}': cannot parse value {raw!r}") from None


def _validate(cfg):
    for key, allowed in CHOICES.items():
        if cfg[key] not in allowed:
            raise ConfigError(f"config key '{key}': {cfg[key]!r} is not one of {list(allowed)}")
    positive = ("img_height", "img_width", "batch_size", "test_batch_size", "max_instance_count",
                "gt_mask_size", "train_num_points", "subdivision_num_points", "test_max_per_img",
                "rpn_proposal_max_num", "rpn_max_num", "num_expected_pos_stage2", "fpn_out_channels")
    for key in positive:
        if cfg[key] <= 0:
            raise ConfigError(f"config key '{key}': must be > 0, got {cfg[key]}")
    for key in ("flip_ratio", "expand_ratio", "importance_sample_ratio", "test_score_thr", "mask_thr_binary",
                "warmup_ratio"):
        if not 0.0 <= cfg[key] <= 1.0:
            raise ConfigError(f"config key '{key}': must be in [0, 1], got {cfg[key]}")
    if cfg.oversample_ratio < 1.0:
        raise ConfigError(f"config key 'oversample_ratio': must be >= 1, got {cfg.oversample_ratio}")
    if len(cfg.anchor_strides) != cfg.fpn_num_outs:
        raise ConfigError(f"config key 'anchor_strides': needs {cfg.fpn_num_outs} entries (fpn_num_outs), "
                          f"got {len(cfg.anchor_strides)}")
    if len(cfg.roi_align_featmap_strides) != len(cfg.fpn_in_channels):
        raise ConfigError("config key 'roi_align_featmap_strides': needs one stride per backbone level")
    channels = {"fpn_out_channels": cfg.fpn_out_channels, "rpn_in_channels": cfg.rpn_in_channels,
                "rcnn_in_channels": cfg.rcnn_in_channels, "roi_align_out_channels": cfg.roi_align_out_channels}
    if len(set(channels.values())) != 1:
        raise ConfigError(f"config keys {sorted(channels)} must be equal (the heads read FPN features), got {channels}")
    if list(cfg.fpn_in_channels) != list(cfg.resnet_out_channels):
        raise ConfigError("config key 'fpn_in_channels': must equal resnet_out_channels")
    if cfg.point_feature_stride not in cfg.roi_align_featmap_strides:
        raise ConfigError(f"config key 'point_feature_stride': {cfg.point_feature_stride} is not one of "
                          f"roi_align_featmap_strides {cfg.roi_align_featmap_strides}")
    if not 0 <= cfg.freeze_at <= 5:
        raise ConfigError(f"config key 'freeze_at': must be in 0..5, got {cfg.freeze_at}")
    if cfg.coarse_in_resolution != 2 * cfg.coarse_out_resolution:
        raise ConfigError("config key 'coarse_in_resolution': must be 2 x coarse_out_resolution "
                          "(one 2x2 stride-2 conv)")
    if cfg.num_expected_pos_stage2 > cfg.num_expected_total_stage2:
        raise ConfigError("config key 'num_expected_pos_stage2': larger than num_expected_total_stage2")
    if cfg.epoch_size > cfg.total_epoch:
        raise ConfigError(f"config key 'epoch_size': {cfg.epoch_size} epochs exceed the LR schedule "
                          f"(total_epoch={cfg.total_epoch})")
    if cfg.not_mask:
        raise ConfigError("config key 'not_mask': the original's v2 (boolean indexing, dynamic shapes) is not "
                          "supported; the default fixed-shape version trains the same model")
    if not cfg.rpn_head_use_sigmoid or not cfg.use_sigmoid_cls:
        raise ConfigError("config keys 'rpn_head_use_sigmoid'/'use_sigmoid_cls': only sigmoid objectness is "
                          "implemented")
    if cfg.num_classes == 1 or cfg.num_classes < 0:
        raise ConfigError(f"config key 'num_classes': needs background + at least one class, got {cfg.num_classes}")


def derive(cfg):
    """Fill in the keys that follow from others (see the header of default_config.yaml)."""
    cfg.feature_shapes = [[math.ceil(cfg.img_height / s), math.ceil(cfg.img_width / s)]
                          for s in cfg.anchor_strides]
    cfg.num_anchors = len(cfg.anchor_scales) * len(cfg.anchor_ratios)
    cfg.num_bboxes = sum(h * w * cfg.num_anchors for h, w in cfg.feature_shapes)
    cfg.num_gts = cfg.max_instance_count
    cfg.num_bboxes_stage2 = cfg.rpn_proposal_max_num
    cfg.roi_sample_num = cfg.num_expected_total_stage2
    cfg.rank_size = cfg.device_num
    return cfg


def load_config(argv=None, path=None):
    """Load the YAML config, apply ``--key=value`` overrides from ``argv``, validate and derive.

    ``--config_path=FILE`` in argv selects another YAML file.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = _parse_overrides(argv)
    path = overrides.pop("config_path", None) or path or DEFAULT_CONFIG_PATH
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            raw = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    base = raw
    if os.path.abspath(path) != os.path.abspath(DEFAULT_CONFIG_PATH):
        # Another file may set a subset: its keys are checked against the defaults.
        with open(DEFAULT_CONFIG_PATH, encoding="utf-8") as f:
            base = yaml.safe_load(f)
        for key, value in raw.items():
            if key not in base:
                raise ConfigError(f"unknown config key '{key}' in {path}")
            base[key] = _check_type(key, base[key], value)
    cfg = _to_config(base)
    for key, raw_value in overrides.items():
        top, _, sub = key.partition(".")
        if top in DERIVED_KEYS:
            raise ConfigError(f"config key '{top}' is derived from others and cannot be set")
        if top not in cfg:
            raise ConfigError(f"unknown config key '{key}'")
        value = _parse_value(key, raw_value)
        if sub:
            if not isinstance(cfg[top], dict) or sub not in cfg[top]:
                raise ConfigError(f"unknown config key '{key}'")
            cfg[top][sub] = _check_type(key, cfg[top][sub], value)
        else:
            cfg[top] = _to_config(_check_type(key, cfg[top], value))
    _validate(cfg)
    return derive(cfg)


def config_from_dict(overrides):
    """Test/bench helper: the default config with ``{key: python value}`` overrides."""
    return load_config([f"--{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                        for k, v in overrides.items()])
