"""LR schedule against its closed form."""
import math

import numpy as np
import pytest

from src.training.lr_schedule import dynamic_lr
from src.config import load_config


def cfg_for(*argv, device_num=1):
    cfg = load_config(["--device_target=CPU", *argv])
    cfg.device_num = device_num  # what setup_context sets from the launcher in a distributed run
    return cfg


def test_cosine_closed_form_first_warmup_middle_last():
    cfg = cfg_for("--base_lr=0.02", "--warmup_step=100", "--warmup_ratio=0.25", "--total_epoch=4",
                  "--epoch_size=4", "--lr_end=0.001")
    lr = dynamic_lr(cfg, steps_per_epoch=250)
    total = 1000
    assert lr.shape == (total,)
    assert lr[0] == pytest.approx(0.02 * 0.25)
    assert lr[50] == pytest.approx(0.02 * (0.25 + 0.75 * 0.5))
    assert lr[100] == pytest.approx(0.02)  # warm-up end
    mid = 100 + (total - 1 - 100) / 2
    assert lr[int(mid)] == pytest.approx(0.001 + 0.019 * 0.5 * (1 + math.cos(math.pi * (int(mid) - 100) / 899)),
                                         rel=1e-5)
    assert lr[-1] == pytest.approx(0.001)  # really reaches the end value at the last step
    assert np.all(np.diff(lr[100:]) <= 1e-9)


def test_step_decay_and_linear_scaling():
    cfg = cfg_for("--lr_schedule=step", "--base_lr=0.02", "--warmup_step=10", "--lr_steps=[0.5,0.75]",
                  "--lr_gamma=0.1", "--total_epoch=1", "--epoch_size=1", "--batch_size=2",
                  "--lr_reference_batch=16", device_num=8)
    lr = dynamic_lr(cfg, steps_per_epoch=100)
    assert lr[10] == pytest.approx(0.02)  # 2 x 8 = 16 images per step: scale 1
    assert lr[49] == pytest.approx(0.02) and lr[50] == pytest.approx(0.002) and lr[75] == pytest.approx(0.0002)
    cfg = cfg_for("--base_lr=0.02", "--batch_size=4", "--lr_reference_batch=16",
                  "--warmup_step=0", "--total_epoch=1", "--epoch_size=1", device_num=8)
    assert dynamic_lr(cfg, 10)[0] == pytest.approx(0.04)
