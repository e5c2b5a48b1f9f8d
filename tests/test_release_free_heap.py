"""``release_free_heap`` hands freed C-heap pages back to the OS, and ``compile_then_release``
leaves a cell that computes what an uncompiled one does."""
import ctypes
import os

import numpy as np
import pytest

import mindspore as ms
from mindspore import nn

from src.utils.runtime import compile_then_release, release_free_heap

LIBC = ctypes.CDLL(None)


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(getattr(LIBC, "malloc_trim", None) is None, reason="the C library has no malloc_trim")
def test_freed_heap_pages_go_back_to_the_os():
    LIBC.malloc.restype = ctypes.c_void_p
    LIBC.malloc.argtypes = [ctypes.c_size_t]
    LIBC.free.argtypes = [ctypes.c_void_p]
    # 64 KiB blocks stay below glibc's mmap threshold: they come from the heap, as the compiler's
    # small objects do; the last one stays allocated, so free() cannot shrink the heap's top
    size, count = 64 * 1024, 2048
    blocks = [LIBC.malloc(size) for _ in range(count)]
    for b in blocks:
        ctypes.memset(b, 1, size)
    before = rss_bytes()
    for b in blocks[:-1]:
        LIBC.free(b)
    freed = rss_bytes()
    assert release_free_heap()
    released = freed - rss_bytes()
    LIBC.free(blocks[-1])
    assert freed > before - size * count // 2, "free() alone returned the pages: the test proves nothing"
    assert released > size * count // 2, f"released {released} of {size * count} freed bytes"


def test_a_compiled_then_released_cell_computes_the_same():
    ms.set_context(mode=ms.GRAPH_MODE)
    net = nn.Dense(3, 2, weight_init="normal", bias_init="normal")
    x = ms.Tensor(np.arange(12, dtype=np.float32).reshape(4, 3))
    expected = x.asnumpy() @ net.weight.asnumpy().T + net.bias.asnumpy()
    compile_then_release(net, x)
    np.testing.assert_allclose(net(x).asnumpy(), expected, rtol=1e-5)
