"""``concat([relu(x), y], 1)`` whose backward pass keeps the concatenation and a boolean mask.

A ReLU followed by a concatenation that feeds a layer (the point head's hidden layers) would keep
two float tensors for the backward pass: the ReLU's output (MindSpore's ``ReluGrad`` reads it) and
the concatenation (the next layer's weight gradient reads it). The first is a slice of the second,
so this cell's backward finds where the ReLU is active from the concatenation instead. Reading that
slice with ``ReluGrad`` would not do: the compiler rewrites a slice of a concatenation into the
concatenated input and keeps the ReLU's output again; the comparison ``> 0`` leaves it a boolean.
"""
from mindspore import nn, ops


class ReluConcat(nn.Cell):
    """x (N, C, ...), y (N, D, ...) -> (N, C + D, ...): ``relu(x)`` then ``y`` along axis 1."""

    def construct(self, x, y):
        return ops.concat([ops.relu(x), y], 1)

    def bprop(self, x, y, out, dout):
        channels = x.shape[1]  # static: reading the shape keeps no tensor
        active = (out > 0)[:, :channels]  # where x > 0, as ReLU's gradient (0 at x == 0)
        grad = dout[:, :channels]
        # zeros_like, not a scalar 0: with the scalar the compiled train step held 0.86 GiB more
        return ops.select(active, grad, ops.zeros_like(grad)), dout[:, channels:]
