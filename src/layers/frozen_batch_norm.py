"""A convolution followed by a BatchNorm on its moving statistics, computed as one convolution.

MindSpore's BatchNorm gradient (``BatchNormGrad``) reads the norm's input, so a BatchNorm after a
convolution keeps that convolution's output alive from the forward pass until the backward pass
reaches it: in the backbone (the model zoo's frozen BatchNorms train gamma and beta), about half of
the activations the train step keeps (README, memory section). With fixed statistics the norm is
an affine map per output channel, ``z * s + (beta - mean * s)`` with ``s = gamma / sqrt(var + eps)``,
so it folds into the convolution: ``conv(x, W * s) + (beta - mean * s)``. The values are
BatchNorm's up to float rounding, and the gradients of ``W``, ``gamma`` and ``beta`` follow from the
same function; the backward pass needs only the convolution's input, which it keeps anyway for
``W``'s gradient.
"""
from mindspore import ops


def frozen_batch_norm_affine(norm):
    """(scale, shift), each (C,): ``norm`` (an ``nn.BatchNorm2d`` that normalises with its moving
    statistics) maps channel c of its input z to ``z * scale[c] + shift[c]``."""
    scale = norm.gamma / ops.sqrt(norm.moving_variance + norm.eps)
    return scale, norm.beta - norm.moving_mean * scale


def folding_saves_memory(conv, x_shape):
    """Whether folding a norm into ``conv`` (a ``src.layers.conv2d.Conv2d``) on inputs of ``x_shape``
    (N, Cin, H, W) keeps less memory for the backward pass: the convolution's output that
    ``BatchNormGrad`` would keep (N x Cout x H' x W', ``conv.output_size``) is more than twice the kernel's
    size (the fold keeps the folded kernel and the scales broadcast to it). Shapes are static, so
    the compiler decides this once per call site."""
    out_h, out_w = conv.output_size(x_shape)
    kernel = conv.out_channels * conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
    return x_shape[0] * conv.out_channels * out_h * out_w > 2 * kernel


def conv_frozen_batch_norm(conv, norm, x):
    """``norm(conv(x))`` as one convolution and a bias (module docstring).

    conv: a ``src.layers.conv2d.Conv2d`` without bias; norm: an ``nn.BatchNorm2d`` with
    ``use_batch_statistics=False``; x (N, Cin, H, W) -> (N, Cout, H', W').
    """
    scale, shift = frozen_batch_norm_affine(norm)
    weight = conv.weight
    # a same-shape product: MindSpore's CPU kernels of a broadcasting one (and of its gradient) keep
    # two 8-byte offsets per element of the kernel for as long as the graph lives
    out = conv(x, weight * ops.broadcast_to(scale.reshape(-1, 1, 1, 1), weight.shape))
    return ops.bias_add(out, shift.astype(out.dtype))
