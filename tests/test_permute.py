"""src.layers.tensor_utils.permute: ops.transpose's values and gradient (numpy from the definition, also
when a reshape follows, as in the feature table), and no per-element index table kept by its
compiled kernels (what ops.transpose's CPU kernel keeps); the project permutes with it."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import mindspore as ms
from mindspore import nn

from src.layers.tensor_utils import permute

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _PermuteLoss(nn.Cell):
    """sum(permute(x) * g), the permuted x flattened to rows first if ``rows``: its gradient with
    respect to x is g put back in x's axis order."""

    def __init__(self, perm, rows, low_memory=True):
        super().__init__()
        self.perm = perm
        self.rows = rows
        self.low_memory = low_memory

    def construct(self, x, g):
        y = permute(x, self.perm, self.low_memory)
        if self.rows:
            y = y.reshape(-1, y.shape[-1]).reshape(y.shape)
        return (y * g).sum()


@pytest.mark.parametrize("perm", [(0, 2, 3, 1), (0, 3, 1, 2), (1, 0, 2, 3), (0, 2, 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("rows", [False, True])
@pytest.mark.parametrize("low_memory", [True, False])
def test_permute_values_and_gradient_match_numpy(perm, dtype, rows, low_memory):
    rng = np.random.default_rng(len(perm) + perm[1])
    shape = (2, 3, 4, 5)[:len(perm)]
    x = rng.standard_normal(shape).astype(dtype)
    out = permute(ms.Tensor(x), perm, low_memory).asnumpy()
    assert out.dtype == dtype and out.shape == tuple(shape[p] for p in perm)
    np.testing.assert_array_equal(out, np.transpose(x, perm))

    g = rng.standard_normal(out.shape).astype(dtype)
    grad = ms.grad(_PermuteLoss(perm, rows, low_memory))(ms.Tensor(x), ms.Tensor(g)).asnumpy()
    np.testing.assert_array_equal(grad, np.transpose(g, np.argsort(perm)))  # exact: a copy of g


# compiles y = (P(x) * 2).sum() for a 16 MiB x, then reports the large allocations held by library
HELD_AFTER_COMPILE = r"""
import ctypes, sys
sys.path.insert(0, {root!r})
import numpy as np
import mindspore as ms
from mindspore import nn, ops
from src.layers.tensor_utils import permute
ms.set_context(mode=ms.GRAPH_MODE)
ms.set_device("CPU")
class Net(nn.Cell):
    def construct(self, x):
        y = ops.transpose(x, (0, 2, 3, 1)) if {plain!r} else permute(x, (0, 2, 3, 1))
        return (y * 2.0).sum()
net = Net()
net.compile(ms.Tensor(np.zeros((4, 64, 128, 128), np.float32)))
ctypes.CDLL(None).alloc_report(b"compiled")
"""


def _held_by_kernels(tmp_path, plain):
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler to build bench/alloc_by_library.c")
    tracer = str(tmp_path / "alloc_by_library.so")
    if not os.path.exists(tracer):
        subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", tracer, os.path.join(ROOT, "bench", "alloc_by_library.c"),
                        "-ldl", "-lpthread"], check=True)
    script = tmp_path / f"held_{plain}.py"  # graph mode reads the source of what it compiles
    script.write_text(HELD_AFTER_COMPILE.format(root=ROOT, plain=plain))
    out = subprocess.run([sys.executable, str(script)], env=dict(os.environ, LD_PRELOAD=tracer),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    held = {}
    for line in out.stderr.splitlines():
        if line.startswith("ALLOC compiled "):
            _, _, lib, live, _ = line.split()
            held[lib] = int(live)
    # MindSpore's own libraries (numpy and openblas hold their buffers in both cases)
    return sum(live for lib, live in held.items() if lib.startswith(("_c_expression", "libmindspore")))


def test_permute_keeps_no_index_table_after_compiling(tmp_path):
    """4 x 64 x 128 x 128 = 4.2M elements: ops.transpose's CPU kernel holds an 8-byte offset per
    element (32 MiB, charged to ``_c_expression``, where the vector grows) from compile time on;
    with permute MindSpore's libraries hold about 1 MiB."""
    elements = 4 * 64 * 128 * 128
    assert _held_by_kernels(tmp_path, plain=True) >= 8 * elements  # what permute avoids is there
    assert _held_by_kernels(tmp_path, plain=False) < 4 * 2 ** 20


def test_the_project_permutes_with_permute():
    """ops.transpose stays only in permute itself and where permute cannot go: MindSpore 2.10 fails
    to compile a view (mint.permute) of the output of a cell with a custom bprop (RoIAlign's chunked
    look-up)."""
    import re
    allowed = {("src/layers/roi_align.py", "return ops.transpose(feats, (0, 3, 1, 2))"),
               ("src/layers/tensor_utils.py", "return mint.permute(x, perm) if low_memory else ops.transpose(x, perm)")}
    found = set()
    for base, _, files in os.walk(os.path.join(ROOT, "src")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(base, name)
                with open(path, encoding="utf-8") as f:
                    for line in f:
                        if re.search(r"ops\.transpose\(|ops\.Transpose\(|\.transpose\(", line) and "np." not in line:
                            found.add((os.path.relpath(path, ROOT), line.strip()))
    assert found == allowed
