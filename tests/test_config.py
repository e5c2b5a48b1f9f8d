"""Config loading, overrides, validation against the declaration, ignored keys, derived values, --help."""
import os
import re
import subprocess
import sys

import pytest
import yaml

from src.config import DEFAULT_CONFIG_PATH, IGNORED_KEYS, ConfigError, Declaration, load_config
from src.maskrcnn.anchor_generator import multi_level_anchors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_defaults_and_derived_values():
    cfg = load_config([])
    assert cfg.img_height == 768 and cfg.img_width == 1280
    assert cfg.feature_shapes == [[192, 320], [96, 160], [48, 80], [24, 40], [12, 20]]
    assert cfg.num_anchors == 3
    anchors = multi_level_anchors(cfg.feature_shapes, cfg.anchor_strides, cfg.anchor_scales, cfg.anchor_ratios)
    assert sum(len(a) for a in anchors) == 245520  # the model zoo's hand-typed num_bboxes
    assert cfg.roi_layer.out_size == 7 and cfg.roi_layer.mask_out_size == 14
    assert len(cfg.coco_classes) == 81 and cfg.num_classes == 81
    assert cfg.rank_id == 0 and cfg.device_num == 1  # a single process until setup_context says otherwise


def test_yaml_is_plain():
    with open(DEFAULT_CONFIG_PATH, encoding="utf-8") as f:
        values, helps, _ = yaml.safe_load_all(f)
    assert all(isinstance(h, str) and "\n" not in h for h in helps.values())

    def walk(v):
        if isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
        else:
            assert isinstance(v, (bool, int, float, str)), v
            if isinstance(v, str):
                # no Python literals or arithmetic that YAML would read as strings ("(28, 28)", "1/3.0")
                assert not v.startswith(("(", "dict(", "[")), v
                assert not re.fullmatch(r"\s*\d[\d.]*\s*[/*]\s*[\d.]+\s*", v), v

    walk(values)


def test_overrides_are_typed_and_rederive():
    cfg = load_config(["--img_height=256", "--img_width", "320", "--flip_ratio=0", "--anchor_ratios=[1.0]",
                       "--roi_layer.sample_num=3", "--device_target=CPU", "--keep_ratio=False"])
    assert cfg.img_height == 256 and cfg.img_width == 320
    assert isinstance(cfg.flip_ratio, float) and cfg.flip_ratio == 0.0
    assert cfg.num_anchors == 1 and cfg.feature_shapes[0] == [64, 80]
    assert cfg.feature_shapes == [[64, 80], [32, 40], [16, 20], [8, 10], [4, 5]]
    assert cfg.roi_layer.sample_num == 3 and cfg.keep_ratio is False
    # PyYAML reads 1e-6 (no dot) as a string; numbers in scientific notation are numbers all the same
    cfg = load_config(["--weight_decay=1e-4", "--base_lr=2E-2", "--anchor_ratios=[5e-1,1,2]"])
    assert cfg.weight_decay == 1e-4 and cfg.base_lr == 0.02 and cfg.anchor_ratios == [0.5, 1.0, 2.0]


@pytest.mark.parametrize("argv, needle", [
    (["--img_hieght=512"], "unknown config key 'img_hieght'"),
    (["--img_height=abc"], "'img_height': expected an integer"),
    (["--img_height=1.5"], "'img_height': expected an integer"),
    (["--flip_ratio=2"], "'flip_ratio': must be in [0, 1]"),
    (["--keep_ratio=maybe"], "'keep_ratio': expected true/false"),
    (["--device_target=TPU"], "'device_target'"),
    (["--anchor_ratios=0.5"], "'anchor_ratios': expected a list"),
    (["--roi_layer.size=3"], "unknown config key 'roi_layer.size'"),
    (["--feature_shapes=[[1,1]]"], "'feature_shapes' is derived"),
    (["--num_bboxes=3"], "unknown config key 'num_bboxes'"),
    (["--not_mask=True"], "'not_mask': True is not supported"),
    (["--rpn_head_use_sigmoid=False"], "'rpn_head_use_sigmoid': False is not supported"),
    # ranges, lengths and list entries from the declaration
    (["--subdivision_steps=99"], "'subdivision_steps': must be in [1, 6], got 99"),
    (["--anchor_ratios=[]"], "'anchor_ratios': its length must be >= 1"),
    (["--anchor_ratios=[1.0,-2.0]"], "'anchor_ratios[1]': must be > 0"),
    (["--roi_layer.sample_num=-1"], "'roi_layer.sample_num': must be >= 0"),
    (["--test_iou_thr=0"], "'test_iou_thr': must be in (0, 1]"),
    (["--momentum=1.0"], "'momentum': must be in [0, 1)"),
    (["--weight_decay=1e-4x"], "'weight_decay': expected a number"),
    (["--img_std=[1,1]"], "'img_std': its length must be in [3, 3]"),
    (["--lr_schedule=linear"], "'lr_schedule': 'linear' is not one of ['cosine', 'step']"),
    (["--rcnn_num_layers=3"], "'rcnn_num_layers': 3 is not one of [2]"),
    # relations between keys
    (["--mask_shape=[14,14]"], "'mask_shape': must be [28, 28]"),
    (["--fpn_num_outs=4", "--anchor_strides=[4,8,16,32]"], "'fpn_num_outs': must be 5"),
    (["--num_classes=1"], "'num_classes'"),
    (["--amp_level=O3"], "'amp_level': 'O3' is not one of ['O0', 'O1', 'O2']"),
    (["--device_target=CPU", "--amp_level=O1", "--amp_dtype=bfloat16"], "'amp_dtype': bfloat16 needs a GPU"),
    (["positional"], "unexpected command-line argument"),
])
def test_bad_overrides_give_one_line_errors(argv, needle):
    with pytest.raises(ConfigError) as err:
        load_config(argv)
    message = str(err.value)
    assert needle in message and "\n" not in message


def test_ignored_keys_warn_and_change_nothing(capsys):
    default = load_config([])
    cfg = load_config(["--rpn_nms_post=5", "--device_num=8", "--roi_layer.type=Other", "--not_mask=False"])
    err = capsys.readouterr().err
    for key in ("rpn_nms_post", "device_num", "roi_layer.type", "not_mask"):
        assert f"warning: config key '{key}' is ignored: {IGNORED_KEYS[key][0]}" in err
    assert cfg == default


def test_every_key_is_declared_with_help_and_accepted_values(tmp_path):
    declaration = Declaration()
    assert set(declaration.help) == set(declaration.defaults)
    undeclared = [k for k, v in declaration.defaults.items() if k not in declaration.specs and not isinstance(v, bool)]
    assert not undeclared
    assert not set(declaration.defaults) & set(IGNORED_KEYS)
    with open(DEFAULT_CONFIG_PATH, encoding="utf-8") as f:
        values, helps, specs = yaml.safe_load_all(f)
    cases = [
        ({**helps, "img_height": ""}, specs, "key 'img_height' has no help text"),
        (helps, {k: v for k, v in specs.items() if k != "img_height"}, "key 'img_height' does not declare"),
        (helps, {**specs, "img_height": "between 1 and 2"}, "bad declaration of 'img_height'"),
        ({**helps, "no_such_key": "x"}, specs, "names unknown key 'no_such_key'"),
    ]
    for helps_case, specs_case, needle in cases:
        path = tmp_path / "declaration.yaml"
        path.write_text(yaml.safe_dump_all([values, helps_case, specs_case]))
        with pytest.raises(ConfigError, match=re.escape(needle)):
            Declaration(str(path))


@pytest.mark.parametrize("script", ["train.py", "eval.py", "export.py", "infer.py", "postprogress.py"])
def test_help_lists_every_key(script):
    out = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(open(os.path.join(ROOT, script), encoding="utf-8").read().split('"""')[1].strip()
                                 .splitlines()[0])
    declaration = Declaration()
    for key, text in declaration.help.items():
        assert f"  --{key}=" in out.stdout and text in out.stdout, key
    assert "  --img_height=768\n      input canvas height" in out.stdout


def test_demo_config_sets_no_ignored_key(capsys):
    load_config([f"--config_path={os.path.join(ROOT, 'configs', 'demo_cpu.yaml')}"])
    assert "warning" not in capsys.readouterr().err


def test_other_config_file(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text("img_height: 64\nimg_width: 96\n")
    cfg = load_config([f"--config_path={path}", "--batch_size=1"])
    assert (cfg.img_height, cfg.img_width, cfg.batch_size) == (64, 96, 1)
    assert cfg.base_lr == 0.02  # the rest comes from the defaults
    bad = tmp_path / "bad.yaml"
    bad.write_text("img_heigth: 64\n")
    with pytest.raises(ConfigError, match="unknown config key 'img_heigth'"):
        load_config([f"--config_path={bad}"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config([f"--config_path={os.path.join(str(tmp_path), 'nope.yaml')}"])
