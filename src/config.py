"""Configuration: default_config.yaml, another YAML file with a subset of its keys, ``--key=value``.

default_config.yaml declares every key once, in three YAML documents (the model-zoo convention):
its default value (whose type the key keeps), a one-line help text, and what it accepts (choices,
a range, or ``any``). Every value, from a file or the command line, is checked against that
declaration, then against the relations between keys (``_check_relations``); any problem raises
``ConfigError`` with a one-line message naming the key. ``--help`` prints every key with its default
and help. Keys of the original configuration that this port deliberately does not use are listed in
``IGNORED_KEYS``: setting one prints why it has no effect (or refuses a value that cannot work).
Values that follow from others are computed here once (``derive``), so no module types them by hand.

This lives in ``src/config.py`` rather than the model zoo's ``src/model_utils/config.py``: without
the model zoo's cloud adapters that folder would hold this one file.
"""
import math
import os
import re
import sys

import yaml

from src.utils.errors import UserError

DEFAULT_CONFIG_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                   "default_config.yaml")

# key -> (why it has no effect, a value that is refused instead of ignored, or None)
IGNORED_KEYS = {
    "enable_profiling": ("use MindSpore's profiler (mindspore.Profiler) around a run instead", None),
    "do_train": ("train.py trains and eval.py evaluates", None),
    "do_eval": ("train.py trains and eval.py evaluates", None),
    "dataset": ("the data are always COCO-format annotation files", None),
    "rank_id": ("the rank comes from the launcher (mpirun / msrun) with run_distribute", None),
    "device_num": ("the number of devices comes from the launcher (mpirun / msrun) with run_distribute", None),
    "rpn_head_weight": ("use rpn_loss_cls_weight and rpn_loss_reg_weight", None),
    "activate_num_classes": ("the RPN has one sigmoid objectness per anchor", None),
    "rpn_head_use_sigmoid": ("only sigmoid objectness is implemented", False),
    "use_sigmoid_cls": ("only sigmoid objectness is implemented", False),
    "roi_align_out_channels": ("RoIAlign keeps the fpn_out_channels of its input", None),
    "roi_layer.type": ("the RoI layer is always RoIAlign", None),
    "min_pos_iou_stage2": ("stage 2 adds the GT boxes to the proposals, so every GT has a RoI of IoU 1", None),
    "rpn_proposal_nms_across_levels": ("proposals are suppressed per level, then the best are kept", None),
    "rpn_nms_across_levels": ("proposals are suppressed per level, then the best are kept", None),
    "rpn_proposal_nms_post": ("rpn_proposal_max_num sets the proposals kept after NMS", None),
    "rpn_nms_post": ("rpn_max_num sets the proposals kept after NMS", None),
    "base_step": ("the number of steps per epoch comes from the data set", None),
    "sgd_momentum": ("use momentum", None),
    "pretrain_epoch_size": ("resume continues from the global step stored in the checkpoint", None),
    "dataset_sink_mode_flag": ("every step runs one batch, so a run has exactly epoch_size x steps_per_epoch "
                               "steps", None),
    "not_mask": ("only the fixed-shape version is implemented (the original's v2 used boolean indexing and "
                 "dynamic shapes); it trains the same model", True),
}

# Keys computed by derive(); they cannot be set.
DERIVED_KEYS = ("feature_shapes", "num_anchors")

HELP_FLAGS = ("-h", "--help")


class ConfigError(UserError, ValueError):
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


# ---------------------------------------------------------------- the declaration

_INTERVAL = re.compile(r"^([\[(])\s*(\S+)\s*,\s*(\S+)\s*([\])])$")
_COMPARISON = re.compile(r"^(>=|>|<=|<)\s*(\S+)$")


class Range:
    """A numeric range written as ``"[0, 1]"``, ``"(0, 1]"``, ``"> 0"`` or ``">= 1"``."""

    def __init__(self, text):
        self.text = text
        interval = _INTERVAL.match(text)
        comparison = _COMPARISON.match(text)
        try:
            if interval:
                left, low, high, right = interval.groups()
                self.low, self.high = float(low), float(high)
                self.low_open, self.high_open = left == "(", right == ")"
            elif comparison:
                op, bound = comparison.group(1), float(comparison.group(2))
                self.low, self.high = (bound, math.inf) if op[0] == ">" else (-math.inf, bound)
                self.low_open = op == ">"
                self.high_open = op == "<"
            else:
                raise ValueError(text)
        except ValueError:
            raise ValueError(f"cannot read the range {text!r}") from None

    def __contains__(self, value):
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def describe(self):
        if _COMPARISON.match(self.text):
            return f"must be {self.text}"
        return f"must be in {self.text}"


class Spec:
    """What one key accepts, from the third document of default_config.yaml.

    ``choices`` (a YAML list), a ``Range``, ``any``, or for list-valued keys {len: RANGE, each: SPEC}
    and for mapping-valued keys {subkey: SPEC}.
    """

    def __init__(self, key, declared, default):
        self.choices = self.range = self.length = self.each = self.fields = None
        try:
            if isinstance(default, dict):
                if not isinstance(declared, dict) or set(declared) != set(default):
                    raise ValueError(f"needs one entry per sub-key {sorted(default)}")
                self.fields = {k: Spec(f"{key}.{k}", v, default[k]) for k, v in declared.items()}
            elif isinstance(default, list):
                if not isinstance(declared, dict) or set(declared) != {"len", "each"}:
                    raise ValueError("needs {len: RANGE, each: SPEC}")
                self.length = Range(declared["len"])
                self.each = Spec(f"{key}[]", declared["each"], default[0] if default else 0)
            elif isinstance(declared, list):
                self.choices = declared
            elif declared != "any":
                if isinstance(default, str):
                    raise ValueError("a string key takes choices or any")
                self.range = Range(str(declared))
        except ValueError as e:
            raise ConfigError(f"{DEFAULT_CONFIG_PATH}: bad declaration of '{key}': {e}") from None

    def check(self, key, value):
        """Raise ConfigError unless ``value`` (already of the right type) is accepted."""
        if self.fields is not None:
            for k, spec in self.fields.items():
                spec.check(f"{key}.{k}", value[k])
        elif self.length is not None:
            if len(value) not in self.length:
                raise ConfigError(f"config key '{key}': its length {self.length.describe()}, got {len(value)} "
                                  f"entries")
            for i, v in enumerate(value):
                self.each.check(f"{key}[{i}]", v)
        elif self.choices is not None:
            if value not in self.choices:
                raise ConfigError(f"config key '{key}': {value!r} is not one of {self.choices}")
        elif self.range is not None and value not in self.range:
            raise ConfigError(f"config key '{key}': {self.range.describe()}, got {value!r}")


class Declaration:
    """The keys of default_config.yaml: defaults, help texts and specs."""

    def __init__(self, path=DEFAULT_CONFIG_PATH):
        with open(path, encoding="utf-8") as f:
            docs = list(yaml.safe_load_all(f))
        if len(docs) != 3 or not all(isinstance(d, dict) for d in docs):
            raise ConfigError(f"{path}: needs three YAML documents (values, help, accepted values)")
        self.defaults, self.help, declared = docs
        for name, doc in (("help", self.help), ("accepted values", declared)):
            unknown = sorted(set(doc) - set(self.defaults))
            if unknown:
                raise ConfigError(f"{path}: the {name} document names unknown key '{unknown[0]}'")
        for key, default in self.defaults.items():
            if not self.help.get(key):
                raise ConfigError(f"{path}: key '{key}' has no help text")
            if key not in declared and not isinstance(default, bool):
                raise ConfigError(f"{path}: key '{key}' does not declare its accepted values")
        self.specs = {k: Spec(k, v, self.defaults[k]) for k, v in declared.items()}

    def check(self, cfg):
        """Raise ConfigError unless every value of ``cfg`` is accepted by its key's spec."""
        for key, spec in self.specs.items():
            spec.check(key, cfg[key])

    def help_text(self, usage=None):
        """What ``--help`` prints: the usage, then every key with its default and help."""
        lines = [usage.strip(), ""] if usage else []
        lines.append("Configuration (default_config.yaml; --config_path=FILE reads another YAML file with a subset "
                     "of the keys; --key=value overrides, values in YAML syntax):")
        for key, default in self.defaults.items():
            shown = yaml.safe_dump(default, default_flow_style=True, width=1 << 20).strip()
            shown = shown.removesuffix("...").strip()
            if len(shown) > 48:
                shown = shown[:45] + "..."
            lines.append(f"  --{key}={shown}")
            lines.append(f"      {self.help[key]}")
        return "\n".join(lines)


SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


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
        if isinstance(value, str) and SCIENTIFIC.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 (PyYAML) reads 1e-6 as a string; only 1.0e-6 is a float there
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
            if f"{key}.{k}" in IGNORED_KEYS:
                _ignore(f"{key}.{k}", v)
                continue
            if k not in default:
                raise ConfigError(f"unknown config key '{key}.{k}'")
            out[k] = _check_type(f"{key}.{k}", default[k], v)
        return out
    raise ConfigError(f"config key '{key}': unsupported default type {type(default).__name__}")


def _ignore(key, value):
    """Warn that ``key`` has no effect, or refuse the one value of it that cannot work."""
    reason, refused = IGNORED_KEYS[key]
    if refused is not None and value == refused:
        raise ConfigError(f"config key '{key}': {value!r} is not supported: {reason}")
    print(f"warning: config key '{key}' is ignored: {reason}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- loading

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


def _read_values(path):
    """The key -> value mapping of a config file (its first YAML document)."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            docs = list(yaml.safe_load_all(f))
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not docs or not isinstance(docs[0], dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    return docs[0]


def _set(cfg, declaration, key, value, where):
    """Set ``key`` (``top`` or ``top.sub``) to ``value`` after checking it."""
    top, _, sub = key.partition(".")
    if key in IGNORED_KEYS:
        _ignore(key, value)
        return
    if top in DERIVED_KEYS:
        raise ConfigError(f"config key '{top}' is derived from others and cannot be set")
    if top not in declaration.defaults or (sub and (not isinstance(cfg[top], dict) or sub not in cfg[top])):
        raise ConfigError(f"unknown config key '{key}'{where}")
    if sub:
        cfg[top][sub] = _check_type(key, declaration.defaults[top][sub], value)
    else:
        cfg[top] = _to_config(_check_type(key, declaration.defaults[top], value))


def _check_relations(cfg):
    """Checks that involve several keys (each key alone was checked against its declaration)."""
    if cfg.num_classes == 1:
        raise ConfigError("config key 'num_classes': needs background + at least one class, got 1")
    if len(cfg.anchor_strides) != cfg.fpn_num_outs:
        raise ConfigError(f"config key 'anchor_strides': needs {cfg.fpn_num_outs} entries (fpn_num_outs), "
                          f"got {len(cfg.anchor_strides)}")
    if cfg.fpn_num_outs != len(cfg.fpn_in_channels) + 1:
        raise ConfigError(f"config key 'fpn_num_outs': must be {len(cfg.fpn_in_channels) + 1} (one level more "
                          f"than fpn_in_channels), got {cfg.fpn_num_outs}")
    if len(cfg.roi_align_featmap_strides) != len(cfg.fpn_in_channels):
        raise ConfigError("config key 'roi_align_featmap_strides': needs one stride per backbone level")
    channels = {"fpn_out_channels": cfg.fpn_out_channels, "rpn_in_channels": cfg.rpn_in_channels,
                "rcnn_in_channels": cfg.rcnn_in_channels}
    if len(set(channels.values())) != 1:
        raise ConfigError(f"config keys {sorted(channels)} must be equal (the heads read FPN features), got {channels}")
    if list(cfg.fpn_in_channels) != list(cfg.resnet_out_channels):
        raise ConfigError("config key 'fpn_in_channels': must equal resnet_out_channels")
    if list(cfg.resnet_in_channels[1:]) != list(cfg.resnet_out_channels[:-1]):
        raise ConfigError(f"config key 'resnet_in_channels': each stage after the first takes the previous one's "
                          f"output, so it must be [stem] + resnet_out_channels[:3], got {cfg.resnet_in_channels} "
                          f"with resnet_out_channels {cfg.resnet_out_channels}")
    if cfg.point_feature_stride not in cfg.roi_align_featmap_strides:
        raise ConfigError(f"config key 'point_feature_stride': {cfg.point_feature_stride} is not one of "
                          f"roi_align_featmap_strides {cfg.roi_align_featmap_strides}")
    if cfg.coarse_in_resolution != 2 * cfg.coarse_out_resolution:
        raise ConfigError("config key 'coarse_in_resolution': must be 2 x coarse_out_resolution "
                          "(one 2x2 stride-2 conv)")
    if list(cfg.mask_shape) != [2 * cfg.roi_layer.mask_out_size] * 2:
        raise ConfigError(f"config key 'mask_shape': must be [{2 * cfg.roi_layer.mask_out_size}, "
                          f"{2 * cfg.roi_layer.mask_out_size}] (the standard head doubles roi_layer.mask_out_size)")
    if cfg.coco_category_ids and len(cfg.coco_category_ids) != len(cfg.coco_classes) - 1:
        raise ConfigError(f"config key 'coco_category_ids': needs one id per class of coco_classes after the "
                          f"background ({len(cfg.coco_classes) - 1}), got {len(cfg.coco_category_ids)}")
    if cfg.num_expected_pos_stage2 > cfg.num_expected_total_stage2:
        raise ConfigError("config key 'num_expected_pos_stage2': larger than num_expected_total_stage2")
    if cfg.amp_level != "O0" and cfg.amp_dtype == "bfloat16" and cfg.device_target == "CPU":
        raise ConfigError("config key 'amp_dtype': bfloat16 needs a GPU (MindSpore 2.10's CPU convolution has no "
                          "bfloat16 kernel); use float16 or amp_level O0 on CPU")
    if cfg.epoch_size > cfg.total_epoch:
        raise ConfigError(f"config key 'epoch_size': {cfg.epoch_size} epochs exceed the LR schedule "
                          f"(total_epoch={cfg.total_epoch})")


def derive(cfg):
    """Fill in the keys that follow from others, and the runtime defaults of a single process
    (``setup_context`` sets rank_id and device_num from the launcher in a distributed run)."""
    cfg.feature_shapes = [[math.ceil(cfg.img_height / s), math.ceil(cfg.img_width / s)]
                          for s in cfg.anchor_strides]
    cfg.num_anchors = len(cfg.anchor_scales) * len(cfg.anchor_ratios)
    cfg.rank_id = 0
    cfg.device_num = 1
    return cfg


def load_config(argv=None, path=None, usage=None):
    """Load the YAML config, apply ``--key=value`` overrides from ``argv``, validate and derive.

    ``--config_path=FILE`` in argv selects another YAML file (a subset of the keys; the rest keep
    their defaults). ``--help`` / ``-h`` prints ``usage`` and every key, then exits.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    declaration = Declaration()
    if any(a in HELP_FLAGS for a in argv):
        print(declaration.help_text(usage), flush=True)
        raise SystemExit(0)
    overrides = _parse_overrides(argv)
    path = overrides.pop("config_path", None) or path or DEFAULT_CONFIG_PATH
    cfg = _to_config(declaration.defaults)
    if os.path.abspath(path) != os.path.abspath(DEFAULT_CONFIG_PATH):
        for key, value in _read_values(path).items():
            _set(cfg, declaration, key, value, f" in {path}")
    for key, raw in overrides.items():
        _set(cfg, declaration, key, _parse_value(key, raw), "")
    declaration.check(cfg)
    _check_relations(cfg)
    return derive(cfg)


def config_from_dict(overrides):
    """Test/bench helper: the default config with ``{key: python value}`` overrides."""
    return load_config([f"--{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                        for k, v in overrides.items()])


def require(cfg, key, hint):
    """ConfigError ``config key 'key': hint`` when ``cfg[key]`` is empty."""
    if not cfg[key]:
        raise ConfigError(f"config key '{key}': {hint}")
