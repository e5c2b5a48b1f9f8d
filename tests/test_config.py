"""Config loading, overrides, validation and derived values."""
import os
import re

import pytest
import yaml

from src.model_utils.config import DEFAULT_CONFIG_PATH, ConfigError, load_config


def test_defaults_and_derived_values():
    cfg = load_config([])
    assert cfg.img_height == 768 and cfg.img_width == 1280
    assert cfg.feature_shapes == [[192, 320], [96, 160], [48, 80], [24, 40], [12, 20]]
    assert cfg.num_bboxes == 245520  # the model zoo's hand-typed value
    assert cfg.num_anchors == 3 and cfg.num_gts == 128
    assert cfg.roi_sample_num == 512
    assert cfg.roi_layer.out_size == 7 and cfg.roi_layer.mask_out_size == 14
    assert len(cfg.coco_classes) == 81 and cfg.num_classes == 81


def test_yaml_is_plain():
    with open(DEFAULT_CONFIG_PATH, encoding="utf-8") as f:
        raw = yaml.safe_load(f)

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

    walk(raw)


def test_overrides_are_typed_and_rederive():
    cfg = load_config(["--img_height=256", "--img_width", "320", "--flip_ratio=0", "--anchor_ratios=[1.0]",
                       "--roi_layer.sample_num=3", "--device_target=CPU", "--keep_ratio=False"])
    assert cfg.img_height == 256 and cfg.img_width == 320
    assert isinstance(cfg.flip_ratio, float) and cfg.flip_ratio == 0.0
    assert cfg.num_anchors == 1 and cfg.feature_shapes[0] == [64, 80]
    assert cfg.num_bboxes == 64 * 80 + 32 * 40 + 16 * 20 + 8 * 10 + 4 * 5
    assert cfg.roi_layer.sample_num == 3 and cfg.keep_ratio is False


@pytest.mark.parametrize("argv, needle", [
    (["--img_hieght=512"], "unknown config key 'img_hieght'"),
    (["--img_height=abc"], "'img_height': expected an integer"),
    (["--img_height=1.5"], "'img_height': expected an integer"),
    (["--flip_ratio=2"], "'flip_ratio': must be in [0, 1]"),
    (["--keep_ratio=maybe"], "'keep_ratio': expected true/false"),
    (["--device_target=TPU"], "'device_target'"),
    (["--anchor_ratios=0.5"], "'anchor_ratios': expected a list"),
    (["--roi_layer.size=3"], "unknown config key 'roi_layer.size'"),
    (["--num_bboxes=3"], "'num_bboxes' is derived"),
    (["--not_mask=True"], "'not_mask'"),
    (["positional"], "unexpected command-line argument"),
])
def test_bad_overrides_give_one_line_errors(argv, needle):
    with pytest.raises(ConfigError) as err:
        load_config(argv)
    message = str(err.value)
    assert needle in message and "\n" not in message


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
