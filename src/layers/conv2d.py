"""Conv2d whose backward can run without oneDNN's backward convolutions (``conv_backward``).

On CPU, MindSpore computes convolutions with oneDNN's GEMM kernels. Each of their backward
primitives (input gradient, weight gradient) allocates a scratchpad of im2col size (input channels
x k x k x output pixels, per thread) when the graph is compiled and keeps it as long as the graph
lives: one per convolution and per pyramid level, never shared. In the 768x1280 batch-2 train step
they held most of the memory that no tensor of the graph accounts for (README, memory section).

The "taps" backward of a k x k convolution with stride 1 or 2 and zero padding k // 2 uses none of them:
- input gradient, stride 1: the output gradient convolved (forward) with the kernel flipped in space
  and with its in/out channels swapped; oneDNN's forward kernels block their im2col and stay small;
- input gradient, stride 2: the input pixels of each parity (row, column) (a, b) receive the output
  gradient through the kernel taps of that parity only, so the gradient is four such forward
  convolutions with parts of the flipped kernel (1 x 1 to (k + 1) / 2 square), interleaved;
- weight gradient: one batched matrix product per kernel tap (i, j): the output gradient times
  the input pixels that tap reads (shifted by (i - k // 2, j - k // 2), every stride-th), both cut
  to the output pixels whose tap lies inside the image.
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


def stride_two_phases(x, out_hw):
    """The input pixels a stride-2 convolution reads together: the four x[:, :, a::2, b::2],
    (a, b) = (0, 0), (0, 1), (1, 0), (1, 1), each (N, C, H', W'); x (N, C, H, W), ``out_hw`` (H', W') =
    (ceil(H / 2), ceil(W / 2)), odd sizes padded with zeros. Cut through a reshape: MindSpore's CPU
    ``StridedSlice`` took about 35 times ``Slice``'s time for the same copy."""
    n, c, h, w = x.shape
    out_h, out_w = out_hw
    if (h, w) != (2 * out_h, 2 * out_w):
        x = ops.pad(x, (0, 2 * out_w - w, 0, 2 * out_h - h))
    x6 = x.reshape(n, c, out_h, 2, out_w, 2)
    phases = []
    for a in range(2):
        for b in range(2):
            phases.append(ops.slice(x6, (0, 0, 0, a, 0, b), (n, c, out_h, 1, out_w, 1)).reshape(n, c, out_h, out_w))
    return tuple(phases)


def tap_offsets(kernel_size, stride):
    """Where each kernel tap (i, j), in row-major order, reads its input: (phase, qi, qj), pixel
    (y + qi, x + qj) of phase number ``phase`` (``stride_two_phases`` order; 0 at stride 1) for output
    pixel (y, x). With (di, dj) = (i - k // 2, j - k // 2) the tap's offset, the input pixel
    (stride * y + di, stride * x + dj) has parity (di % stride, dj % stride) and lies at
    (y + di // stride, x + dj // stride) of that parity's phase. Plain Python, computed before the graph:
    inside it MindSpore 2.10 did not fold these integer divisions into constants (0.2 GiB more memory
    after compiling the 768x1280 train step)."""
    half = kernel_size // 2
    offsets = []
    for i in range(kernel_size):
        for j in range(kernel_size):
            di, dj = i - half, j - half
            offsets.append(((di % stride) * stride + dj % stride, di // stride, dj // stride))
    return tuple(offsets)


def tap_weight_grad(phases, dout, kernel_size, offsets, matmul_t):
    """Weight gradient of a convolution with stride 1 or 2 and zero padding k // 2 on each side.

    phases: its input x (N, Cin, H, W) as (x,) at stride 1, as ``stride_two_phases(x)`` at stride 2
    (each (N, Cin, H', W')); dout (N, Cout, H', W'); offsets: ``tap_offsets`` -> (Cout, Cin, k, k);
    ``matmul_t`` a ``BatchMatMul(transpose_b=True)``. Tap (i, j): the sum over n and the output
    pixels (y, x) whose input pixel (y + qi, x + qj) of its phase lies inside that phase of
    dout[n, :, y, x] phase[n, :, y + qi, x + qj]^T (a zero row or column that pads a phase adds
    nothing; zero when there is no such pixel: the empty product is not computed, as the matmul
    kernel's output for it was not zero on CPU inside the whole pyramid's graph).
    Each tap waits for the previous one, so that one pair of cut copies is alive at a time.
    """
    n, cin, phase_h, phase_w = phases[0].shape
    cout, out_h, out_w = dout.shape[1:]
    taps = []
    done = None
    for phase_index, qi, qj in offsets:
        # output rows y0 .. y0 + rows - 1: 0 <= y + qi < phase_h and y < out_h (min(a, b) = a - max(0, a - b))
        y0, x0 = max(0, -qi), max(0, -qj)
        rows = out_h - max(0, out_h - phase_h + qi) - y0
        cols = out_w - max(0, out_w - phase_w + qj) - x0
        if rows <= 0 or cols <= 0:  # the tap never meets the image (a level smaller than the kernel)
            taps.append(ops.zeros((cout, cin), dout.dtype))
            continue
        phase = phases[phase_index]
        src = phase if done is None else ops.depend(phase, done)
        grad = dout if done is None else ops.depend(dout, done)
        x_cut = ops.slice(src, (0, 0, y0 + qi, x0 + qj), (n, cin, rows, cols)).reshape(n, cin, rows * cols)
        d_cut = ops.slice(grad, (0, 0, y0, x0), (n, cout, rows, cols)).reshape(n, cout, rows * cols)
        done = matmul_t(d_cut, x_cut).sum(0)  # (Cout, Cin)
        taps.append(done)
    return ops.stack(taps, 2).reshape(cout, cin, kernel_size, kernel_size)


def parity_taps(kernel_size, parity):
    """Stride 2, zero padding p = k // 2: input pixel 2 * m + ``parity`` receives the output gradient
    at m + t through kernel tap i = parity + p - 2 * t, for the taps i of that parity. Returns
    (first, last) of those taps' indices in the spatially flipped kernel (k - 1 - i, every second;
    in that order t rises from t_min) and (-t_min, t_max), the zero padding of the output gradient
    before and after that a correlation with them needs (t_min <= 0 <= t_max here)."""
    p = kernel_size // 2
    taps = [i for i in range(kernel_size) if (parity + p - i) % 2 == 0]
    return (kernel_size - 1 - taps[-1], kernel_size - 1 - taps[0]), ((taps[-1] - parity - p) // 2, (parity + p - taps[0]) // 2)


class StrideTwoInputGrad(nn.Cell):
    """Input gradient of a k x k convolution with stride 2 and zero padding k // 2, from four
    stride-1 forward convolutions (module docstring).

    dout (N, Cout, H', W'), flipped (Cin, Cout, k, k) (the kernel flipped in space, channels
    swapped), (H, W) the input's size -> (N, Cin, H, W); H' = ceil(H / 2), W' = ceil(W / 2).
    """

    def __init__(self, in_channels, kernel_size):
        super().__init__()
        cuts, convs = [], []
        for a in range(2):
            for b in range(2):
                (r0, r1), (top, bottom) = parity_taps(kernel_size, a)
                (c0, c1), (left, right) = parity_taps(kernel_size, b)
                cuts.append(((r0, c0), (r1 + 1, c1 + 1)))
                convs.append(ops.Conv2D(in_channels, ((r1 - r0) // 2 + 1, (c1 - c0) // 2 + 1), pad_mode="pad",
                                        pad=(top, bottom, left, right)))
        self.cuts = tuple(cuts)  # the phase's taps in the flipped kernel: begin, end (step 2)
        self.convs = tuple(convs)

    def construct(self, dout, flipped, size):
        n, _, out_h, out_w = dout.shape
        cin, cout = flipped.shape[:2]
        phases = []
        for (begin, end), conv in zip(self.cuts, self.convs):
            kernel = ops.strided_slice(flipped, (0, 0) + begin, (cin, cout) + end, (1, 1, 2, 2))
            phases.append(conv(dout, kernel))  # (N, Cin, H', W'): input pixels (2 y + a, 2 x + b)
        rows = [ops.stack(phases[2 * a:2 * a + 2], -1).reshape(n, cin, out_h, 2 * out_w) for a in range(2)]
        dx = ops.stack(rows, 3).reshape(n, cin, 2 * out_h, 2 * out_w)
        if size != (2 * out_h, 2 * out_w):  # odd sizes: the last phase row or column lies outside
            dx = ops.slice(dx, (0, 0, 0, 0), (n, cin) + size)
        return dx


class TapGradConv(nn.Cell):
    """conv2d(x, weight), stride 1 or 2, zero padding k // 2: the forward pass is ``conv`` (the
    ``nn.Conv2d``'s own Conv2D primitive), the backward the taps one (module docstring), computed in
    float32.

    x (N, Cin, H, W), weight (Cout, Cin, k, k) -> (N, Cout, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(self, conv, in_channels, kernel_size, stride=1):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        self.conv = conv
        if stride == 1:
            self.input_grad = ops.Conv2D(in_channels, kernel_size, pad_mode="pad", pad=kernel_size // 2)
        else:
            self.input_grad = StrideTwoInputGrad(in_channels, kernel_size)
        self.offsets = tap_offsets(kernel_size, stride)
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
        if self.stride == 1:
            dx = self.input_grad(d32, flipped)
            phases = (x32,)
        else:
            dx = self.input_grad(d32, flipped, x.shape[2:])
            phases = stride_two_phases(x32, dout.shape[2:])
        dw = tap_weight_grad(phases, d32, self.kernel_size, self.offsets, self.matmul_t)
        return dx.astype(x.dtype), dw.astype(weight.dtype)


def takes_tap_backward(cell):
    """Whether the taps backward computes ``cell``'s (an ``nn.Conv2d``) gradients: a square odd
    kernel larger than 1 (1 x 1 kernels need no im2col), stride 1 or 2 alike in both directions, no
    dilation or groups, NCHW, zero padding k // 2 on every side ("pad" with that padding, or "same"
    at stride 1: at stride 2 "same" pads even sizes at the bottom and right only)."""
    k = cell.kernel_size[0]
    if cell.kernel_size != (k, k) or k % 2 == 0 or k == 1:
        return False
    if cell.stride not in ((1, 1), (2, 2)) or cell.dilation != (1, 1) or cell.group != 1 or cell.data_format != "NCHW":
        return False
    if cell.pad_mode == "same":
        return cell.stride == (1, 1)
    pads = cell.padding if isinstance(cell.padding, tuple) else (cell.padding,) * 4
    return cell.pad_mode == "pad" and all(p == k // 2 for p in pads)


class Conv2d(nn.Conv2d):
    """``nn.Conv2d``: the same arguments, parameters (names, layout, initialisation) and forward
    pass; ``set_conv_backward`` may give it the taps backward."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tap_grad_conv = None
        self.taps_min_elements = 0

    def output_size(self, shape):
        """(H', W') of a call on input ``shape`` (N, Cin, H, W) with zero padding k // 2 (the
        convolutions that take the taps backward or fold a norm): ceil(H / stride), ceil(W / stride)."""
        s = self.stride[0]
        return (shape[2] + s - 1) // s, (shape[3] + s - 1) // s

    def uses_taps(self, shape):
        """Whether a call on input ``shape`` (N, Cin, H, W) runs the taps backward: given one, and
        one image's im2col (Cin x k x k x H' x W' float32 values, H' x W' the output's size) is at
        least ``taps_min_elements``. Shapes are static, so the graph compiler decides this once per
        call site."""
        k = self.kernel_size[0]
        out_h, out_w = self.output_size(shape)
        return self.tap_grad_conv is not None and shape[1] * k * k * out_h * out_w >= self.taps_min_elements

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
            cell.tap_grad_conv = TapGradConv(cell.conv2d, cell.in_channels, cell.kernel_size[0], cell.stride[0])
            cell.taps_min_elements = int(min_mib * 2 ** 20) // 4
            count += 1
        else:
            cell.tap_grad_conv = None
    return count
