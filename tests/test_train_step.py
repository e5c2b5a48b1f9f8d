"""The one-step cell (NaN skip, loss scale, clipping) and the step monitor, on a tiny network."""
import numpy as np
import pytest
import mindspore as ms
from mindspore import nn, ops

from src.training.network_define import TrainOneStepCell, clip_by_global_norm, split_decay_groups
from src.training import train_monitor
from src.training.train_monitor import StepMonitor, TrainingError


class TinyLoss(nn.Cell):
    """(x, target) -> (total, component) with total = mean((w x - target)^2) x scale."""

    def __init__(self):
        super().__init__()
        self.dense = nn.Dense(3, 1, weight_init="ones", bias_init="zeros")

    def construct(self, x, target):
        loss = ops.mean((self.dense(x) - target) ** 2)
        return loss, loss


def make(lr=0.1, **kwargs):
    net = TinyLoss()
    opt = nn.SGD(split_decay_groups(net.trainable_params(), 0.0, False), learning_rate=lr)
    return net, TrainOneStepCell(net, opt, **kwargs)


def test_step_matches_sgd_and_skips_non_finite_losses():
    x = ms.Tensor(np.array([[1.0, 2.0, 3.0]], np.float32))
    net, step = make(loss_scale=8.0)
    step.set_train(True)
    step(x, ms.Tensor(np.array([[0.0]], np.float32)))
    # d/dw (w.x - 0)^2 = 2 (w.x) x = 12 x; loss scale is divided out
    np.testing.assert_allclose(net.dense.weight.asnumpy(), 1 - 0.1 * 12 * np.array([[1, 2, 3]]), rtol=1e-5)
    before = net.dense.weight.asnumpy().copy()
    losses = step(x, ms.Tensor(np.array([[np.nan]], np.float32)))
    assert not np.isfinite(losses[0].asnumpy())
    np.testing.assert_array_equal(net.dense.weight.asnumpy(), before)


def test_global_norm_clipping():
    x = ms.Tensor(np.array([[1.0, 2.0, 3.0]], np.float32))
    net, step = make(lr=1.0, clip_norm=0.5)
    step.set_train(True)
    step(x, ms.Tensor(np.array([[0.0]], np.float32)))
    grad = np.concatenate([12 * np.array([1.0, 2.0, 3.0]), [12.0]])
    clipped = grad * 0.5 / np.linalg.norm(grad)
    np.testing.assert_allclose(net.dense.weight.asnumpy()[0], 1 - clipped[:3], rtol=1e-4)


@pytest.mark.parametrize("clip_norm", [2.0, 1e3])
def test_clip_by_global_norm_against_numpy(clip_norm):
    """Global L2 norm over all tensors (not per tensor), only scaled down, dtypes kept."""
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in [(3, 4, 5), (7,), (2, 1, 3, 3)]]
    arrays.append(rng.standard_normal((4, 6)).astype(np.float16))

    @ms.jit
    def clip(grads):
        return clip_by_global_norm(grads, clip_norm)

    out = clip(tuple(ms.Tensor(a) for a in arrays))
    norm = np.sqrt(sum((a.astype(np.float64) ** 2).sum() for a in arrays))
    assert 2.0 < norm < 1e3
    for a, o in zip(arrays, out):
        assert o.dtype == ms.Tensor(a).dtype
        rtol = 2e-3 if a.dtype == np.float16 else 1e-5
        np.testing.assert_allclose(o.asnumpy(), a * clip_norm / max(norm, clip_norm), rtol=rtol)


def test_monitor_stops_after_max_nan_steps(capsys):
    lines = []
    monitor = StepMonitor(("a", "b"), total_steps=10, images_per_step=2, log_interval=1, max_nan_steps=2,
                          log=lines.append)
    assert monitor.step(1, 0.1, [1.0, 0.5, 0.5])
    assert not monitor.step(2, 0.1, [float("nan"), float("nan"), 0.5])
    assert "step 2: non-finite loss in loss, a" in lines[-1]
    assert monitor.step(3, 0.1, [1.0, 0.5, 0.5])  # a finite step resets the count
    monitor.step(4, 0.1, [float("inf"), 0.5, float("inf")])
    with pytest.raises(TrainingError, match="2 non-finite losses in a row .*step 5"):
        monitor.step(5, 0.1, [float("nan"), 0.5, float("nan")])
    assert any("step 3/10 loss 1.0000 a 0.5000 b 0.5000 lr 0.100000" in l for l in lines)


def test_dynamic_loss_scale_skips_overflow_halves_then_grows():
    small = ms.Tensor(np.array([[1.0, 2.0, 3.0]], np.float32))
    big = ms.Tensor(np.array([[10.0, 20.0, 30.0]], np.float32))
    zero = ms.Tensor(np.array([[0.0]], np.float32))
    net, step = make(loss_scale=2.0 ** 120, dynamic_scale=True, scale_window=2, scale_factor=2.0)
    step.set_train(True)
    # gradient 2 * 60 * 30 = 3600 times 2^120 overflows float32; the loss itself (3600) is finite
    losses = step(big, zero)
    assert losses[0].asnumpy() == pytest.approx(3600.0)
    np.testing.assert_array_equal(net.dense.weight.asnumpy(), np.ones((1, 3), np.float32))  # update skipped
    assert step.scale.asnumpy() == 2.0 ** 119 and step.finite_steps.asnumpy() == 0 and step.overflow.asnumpy()
    # 36 x 2^119 fits: a plain SGD step, the scale divided out exactly
    step(small, zero)
    expected = 1 - 0.1 * 12 * np.array([[1.0, 2.0, 3.0]])
    np.testing.assert_allclose(net.dense.weight.asnumpy(), expected, rtol=1e-6)
    assert step.scale.asnumpy() == 2.0 ** 119 and step.finite_steps.asnumpy() == 1 and not step.overflow.asnumpy()
    step(small, zero)  # the second finite step in a row: the scale grows again
    assert step.scale.asnumpy() == 2.0 ** 120 and step.finite_steps.asnumpy() == 0
    assert not np.allclose(net.dense.weight.asnumpy(), expected)  # and this step updated too


def test_dynamic_loss_scale_does_not_fall_below_one():
    net, step = make(loss_scale=1.0, dynamic_scale=True)
    step.set_train(True)
    x = ms.Tensor(np.array([[1.0, 2.0, 3.0]], np.float32))
    step(x, ms.Tensor(np.array([[np.inf]], np.float32)))
    assert step.scale.asnumpy() == 1.0
    np.testing.assert_array_equal(net.dense.weight.asnumpy(), np.ones((1, 3), np.float32))


def test_monitor_reports_speed_and_eta_from_the_first_steps_without_the_compilation(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(train_monitor.time, "perf_counter", lambda: clock[0])
    lines = []
    monitor = StepMonitor(("a",), total_steps=100, images_per_step=2, log_interval=10, max_nan_steps=2,
                          log=lines.append)
    for step in range(1, 11):
        clock[0] += 30.0 if step == 1 else 0.5  # the first step compiles the graph
        monitor.step(step, 0.1, [1.0, 1.0])
    assert len(lines) == 3
    assert lines[0].startswith("step 1/100 ") and "first step 30.0s" in lines[0] and "step_time" not in lines[0]
    # steps 2..6: 0.5 s each, 94 steps left
    assert lines[1].startswith("step 6/100 ") and "step_time 0.500s 4.00 img/s ETA 0:47" in lines[1]
    assert lines[2].startswith("step 10/100 ") and "step_time 0.500s" in lines[2] and "ETA 0:45" in lines[2]
