"""Mixed precision (amp_level): the float16 train step runs on CPU, parameters and checkpoints stay
float32, and bfloat16 is refused on CPU because MindSpore has no CPU kernel for it. Which operators
run in float16 is audited on the compiled graph in tests/test_kernel_audit.py."""
import numpy as np
import pytest
import mindspore as ms
from mindspore import nn

from src.demo.synthetic_batch import small_config, synthetic_batch
from src.maskrcnn_pointrend_r50 import MaskRcnnPointRend
from src.training.mixed_precision import apply_mixed_precision
from src.training.network_define import TrainOneStepCell, WithLossCell, split_decay_groups

TRAIN_KEYS = ("img", "img_metas", "gt_bboxes", "gt_labels", "gt_valids", "gt_masks")


def test_o2_float16_steps_train_with_dynamic_loss_scale():
    ms.set_seed(0)
    # with the box head's RoIAlign in chunks too (98 MiB of neighbours, gather_chunk_mib 40)
    cfg = small_config(resnet_block=[1, 1, 1, 1], backbone_norm="gn", freeze_at=0, gather_chunk_mib=40)
    net = MaskRcnnPointRend(cfg, cfg.batch_size)
    net.set_train(True)
    before = {p.name: p.asnumpy().copy() for p in net.get_parameters()}
    apply_mixed_precision(net, "O2", "float16")
    after = list(net.get_parameters())
    # same names (checkpoints load at every level) and float32 master weights
    assert [p.name for p in after] == list(before)
    assert all(p.dtype == ms.float32 for p in after)
    optimizer = nn.Momentum(split_decay_groups(net.trainable_params(), 1e-4, False), learning_rate=0.002,
                            momentum=0.9)
    # torch's GradScaler starts at 2^16 too
    step = TrainOneStepCell(WithLossCell(net, cfg), optimizer, loss_scale=2.0 ** 16, dynamic_scale=True)
    step.set_train(True)
    inputs = [ms.Tensor(v) for v in (synthetic_batch(cfg, seed=3)[k] for k in TRAIN_KEYS)]
    overflows = []
    for _ in range(12):
        losses = [float(x.asnumpy()) for x in step(*inputs)]
        assert all(np.isfinite(losses)), losses
        overflows.append(bool(step.overflow.asnumpy()))
        if not overflows[-1]:
            break
    # gradients of order 1 times 2^16 overflow float16 (max 65504), not float32: the layers'
    # gradients really are float16; the scale halves until they fit, then the step updates
    assert overflows[0] and not overflows[-1], overflows
    assert float(step.scale.asnumpy()) == 2.0 ** (17 - len(overflows))
    changed = [n for n, p in zip(before, after) if not np.array_equal(before[n], p.asnumpy())]
    assert any(n.startswith("backbone.") for n in changed) and any(n.startswith("mask_point_head.") for n in changed)
    # the norm layers of the float16 backbone still hold their float32 parameters under their names
    assert any(n.startswith("backbone.bn1.") for n in changed)


def test_bad_levels_and_dtypes_are_refused():
    net = nn.Dense(2, 2)
    with pytest.raises(ValueError, match="amp_level: 'O3'"):
        apply_mixed_precision(net, "O3", "float16")
    with pytest.raises(ValueError, match="amp_dtype: 'float64'"):
        apply_mixed_precision(net, "O1", "float64")


def test_cpu_has_no_bfloat16_convolution():
    """Why config.py refuses amp_dtype bfloat16 on CPU: when this fails, MindSpore gained the
    kernel and the refusal can go."""
    conv = nn.Conv2d(3, 4, 3).to_float(ms.bfloat16)
    with pytest.raises(TypeError, match=r"Conv2D\] fail! Unsupported data type"):
        conv(ms.Tensor(np.ones((1, 3, 8, 8), np.float32)))
