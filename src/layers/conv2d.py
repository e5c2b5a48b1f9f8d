"""Conv2d whose backward can run without oneDNN's backward convolutions (``conv_backward``).

On CPU, MindSpore computes convolutions with oneDNN's GEMM kernels. Each of their backward
primitives (input gradient, weight gradient) allocates a scratchpad of im2col size (input channels
x k x k x output pixels, per thread) when the graph is compiled and keeps it as long as the graph
lives: one per convolution and per pyramid level, never shared. In the 768x1280 batch-2 train step
they held most of the memory that no tensor of the graph accounts for (README, memory section).

The "taps" backward of a stride-1 k x k convolution with "same" zero padding uses none of them:
- input gradient: the output gradient convolved (forward) with the kernel flipped in space and
  with its in/out channels swapped; oneDNN's forward kernels block their im2col and stay small;
- weight gradient: one batched matrix product per kernel tap (i, j): the output gradient times
  the input shifted by (i - k // 2, j - k // 2), both cut to where the shift stays inside the image.
Their temporaries are graph tensors, which MindSpore's memory pool frees and reuses. The taps cost
about forty extra kernels per convolution (two cuts, a product and a sum per tap), which small
inputs notice more than a small scratchpad: ``conv_backward: auto`` takes them only where one
image's im2col is at least ``conv_taps_min_mib``.
"""
import mindspore as ms
from mindspore import nn, ops

from src.layers.tensor_utils import permute

CONV_BACKWARDS = ("auto", "native", "taps")


def resolve_conv_backward(mode, device_target, min_mib):
    """(backward, im2col MiB from which a convolution takes it) that ``conv_backward`` ``mode`` means
    on ``device_target``: "auto" is "taps" from ``min_mib`` on CPU (where the scratchpads above are
    measured), "native" elsewhere; "taps" takes them at every size."""
    if mode not in CONV_BACKWARDS:
        raise ValueError(f"conv_backward: {mode!r} is not one of {', '.join(CONV_BACKWARDS)}")
    if mode == "auto":
        return ("taps", min_mib) if device_target == "CPU" else ("native", 0)
    return mode, 0


def tap_weight_grad(x, dout, kernel_size, matmul_t):
    """Weight gradient of a stride-1 convolution with zero padding k // 2 on each side.

    x (N, Cin, H, W), dout (N, Cout, H, W) -> (Cout, Cin, k, k); ``matmul_t`` a
    ``BatchMatMul(transpose_b=True)``. Tap (i, j) reads the input at offset (di, dj) =
    (i - k // 2, j - k // 2): the sum over n and the output pixels (y, x) whose input pixel
    (y + di, x + dj) lies inside the image of dout[n, :, y, x] x[n, :, y + di, x + dj]^T (zero when
    there is none: the empty product is not computed, as the matmul kernel's output for it was not
    zero on CPU inside the whole pyramid's graph).
    Each tap waits for the previous one, so that one pair of cut copies is alive at a time.
    """
    n, cin, h, w = x.shape
    cout = dout.shape[1]
    half = kernel_size // 2
    taps = []
    done = None
    for i in range(kernel_size):
        for j in range(kernel_size):
            di, dj = i - half, j - half
            y0, x0 = max(0, -di), max(0, -dj)  # first output pixel whose input pixel is inside
            rows, cols = h - abs(di), w - abs(dj)
            if rows <= 0 or cols <= 0:  # the tap never meets the image (a level smaller than the kernel)
                taps.append(ops.zeros((cout, cin), x.dtype))
                continue
            src = x if done is None else ops.depend(x, done)
            grad = dout if done is None else ops.depend(dout, done)
            x_cut = ops.slice(src, (0, 0, y0 + di, x0 + dj), (n, cin, rows, cols)).reshape(n, cin, rows * cols)
            d_cut = ops.slice(grad, (0, 0, y0, x0), (n, cout, rows, cols)).reshape(n, cout, rows * cols)
            done = matmul_t(d_cut, x_cut).sum(0)  # (Cout, Cin)
            taps.append(done)
    return ops.stack(taps, 2).reshape(cout, cin, kernel_size, kernel_size)


class TapGradConv(nn.Cell):
    """conv2d(x, weight), stride 1, zero padding k // 2: the forward pass is ``conv`` (the
    ``nn.Conv2d``'s own Conv2D primitive), the backward the taps one (module docstring), computed in
    float32.

    x (N, Cin, H, W), weight (Cout, Cin, k, k) -> (N, Cout, H, W).
    """

    def __init__(self, conv, in_channels, kernel_size):
        super().__init__()
        self.kernel_size = kernel_size
        self.conv = conv
        self.input_grad_conv = ops.Conv2D(in_channels, kernel_size, pad_mode="pad", pad=kernel_size // 2)
        self.matmul_t = ops.BatchMatMul(transpose_b=True)

    def construct(self, x, weight):
        return self.conv(x, weight)

    def bprop(self, x, weight, out, dout):
        x32, w32, d32 = x, weight, dout
        if x.dtype != ms.float32:  # mixed precision: float16 layers, gradients summed in float32
            x32, d32 = x.astype(ms.float32), dout.astype(ms.float32)
        if weight.dtype != ms.float32:
            w32 = weight.astype(ms.float32)
        flipped = ops.reverse(permute(w32, (1, 0, 2, 3)), (2, 3))  # (Cin, Cout, k, k)
        dx = self.input_grad_conv(d32, flipped)
        dw = tap_weight_grad(x32, d32, self.kernel_size, self.matmul_t)
        return dx.astype(x.dtype), dw.astype(weight.dtype)


def takes_tap_backward(cell):
    """Whether the taps backward computes ``cell``'s (an ``nn.Conv2d``) gradients: a square odd
    kernel larger than 1 (1 x 1 kernels need no im2col), stride 1, no dilation or groups, NCHW,
    zero padding k // 2 on every side ("same", or "pad" with that padding)."""
    k = cell.kernel_size[0]
    if cell.kernel_size != (k, k) or k % 2 == 0 or k == 1:
        return False
    if cell.stride != (1, 1) or cell.dilation != (1, 1) or cell.group != 1 or cell.data_format != "NCHW":
        return False
    if cell.pad_mode == "same":
        return True
    pads = cell.padding if isinstance(cell.padding, tuple) else (cell.padding,) * 4
    return cell.pad_mode == "pad" and all(p == k // 2 for p in pads)


class Conv2d(nn.Conv2d):
    """``nn.Conv2d``: the same arguments, parameters (names, layout, initialisation) and forward
    pass; ``set_conv_backward`` may give it the taps backward."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tap_grad_conv = None
        self.taps_min_elements = 0

    def uses_taps(self, shape):
        """Whether a call on input ``shape`` (N, Cin, H, W) runs the taps backward: given one, and
        one image's im2col (Cin x k x k x H x W float32 values) is at least ``taps_min_elements``.
        Shapes are static, so the graph compiler decides this once per call site."""
        k = self.kernel_size[0]
        return self.tap_grad_conv is not None and shape[1] * k * k * shape[2] * shape[3] >= self.taps_min_elements

    def construct(self, x, weight=None):
        """x (N, Cin, H, W) -> (N, Cout, H', W'); weight: None for ``self.weight``, or a kernel of its
        shape computed from it (``src.layers.frozen_batch_norm`` folds a norm into it)."""
        if weight is None:
            weight = self.weight
        if self.uses_taps(x.shape):
            out = self.tap_grad_conv(x, weight)
        else:
            out = self.conv2d(x, weight)
        if self.has_bias:
            out = self.bias_add(out, self.bias)
        return out


def set_conv_backward(net, backward, min_mib=0):
    """Give every ``Conv2d`` of ``net`` that ``takes_tap_backward`` the ``backward`` ("taps" or
    "native", as ``resolve_conv_backward`` returns it), taps for inputs whose im2col of one image
    is at least ``min_mib`` MiB; returns how many convolutions may run the taps one."""
    if backward not in ("native", "taps"):
        raise ValueError(f"conv backward must be 'native' or 'taps', got {backward!r}")
    count = 0
    for _, cell in net.cells_and_names():
        if not isinstance(cell, Conv2d):
            continue
        if backward == "taps" and takes_tap_backward(cell):
            cell.tap_grad_conv = TapGradConv(cell.conv2d, cell.in_channels, cell.kernel_size[0])
            cell.taps_min_elements = int(min_mib * 2 ** 20) // 4
            count += 1
        else:
            cell.tap_grad_conv = None
    return count
