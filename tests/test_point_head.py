"""The point head against its layers written from the definition (1x1 convolutions on (C, P) features
of the concatenated fine or hidden and coarse channels), forward and backward, and its inference path
(projected fine table, one class) against its training forward."""
import numpy as np
import mindspore as ms
from mindspore import ops

from src.layers.feature_table import LevelLayout
from src.layers.point_sample import LevelPointSampler
from src.pointrend.point_head import StandardPointHead


def test_predict_class_on_projected_table_equals_full_forward():
    rng = np.random.default_rng(3)
    fine_channels, num_classes, h, w, stride = 8, 4, 6, 5, 4
    head = StandardPointHead(fine_channels, fc_dim=6, num_fc=3, num_classes=num_classes)
    for p in head.get_parameters():  # non-zero biases and O(1) weights, so every term matters
        p.set_data(ms.Tensor(rng.standard_normal(p.shape).astype(np.float32) * 0.5))
    table = ms.Tensor(rng.standard_normal((2 * h * w, fine_channels)).astype(np.float32))
    sampler = LevelPointSampler(LevelLayout([(h, w)], 2), 0, stride)
    # points inside and outside the 20 x 24 pixel image: outside points read zero features
    points = ms.Tensor((rng.uniform(-0.3, 1.3, (3, 10, 2)) * np.array([w * stride, h * stride])).astype(np.float32))
    batch_index = ms.Tensor(np.array([0, 1, 1], np.int32))
    coarse = ms.Tensor(rng.standard_normal((3, num_classes, 10)).astype(np.float32))
    classes = np.array([2, 0, 3], np.int32)

    fine = ops.transpose(sampler(table, batch_index, points), (0, 2, 1))
    full = head(fine, coarse).asnumpy()  # (R, K, P)
    expected = full[np.arange(3), classes]

    projected = ops.transpose(sampler(head.fine_projection(table), batch_index, points), (0, 2, 1))
    got = head.predict_class(projected, coarse, ms.Tensor(classes)).asnumpy()
    assert got.shape == (3, 10)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def numpy_point_head(head, fine, coarse):
    """detectron2's StandardPointHead (coarse_pred_each_layer) from the definition: fine (R, C, P),
    coarse (R, K, P) -> (R, K, P)."""
    def conv1x1(layer, x):  # Conv1d with kernel 1: weight (out, in, 1, 1) in MindSpore
        w = layer.weight.asnumpy().reshape(layer.weight.shape[0], -1).astype(np.float64)
        return np.einsum("oi,rip->rop", w, x) + layer.bias.asnumpy()[None, :, None]

    x = np.concatenate([fine, coarse], 1)
    for layer in head.seq:
        x = np.concatenate([np.maximum(conv1x1(layer, x), 0), coarse], 1)
    return conv1x1(head.predictor, x)


def test_point_head_matches_its_layers_from_the_definition():
    rng = np.random.default_rng(4)
    head = StandardPointHead(5, fc_dim=6, num_fc=3, num_classes=4)
    for p in head.get_parameters():  # non-zero biases and O(1) weights, so every term matters
        p.set_data(ms.Tensor(rng.standard_normal(p.shape).astype(np.float32) * 0.5))
    fine = rng.standard_normal((3, 5, 7)).astype(np.float32)  # (R, C, P)
    coarse = rng.standard_normal((3, 4, 7)).astype(np.float32)
    got = head(ms.Tensor(fine), ms.Tensor(coarse)).asnumpy()
    np.testing.assert_allclose(got, numpy_point_head(head, fine, coarse), rtol=1e-4, atol=1e-4)


def test_point_head_gradients_match_the_chain_rule_through_the_concatenations():
    rng = np.random.default_rng(5)
    fine_channels, fc_dim, classes = 5, 6, 4
    head = StandardPointHead(fine_channels, fc_dim=fc_dim, num_fc=3, num_classes=classes)
    for p in head.get_parameters():
        p.set_data(ms.Tensor(rng.standard_normal(p.shape).astype(np.float32) * 0.5))
    fine = rng.standard_normal((3, fine_channels, 7))
    coarse = rng.standard_normal((3, classes, 7))
    upstream = rng.standard_normal((3, classes, 7))
    layers = list(head.seq) + [head.predictor]
    params = [q for layer in layers for q in (layer.weight, layer.bias)]

    def loss(f, c):
        return (head(f, c) * ms.Tensor(upstream.astype(np.float32))).sum()

    (d_fine, d_coarse), grads = ms.grad(loss, grad_position=(0, 1), weights=params)(
        ms.Tensor(fine.astype(np.float32)), ms.Tensor(coarse.astype(np.float32)))

    # numpy forward keeping each layer's concatenated input, then the chain rule backwards
    mats = [layer.weight.asnumpy().reshape(layer.weight.shape[0], -1).astype(np.float64) for layer in layers]
    biases = [layer.bias.asnumpy().astype(np.float64) for layer in layers]
    inputs, pre = [np.concatenate([fine, coarse], 1)], []
    for w, b in zip(mats[:-1], biases[:-1]):
        pre.append(np.einsum("oi,rip->rop", w, inputs[-1]) + b[None, :, None])
        inputs.append(np.concatenate([np.maximum(pre[-1], 0), coarse], 1))
    d_out, expected, d_coarse_ref = upstream, [], np.zeros_like(coarse)
    for i in reversed(range(len(layers))):
        expected = [np.einsum("rop,rip->oi", d_out, inputs[i]).reshape(layers[i].weight.shape),
                    d_out.sum((0, 2))] + expected
        d_in = np.einsum("oi,rop->rip", mats[i], d_out)
        split = d_in.shape[1] - classes
        d_coarse_ref += d_in[:, split:]
        if i:
            d_out = d_in[:, :split] * (pre[i - 1] > 0)
    np.testing.assert_allclose(d_fine.asnumpy(), d_in[:, :fine_channels], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(d_coarse.asnumpy(), d_coarse_ref, rtol=1e-4, atol=1e-4)
    for got, want, q in zip(grads, expected, params):
        np.testing.assert_allclose(got.asnumpy(), want, rtol=1e-4, atol=1e-4, err_msg=q.name)
