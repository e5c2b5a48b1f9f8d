"""ReluConcat against its definition, forward and backward, in graph mode: relu(x) then y along
axis 1; the gradient reaches x where x > 0 (zero at x == 0, as ReLU's) and y unchanged."""
import numpy as np
import mindspore as ms
from mindspore import nn

from src.layers.relu_concat import ReluConcat


class _Weighted(nn.Cell):
    """sum(ReluConcat(x, y) * upstream): its gradients are the backward pass applied to upstream."""

    def __init__(self, upstream):
        super().__init__()
        self.layer = ReluConcat()
        self.upstream = ms.Tensor(upstream)

    def construct(self, x, y):
        return (self.layer(x, y) * self.upstream).sum()


def test_relu_concat_forward_and_gradients_match_the_definition():
    ms.set_context(mode=ms.GRAPH_MODE)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5, 7)).astype(np.float32)
    x[0, :2] = 0.0  # ReLU's gradient at 0 is 0
    y = rng.standard_normal((3, 4, 7)).astype(np.float32)
    upstream = rng.standard_normal((3, 9, 7)).astype(np.float32)

    out = ReluConcat()(ms.Tensor(x), ms.Tensor(y)).asnumpy()
    np.testing.assert_array_equal(out, np.concatenate([np.maximum(x, 0), y], 1))

    dx, dy = ms.grad(_Weighted(upstream), grad_position=(0, 1))(ms.Tensor(x), ms.Tensor(y))
    np.testing.assert_array_equal(dx.asnumpy(), upstream[:, :5] * (x > 0))
    np.testing.assert_array_equal(dy.asnumpy(), upstream[:, 5:])
