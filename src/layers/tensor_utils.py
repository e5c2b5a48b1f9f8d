"""Small tensor helpers shared by the heads: axis permutation, row gathers, per-class selection, pairwise
operands."""
import numpy as np

import mindspore as ms
from mindspore import mint, ops


def permute(x, perm, low_memory=True):
    """``x`` with its axes in the order ``perm``, as ``ops.transpose`` computes it (values and gradient).

    MindSpore 2.10's CPU ``Transpose`` kernel builds, when the graph compiles, a table of one 8-byte
    source offset per output element and keeps it for the graph's life. With ``low_memory`` this is
    ``mint.permute`` instead: a view (``TransposeView``), copied into place where a contiguous tensor
    is needed, without a table. That copy is slower; the inference graph, which holds no gradients
    of these layouts, passes ``low_memory=False`` for its large ones (README, memory section).
    """
    return mint.permute(x, perm) if low_memory else ops.transpose(x, perm)


def expand_to(x, axis, shape):
    """``x`` with a new axis at ``axis``, repeated to ``shape``.

    MindSpore's CPU element-wise kernels are slow when two operands are broadcast along different
    axes, as in pairwise (N, 1) x (1, M) arithmetic, and ``tile`` is faster there than
    ``broadcast_to`` (``python -m bench.bench_network`` shows the effect on the whole step), so
    pairwise computations expand both operands with this first.
    """
    x = ops.expand_dims(x, axis)
    return ops.tile(x, tuple(s // d for s, d in zip(shape, x.shape)))


def gather_rows(x, index):
    """Per-image row gather: x (B, M, ...) and index (B, K) int32 -> (B, K, ...)."""
    expanded = index.reshape(index.shape + (1,) * (x.ndim - 2))
    expanded = ops.broadcast_to(expanded, index.shape + x.shape[2:])
    return ops.gather_elements(x, 1, expanded)


def select_class(logits, classes):
    """(R, C, H, W) logits and (R,) int32 classes -> (R, H, W) logits of each RoI's class."""
    r, _, h, w = logits.shape
    index = ops.broadcast_to(classes.reshape(r, 1, 1, 1), (r, 1, h, w))
    return ops.gather_elements(logits, 1, index)[:, 0]


def batch_index_of(batch, per_image):
    """(batch * per_image,) int32 image index of each flattened row (a constant tensor)."""
    return ms.Tensor(np.repeat(np.arange(batch, dtype=np.int32), per_image))
