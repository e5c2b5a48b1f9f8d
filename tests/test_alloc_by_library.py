"""bench/alloc_by_library.c (bench_memory's "by library" part): large allocations are charged to the
library that made them, released when freed, and small ones are left out."""
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import ctypes
import numpy as np
report = ctypes.CDLL(None).alloc_report
report.argtypes = [ctypes.c_char_p]
big = np.ones(48 * 2 ** 20 // 8)          # 48 MiB through numpy
small = [np.ones(1000) for _ in range(5000)]  # 5000 x 8 KB: below the 1 MiB threshold
report(b"held")
del big
report(b"freed")
"""


def test_large_allocations_are_charged_to_their_library_and_released(tmp_path):
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler to build the tracer")
    tracer = str(tmp_path / "alloc_by_library.so")
    subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", tracer, os.path.join(ROOT, "bench", "alloc_by_library.c"),
                    "-ldl", "-lpthread"], check=True)
    out = subprocess.run([sys.executable, "-c", CHILD], env=dict(os.environ, LD_PRELOAD=tracer),
                         capture_output=True, text=True, check=True, timeout=120)
    rows = {}
    for line in out.stderr.splitlines():
        if line.startswith("ALLOC "):
            _, tag, lib, live, peak = line.split()
            rows[(tag, lib.split(".")[0])] = (int(live), int(peak))
    held, freed = rows[("held", "_multiarray_umath")], rows[("freed", "_multiarray_umath")]
    assert held[0] == 48 * 2 ** 20  # exactly the array: the 8 KB ones are not counted
    assert freed == (0, 48 * 2 ** 20)  # released, the peak remembered
