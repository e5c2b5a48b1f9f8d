"""tools/convert_detectron2.py: names, class layout and layouts of the converted weights, checked by
running detectron2's layer definitions in numpy on the source weights and ours on the converted ones."""
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from src.detectron2_checkpoint import ConversionError, convert_state_dict, read_detectron2_weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K, FC, FINE, POINT_FC, CELLS = 3, 6, 5, 4, 4  # classes, box FC, fine channels, point FC, coarse cells


def head_state(rng, old_layout=False):
    """The class-specific heads of a detectron2 PointRend state dict at toy sizes."""
    coarse = "roi_heads.mask_coarse_head." if old_layout else "roi_heads.mask_head.coarse_head."
    point = "roi_heads.mask_point_head." if old_layout else "roi_heads.mask_head.point_head."
    fc = "coarse_mask_fc" if old_layout else "fc"

    def n(shape):
        return rng.standard_normal(shape).astype(np.float32)
    return {
        "roi_heads.box_predictor.cls_score.weight": n((K + 1, FC)), "roi_heads.box_predictor.cls_score.bias": n(K + 1),
        "roi_heads.box_predictor.bbox_pred.weight": n((4 * K, FC)), "roi_heads.box_predictor.bbox_pred.bias": n(4 * K),
        "roi_heads.box_head.fc1.weight": n((FC, 8)), "roi_heads.box_head.fc1.bias": n(FC),
        coarse + f"{fc}1.weight": n((FC, 8)), coarse + f"{fc}1.bias": n(FC),
        coarse + "prediction.weight": n((K * CELLS, FC)), coarse + "prediction.bias": n(K * CELLS),
        point + "fc1.weight": n((POINT_FC, FINE + K, 1)), point + "fc1.bias": n(POINT_FC),
        point + "fc2.weight": n((POINT_FC, POINT_FC + K, 1)), point + "fc2.bias": n(POINT_FC),
        point + "predictor.weight": n((K, POINT_FC + K, 1)), point + "predictor.bias": n(K),
        "pixel_mean": np.zeros((3, 1, 1), np.float32), "pixel_std": np.ones((3, 1, 1), np.float32),
    }


def point_head_numpy(fine, coarse, layers, predictor):
    """detectron2's StandardPointHead forward (coarse_pred_each_layer): fine (C, P), coarse (K', P)."""
    x = np.concatenate([fine, coarse], 0)
    for w, b in layers:
        x = np.concatenate([np.maximum(w[:, :, 0] @ x + b[:, None], 0), coarse], 0)
    w, b = predictor
    return w[:, :, 0] @ x + b[:, None]


def test_box_predictor_background_moves_from_last_to_first():
    rng = np.random.default_rng(0)
    state = head_state(rng)
    params, report = convert_state_dict(state)
    assert report["num_classes"] == K + 1 and report["ignored"] == ["pixel_mean", "pixel_std"]
    x = rng.standard_normal((5, FC))
    theirs = x @ state["roi_heads.box_predictor.cls_score.weight"].T + state["roi_heads.box_predictor.cls_score.bias"]
    ours = x @ params["rcnn_cls.fpn_cls.cls_scores.weight"] + params["rcnn_cls.fpn_cls.cls_scores.bias"]
    np.testing.assert_allclose(ours[:, 0], theirs[:, K], rtol=1e-5)  # background
    np.testing.assert_allclose(ours[:, 1:], theirs[:, :K], rtol=1e-5)  # class c -> label c + 1
    theirs = x @ state["roi_heads.box_predictor.bbox_pred.weight"].T + state["roi_heads.box_predictor.bbox_pred.bias"]
    ours = x @ params["rcnn_cls.fpn_cls.reg_scores.weight"] + params["rcnn_cls.fpn_cls.reg_scores.bias"]
    np.testing.assert_allclose(ours[:, 4:], theirs, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ours[:, :4], 0.0)
    # box head FC stored (in, out) here
    fc1 = state["roi_heads.box_head.fc1.weight"]
    np.testing.assert_array_equal(params["rcnn_cls.fpn_cls.shared_fc_0.weight"], fc1.T)


def test_coarse_prediction_and_point_head_give_detectron2_outputs_per_class():
    rng = np.random.default_rng(1)
    state = head_state(rng)
    params, _ = convert_state_dict(state)
    w = state["roi_heads.mask_head.coarse_head.prediction.weight"]
    ours = params["mask_coarse_head.prediction.weight"]
    assert ours.shape == ((K + 1) * CELLS, FC)
    np.testing.assert_array_equal(ours.reshape(K + 1, CELLS, FC)[1:], w.reshape(K, CELLS, FC))
    fine = rng.standard_normal((FINE, 7))
    coarse = rng.standard_normal((K, 7))
    p = "roi_heads.mask_head.point_head."
    theirs = point_head_numpy(fine, coarse, [(state[p + f"fc{i}.weight"], state[p + f"fc{i}.bias"]) for i in (1, 2)],
                              (state[p + "predictor.weight"], state[p + "predictor.bias"]))
    # our point head takes the background coarse logit too: any value, its weights are zero
    coarse_ours = np.concatenate([rng.standard_normal((1, 7)) * 100, coarse], 0)
    q = "mask_point_head."
    ours = point_head_numpy(fine, coarse_ours, [(params[q + f"seq.{i}.weight"][..., 0], params[q + f"seq.{i}.bias"])
                                                for i in (0, 1)],
                            (params[q + "predictor.weight"][..., 0], params[q + "predictor.bias"]))
    np.testing.assert_allclose(ours[1:], theirs, rtol=1e-5, atol=1e-6)


def test_old_published_layout_converts_like_the_new_one():
    new, _ = convert_state_dict(head_state(np.random.default_rng(2)))
    old, _ = convert_state_dict(head_state(np.random.default_rng(2), old_layout=True))
    assert sorted(new) == sorted(old)
    for name in new:
        np.testing.assert_array_equal(new[name], old[name])


def test_other_num_classes_keeps_all_but_the_class_specific_layers():
    state = head_state(np.random.default_rng(3))
    params, report = convert_state_dict(state, num_classes=6)
    for name in ("rcnn_cls.fpn_cls.cls_scores.weight", "rcnn_cls.fpn_cls.reg_scores.bias",
                 "mask_coarse_head.prediction.weight", "mask_point_head.predictor.weight"):
        assert name not in params and name in report["reinitialised"]
    w = params["mask_point_head.seq.0.weight"][..., 0, 0]
    assert w.shape == (POINT_FC, FINE + 6)  # fine channels + 6 coarse logits
    np.testing.assert_array_equal(w[:, :FINE], state["roi_heads.mask_head.point_head.fc1.weight"][:, :FINE, 0])
    np.testing.assert_array_equal(w[:, FINE:], 0.0)
    fc1 = state["roi_heads.box_head.fc1.weight"]
    np.testing.assert_array_equal(params["rcnn_cls.fpn_cls.shared_fc_0.weight"], fc1.T)


def test_unknown_or_misshapen_keys_stop_the_conversion_naming_the_key():
    state = head_state(np.random.default_rng(4))
    state["roi_heads.keypoint_head.conv1.weight"] = np.zeros((2, 2))
    with pytest.raises(ConversionError, match="roi_heads.keypoint_head.conv1.weight"):
        convert_state_dict(state)
    state = head_state(np.random.default_rng(4))
    state["roi_heads.box_predictor.bbox_pred.weight"] = np.zeros((4, FC))  # class-agnostic boxes
    with pytest.raises(ConversionError, match="bbox_pred.weight"):
        convert_state_dict(state)


def test_reading_files(tmp_path):
    state = head_state(np.random.default_rng(5))
    pkl = tmp_path / "model.pkl"
    with open(pkl, "wb") as f:
        pickle.dump({"model": state, "__author__": "test"}, f)
    read = read_detectron2_weights(str(pkl))
    assert sorted(read) == sorted(state)
    with pytest.raises(ConversionError, match="not found"):
        read_detectron2_weights(str(tmp_path / "missing.pkl"))
    (tmp_path / "bad.pkl").write_bytes(b"not a pickle")
    with pytest.raises(ConversionError, match="bad.pkl"):
        read_detectron2_weights(str(tmp_path / "bad.pkl"))


def test_cli_error_is_one_line_and_writes_nothing(tmp_path):
    state = head_state(np.random.default_rng(6))
    state["something.else"] = np.zeros(2)
    pkl = tmp_path / "model.pkl"
    with open(pkl, "wb") as f:
        pickle.dump({"model": state}, f)
    dst = tmp_path / "out.ckpt"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "convert_detectron2.py"), "--src", str(pkl),
                           "--dst", str(dst)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: unrecognised detectron2 key 'something.else' (shape (2,)): not converted; is this a PointRend / "
        "Mask R-CNN R50/R101-FPN checkpoint?")
    assert sorted(os.listdir(tmp_path)) == ["model.pkl"]


def caffe2_imagenet_blobs(rng, blocks=(1, 1, 1, 1), width=(8, 16, 32, 64)):
    """detectron2's ImageNet R-50.pkl blob names (Caffe2) for a small bottleneck ResNet, with the
    parameter name each must become here (our own table, not the converter's rules)."""
    blobs, expected = {}, {}

    def add(c2, ours, shape):
        blobs[c2] = rng.standard_normal(shape).astype(np.float32)
        expected[c2] = ours

    add("conv1_w", "backbone.conv1.weight", (8, 3, 7, 7))
    add("res_conv1_bn_s", "backbone.bn1.gamma", (8,))
    add("res_conv1_bn_b", "backbone.bn1.beta", (8,))
    cin = 8
    for stage, (count, out) in enumerate(zip(blocks, width), start=2):
        for i in range(count):
            ours = f"backbone.layer{stage - 1}.{i}."
            mid = out // 4
            if i == 0:
                add(f"res{stage}_0_branch1_w", ours + "conv_down_sample.weight", (out, cin, 1, 1))
                add(f"res{stage}_0_branch1_bn_s", ours + "bn_down_sample.gamma", (out,))
                add(f"res{stage}_0_branch1_bn_b", ours + "bn_down_sample.beta", (out,))
            for j, (branch, shape) in enumerate((("2a", (mid, cin, 1, 1)), ("2b", (mid, mid, 3, 3)),
                                                 ("2c", (out, mid, 1, 1))), start=1):
                add(f"res{stage}_{i}_branch{branch}_w", ours + f"conv{j}.weight", shape)
                add(f"res{stage}_{i}_branch{branch}_bn_s", ours + f"bn{j}.gamma", shape[:1])
                add(f"res{stage}_{i}_branch{branch}_bn_b", ours + f"bn{j}.beta", shape[:1])
            cin = out
    blobs["fc1000_w"] = np.zeros((1000, cin), np.float32)
    blobs["fc1000_b"] = np.zeros(1000, np.float32)
    blobs["res2_0_branch2a_w_momentum"] = np.zeros((2, 8, 1, 1), np.float32)
    return blobs, expected


@pytest.mark.parametrize("wrapped", [False, True])
def test_imagenet_caffe2_backbone_converts_to_the_backbone(tmp_path, wrapped):
    blobs, expected = caffe2_imagenet_blobs(np.random.default_rng(7))
    src = tmp_path / "R-50.pkl"
    with open(src, "wb") as f:
        pickle.dump({"blobs": blobs} if wrapped else blobs, f)  # ImageNet files are plain, Detectron ones wrap
    params, report = convert_state_dict(read_detectron2_weights(str(src)))
    assert report["backbone_only"] and report["num_classes"] is None
    assert sorted(report["ignored"]) == ["fc1000_b", "fc1000_w", "res2_0_branch2a_w_momentum"]
    for c2, ours in expected.items():
        np.testing.assert_array_equal(params.pop(ours), blobs[c2])
    # AffineChannel -> BatchNorm with the statistics detectron2's FrozenBatchNorm2d loads
    stats = sorted(params)
    assert len(stats) == 2 * sum(1 for n in expected.values() if n.endswith(".gamma"))
    assert all(n.endswith((".moving_mean", ".moving_variance")) for n in stats)
    assert all(not params[n].any() for n in stats if n.endswith("mean"))
    assert all((params[n] == 1).all() for n in stats if n.endswith("variance"))


def test_imagenet_backbone_loads_into_the_network_and_unknown_blobs_stop(tmp_path):
    from src.checkpoint_utils import load_pretrained
    from src.demo.synthetic_batch import small_config
    from src.maskrcnn_pointrend_r50 import MaskRcnnPointRend

    cfg = small_config(resnet_block=[1, 1, 1, 1], backbone_norm="frozen_bn")
    net = MaskRcnnPointRend(cfg, cfg.batch_size)
    shapes = {p.name: tuple(p.shape) for p in net.get_parameters()}
    width = tuple(shapes[f"backbone.layer{i}.0.conv3.weight"][0] for i in range(1, 5))
    blobs, expected = caffe2_imagenet_blobs(np.random.default_rng(8), width=width)
    blobs["conv1_w"] = np.ones(shapes["backbone.conv1.weight"], np.float32)
    for c2, ours in expected.items():
        if c2 != "conv1_w" and blobs[c2].shape != shapes[ours]:
            blobs[c2] = np.ones(shapes[ours], np.float32)
    src, dst = tmp_path / "R-50.pkl", tmp_path / "r50.ckpt"
    with open(src, "wb") as f:
        pickle.dump(blobs, f)
    out = subprocess.run([sys.executable, "tools/convert_detectron2.py", f"--src={src}", f"--dst={dst}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ImageNet backbone only" in out.stdout
    load_pretrained(net, str(dst), log=lambda *_: None)
    values = {p.name: p.asnumpy() for p in net.get_parameters()}
    for c2, ours in expected.items():
        np.testing.assert_array_equal(values[ours], blobs[c2])
    assert (values["backbone.bn1.moving_variance"] == 1).all()

    blobs["res2_0_branch2d_w"] = np.zeros((1,), np.float32)
    with open(src, "wb") as f:
        pickle.dump(blobs, f)
    with pytest.raises(ConversionError, match="unrecognised Caffe2 blob 'res2_0_branch2d_w'"):
        convert_state_dict(read_detectron2_weights(str(src)))
