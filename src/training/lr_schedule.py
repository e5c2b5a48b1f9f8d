"""Per-step learning rates: linear warm-up, then half cosine or step decay."""
import math

import numpy as np


def base_learning_rate(cfg):
    """``base_lr``, scaled by the linear rule when ``lr_reference_batch`` > 0."""
    if cfg.lr_reference_batch > 0:
        return cfg.base_lr * cfg.batch_size * cfg.device_num / cfg.lr_reference_batch
    return cfg.base_lr


def learning_rate_at(step, total_steps, cfg):
    """LR of 0-based ``step`` of ``total_steps``.

    Warm-up: linear from base * warmup_ratio at step 0 to base at ``warmup_step``.
    cosine: base -> lr_end along a half cosine that reaches lr_end exactly at the last step.
    step: base x lr_gamma^k after k of the ``lr_steps`` fractions of total_steps have passed.
    """
    base = base_learning_rate(cfg)
    warmup = min(cfg.warmup_step, total_steps - 1)
    if step < warmup:
        return base * (cfg.warmup_ratio + (1.0 - cfg.warmup_ratio) * step / warmup)
    if cfg.lr_schedule == "step":
        passed = sum(1 for f in cfg.lr_steps if step >= int(f * total_steps))
        return base * cfg.lr_gamma ** passed
    span = total_steps - 1 - warmup
    progress = 1.0 if span <= 0 else (step - warmup) / span
    return cfg.lr_end + (base - cfg.lr_end) * 0.5 * (1.0 + math.cos(math.pi * progress))


def dynamic_lr(cfg, steps_per_epoch):
    """The whole schedule over ``total_epoch`` epochs: float32 array (total_steps,)."""
    total = steps_per_epoch * cfg.total_epoch
    if total < 1:
        raise ValueError(f"empty schedule: steps_per_epoch={steps_per_epoch}, total_epoch={cfg.total_epoch}")
    return np.array([learning_rate_at(i, total, cfg) for i in range(total)], np.float32)
