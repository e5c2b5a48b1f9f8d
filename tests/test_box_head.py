"""The box head (src/maskrcnn/rcnn_cls.py) on channels-last RoI features, against numpy written from
the model zoo's definition: the first FC reads the features flattened in (C, S, S) order."""
import numpy as np
import mindspore as ms

from src.maskrcnn.rcnn_cls import FpnCls

K, S, C, FC, CLASSES = 5, 3, 4, 6, 3


def _head_and_weights(rng):
    head = FpnCls(C, S, FC, CLASSES, 2)
    weights = {}
    for name, param in head.parameters_and_names():
        value = rng.standard_normal(param.shape).astype(np.float32) * 0.5
        param.set_data(ms.Tensor(value))
        weights[name] = value.astype(np.float64)
    return head, weights


def numpy_box_head(x_cf, w):
    """x_cf (K, C, S, S) -> (cls, reg, (flattened input, both FCs' pre-activations)); weights stored (in, out)."""
    flat = x_cf.reshape(len(x_cf), -1)
    pre0 = flat @ w["shared_fc_0.weight"] + w["shared_fc_0.bias"]
    h0 = np.maximum(pre0, 0)
    pre1 = h0 @ w["shared_fc_1.weight"] + w["shared_fc_1.bias"]
    h1 = np.maximum(pre1, 0)
    cls = h1 @ w["cls_scores.weight"] + w["cls_scores.bias"]
    reg = h1 @ w["reg_scores.weight"] + w["reg_scores.bias"]
    return cls, reg, (flat, pre0, pre1)


def test_box_head_reads_channels_last_features_in_the_model_zoo_weight_order():
    rng = np.random.default_rng(0)
    head, w = _head_and_weights(rng)
    x_cf = rng.standard_normal((K, C, S, S))
    x_cl = ms.Tensor(x_cf.transpose(0, 2, 3, 1).astype(np.float32))
    cls, reg = head(x_cl)
    ref_cls, ref_reg, _ = numpy_box_head(x_cf, w)
    np.testing.assert_allclose(cls.asnumpy(), ref_cls, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(reg.asnumpy(), ref_reg, rtol=1e-4, atol=1e-4)


def test_box_head_gradients_reach_the_stored_first_fc_rows_and_the_features():
    rng = np.random.default_rng(1)
    head, w = _head_and_weights(rng)
    x_cf = rng.standard_normal((K, C, S, S))
    g_cls = rng.standard_normal((K, CLASSES))
    g_reg = rng.standard_normal((K, CLASSES * 4))
    fc0 = head.shared_fc_0.weight

    def loss(x):
        cls, reg = head(x)
        return (cls * ms.Tensor(g_cls.astype(np.float32))).sum() + (reg * ms.Tensor(g_reg.astype(np.float32))).sum()

    x_cl = ms.Tensor(x_cf.transpose(0, 2, 3, 1).astype(np.float32))
    dx, (dw0,) = ms.grad(loss, grad_position=0, weights=[fc0])(x_cl)
    # numpy backward pass, written from the chain rule
    _, _, (flat, pre0, pre1) = numpy_box_head(x_cf, w)
    dh1 = g_cls @ w["cls_scores.weight"].T + g_reg @ w["reg_scores.weight"].T
    dpre1 = dh1 * (pre1 > 0)
    dpre0 = (dpre1 @ w["shared_fc_1.weight"].T) * (pre0 > 0)
    np.testing.assert_allclose(dw0.asnumpy(), flat.T @ dpre0, rtol=1e-4, atol=1e-4)
    dflat = dpre0 @ w["shared_fc_0.weight"].T
    np.testing.assert_allclose(dx.asnumpy(), dflat.reshape(K, C, S, S).transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-4)
