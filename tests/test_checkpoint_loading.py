"""Pretrained loading with fake model-zoo checkpoints built from the parameter table."""
import json
import os

import numpy as np
import pytest
import mindspore as ms

from src.checkpoint_utils import CheckpointError, load_pretrained
from src.maskrcnn_pointrend_r50 import MaskRcnnPointRend
from src.config import load_config
from test_param_table import TSV


@pytest.fixture(scope="module")
def net():
    cfg = load_config(["--device_target=CPU"])
    return MaskRcnnPointRend(cfg, 1)


def table_rows():
    with open(TSV, encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t") for line in f][1:]


def save(tmp_path, name, tensors):
    path = os.path.join(str(tmp_path), name)
    ms.save_checkpoint([{"name": k, "data": ms.Tensor(v)} for k, v in tensors.items()], path)
    return path


def test_modelzoo_maskrcnn_checkpoint_loads_307_of_307(net, tmp_path, capsys):
    rng = np.random.default_rng(0)
    tensors = {}
    for name, shape, note in table_rows():
        shape = [100] if name == "learning_rate" else json.loads(shape)  # the table writes [T]
        if name == "global_step":
            tensors[name] = np.array([7], np.int32)
        else:
            tensors[name] = rng.standard_normal(shape).astype(np.float32)
    path = save(tmp_path, "maskrcnn.ckpt", tensors)
    report = load_pretrained(net, path)
    assert len(report["loaded"]) == 307
    assert not report["mismatched"] and not report["unexpected"]
    assert sorted(report["missing"]) == sorted(p.name for p in net.get_parameters()
                                               if p.name.startswith(("mask_coarse_head.", "mask_point_head.")))
    own = {p.name: p.asnumpy() for p in net.get_parameters()}
    for name in ("fpn_ncek.lateral_convs_list.0.weight", "rcnn_cls.fpn_cls.shared_fc_0.weight",
                 "rpn_with_loss.rpn_convs_list.0.rpn_reg.bias", "backbone.layer3.5.bn2.moving_variance",
                 "rcnn_mask.fpn_mask.mask_deconv5.weight"):
        np.testing.assert_array_equal(own[name], tensors[name])
    assert "loaded 307, missing 16, unexpected 0, shape-mismatched 0" in capsys.readouterr().out


def test_imagenet_resnet_checkpoint_maps_names(net, tmp_path):
    rng = np.random.default_rng(1)
    tensors = {}
    for name, shape, _ in table_rows():
        if not name.startswith("backbone."):
            continue
        short = name[len("backbone."):].replace("conv_down_sample", "down_sample_layer.0")
        short = short.replace("bn_down_sample", "down_sample_layer.1")
        tensors[short] = rng.standard_normal(json.loads(shape)).astype(np.float32)
    tensors["end_point.weight"] = rng.standard_normal((1001, 2048)).astype(np.float32)
    report = load_pretrained(net, save(tmp_path, "resnet.ckpt", tensors))
    assert len(report["loaded"]) == len(tensors) - 1 and not report["unexpected"]
    got = {p.name: p.asnumpy() for p in net.get_parameters()}
    np.testing.assert_array_equal(got["backbone.layer2.0.conv_down_sample.weight"],
                                  tensors["layer2.0.down_sample_layer.0.weight"])


def test_checkpoint_of_another_model_is_an_error(net, tmp_path):
    path = save(tmp_path, "other.ckpt", {"encoder.weight": np.zeros((3, 3), np.float32),
                                         "backbone.conv1.weight": np.zeros((5, 5), np.float32)})
    with pytest.raises(CheckpointError, match="matches no parameter"):
        load_pretrained(net, path)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_pretrained(net, os.path.join(str(tmp_path), "missing.ckpt"))
