"""The training recipe of configs/detectron2_pointrend_r50_fpn.yaml against detectron2's formulas:
the LR schedule (WarmupMultiStepLR), the box losses (FastRCNNOutputLayers.losses with
SMOOTH_L1_BETA 0), the mask losses (mask_rcnn_loss of the coarse head, the point head's
binary_cross_entropy_with_logits on soft point labels) and the multi-scale resize
(ResizeShortestEdge, "choice" sampling)."""
import os

import numpy as np
import mindspore as ms

from src.config import load_config
from src.dataset.transforms import train_size
from src.maskrcnn.mask_loss import mask_rcnn_loss, masked_bce_loss
from src.maskrcnn.rcnn_cls import rcnn_box_losses
from src.training.lr_schedule import dynamic_lr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESET = os.path.join(ROOT, "configs", "detectron2_pointrend_r50_fpn.yaml")


def preset(*overrides):
    return load_config([f"--config_path={PRESET}", "--device_target=CPU"] + list(overrides))


def test_lr_schedule_is_warmup_multistep():
    cfg = preset("--batch_size=2")  # 2 images per step on one device: 2/16 of the reference LR
    lr = dynamic_lr(cfg, steps_per_epoch=7500)  # 90,000 steps as detectron2's 1x
    base = 0.02 * 2 / 16

    def detectron2(it):  # WarmupMultiStepLR: linear warm-up factor, gamma per passed milestone
        alpha = min(it / 1000, 1.0)
        warm = 0.001 * (1 - alpha) + alpha if it < 1000 else 1.0
        return base * warm * 0.1 ** sum(it >= m for m in (60000, 80000))

    for it in (0, 1, 500, 999, 1000, 1001, 59999, 60000, 79999, 80000, 89999):
        np.testing.assert_allclose(lr[it], detectron2(it), rtol=1e-5, err_msg=str(it))
    assert len(lr) == 90000


def test_box_losses_are_detectron2s_with_l1():
    rng = np.random.default_rng(0)
    k, classes = 12, 4
    logits = rng.standard_normal((k, classes)).astype(np.float32)
    deltas = rng.standard_normal((k, classes * 4)).astype(np.float32)
    labels = rng.integers(0, classes, k).astype(np.int32)
    labels[:3] = 0
    targets = rng.standard_normal((k, 4)).astype(np.float32)
    valid = np.ones(k, bool)
    valid[-2:] = False  # padding slots
    cls, reg = rcnn_box_losses(ms.Tensor(logits), ms.Tensor(deltas), ms.Tensor(labels), ms.Tensor(valid),
                               ms.Tensor(targets), classes, preset().rcnn_smooth_l1_beta)
    v = valid
    log_probs = logits[v] - np.log(np.exp(logits[v]).sum(1, keepdims=True))
    want_cls = -log_probs[np.arange(v.sum()), labels[v]].mean()
    fg = v & (labels > 0)
    chosen = deltas.reshape(k, classes, 4)[np.arange(k), labels][fg]
    want_reg = np.abs(chosen - targets[fg]).sum() / v.sum()
    np.testing.assert_allclose(float(cls.asnumpy()), want_cls, rtol=1e-5)
    np.testing.assert_allclose(float(reg.asnumpy()), want_reg, rtol=1e-5)


def bce_with_logits(x, t):
    """torch's binary_cross_entropy_with_logits per element, from its definition."""
    return np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))


def test_mask_losses_are_detectron2s():
    rng = np.random.default_rng(1)
    r, classes, side, points = 10, 5, 7, 30
    weights = np.ones(r, np.float32)
    weights[-3:] = 0.0  # padding slots after the positives
    labels = rng.integers(1, classes, r).astype(np.int32)
    # coarse head: mask_rcnn_loss = BCE mean over the positives' GT-class 7x7 logits and binary targets
    logits = rng.standard_normal((r, classes, side, side)).astype(np.float32) * 3
    targets = (rng.uniform(size=(r, side, side)) > 0.5).astype(np.float32)
    got = float(mask_rcnn_loss(ms.Tensor(logits), ms.Tensor(labels), ms.Tensor(weights), ms.Tensor(targets)).asnumpy())
    pos = weights > 0
    chosen = logits[np.arange(r), labels][pos]
    np.testing.assert_allclose(got, bce_with_logits(chosen, targets[pos]).mean(), rtol=1e-5)
    # point head: BCE mean over all points of the positives, soft labels
    point_logits = rng.standard_normal((r, points)).astype(np.float32) * 3
    point_labels = rng.uniform(size=(r, points)).astype(np.float32)
    got = float(masked_bce_loss(ms.Tensor(point_logits), ms.Tensor(point_labels), ms.Tensor(weights)).asnumpy())
    np.testing.assert_allclose(got, bce_with_logits(point_logits[pos], point_labels[pos]).mean(), rtol=1e-5)
    # no positive: zero loss, as detectron2's mask_rcnn_loss (mask_logits.sum() * 0)
    none = float(masked_bce_loss(ms.Tensor(point_logits), ms.Tensor(point_labels),
                                 ms.Tensor(np.zeros(r, np.float32))).asnumpy())
    assert none == 0.0


def test_multi_scale_training_resize():
    cfg = preset()
    rng = np.random.default_rng(0)
    sizes = {train_size(480, 640, cfg, rng) for _ in range(200)}
    # shorter side one of 640..800, longer side 4/3 of it, int(x + 0.5)
    assert sizes == {(s, int(s * 4 / 3 + 0.5)) for s in (640, 672, 704, 736, 768, 800)}
    assert train_size(300, 1200, cfg, rng)[1] == 1333  # longer side capped at max_size_train
    h, w = train_size(640, 480, cfg, rng)  # portrait: fits the 800 x 1344 canvas
    assert h <= 800 and abs(w / h - 0.75) < 0.01
