"""bench/resident_memory.py (bench_memory's "resident" part): smaps totals by kind of mapping, against
a hand-made smaps text and against the kernel's own VmRSS; glibc's heap account as a large and many
small allocations come and go; MindSpore's pool report read from its log line."""
import ctypes

import pytest

from bench.resident_memory import heap_info, pool_report, smaps_resident

SMAPS = """\
55db10f8e000-55db63e1a000 rw-p 00000000 00:00 0                          [heap]
Size:            1359408 kB
Rss:             1102848 kB
7fa089b0b000-7fa0f4000000 rw-p 00000000 00:00 0 
Size:            1741780 kB
Rss:             1225728 kB
7fa140dc1000-7fa143e55000 r-xp 00042000 08:01 123   /venv/lib/mindspore/lib/libdnnl.so.3
Size:              50768 kB
Rss:               16384 kB
7fa143e55000-7fa143e56000 rw-p 00000000 00:00 0
Size:                  4 kB
Rss:                   4 kB
7ffd1e9a4000-7ffd1e9c5000 rw-p 00000000 00:00 0                          [stack]
Size:                132 kB
Rss:                  40 kB
7fa150ed6000-7fa15366b000 r--p 00000000 08:01 124   /venv/lib/mindspore/lib/libmindspore frontend.so
Size:              40532 kB
Rss:               33792 kB
"""


def test_smaps_totals_by_kind_of_mapping():
    kib = 1024
    assert smaps_resident(SMAPS) == {"heap": 1102848 * kib, "anonymous": (1225728 + 4) * kib,
                                     "files": (16384 + 33792) * kib, "other": 40 * kib}


def test_smaps_totals_add_up_to_the_kernels_resident_size():
    with open("/proc/self/smaps", encoding="utf-8") as f:
        kinds = smaps_resident(f.read())
    with open("/proc/self/status", encoding="utf-8") as f:
        vm_rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) * 1024
    assert kinds["heap"] > 0 and kinds["anonymous"] > 0 and kinds["files"] > 0
    assert abs(sum(kinds.values()) - vm_rss) < 0.02 * vm_rss


def test_heap_account_follows_allocations():
    libc = ctypes.CDLL(None)
    if heap_info() is None:
        pytest.skip("the C library has no mallinfo2")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    before = heap_info()
    big = libc.malloc(256 * 2 ** 20)  # above any mmap threshold: a chunk mapped on its own
    small = [libc.malloc(1000) for _ in range(20000)]  # inside the arenas
    held = heap_info()
    assert held["mmapped"] - before["mmapped"] >= 256 * 2 ** 20
    assert held["in_use"] - before["in_use"] >= 20000 * 1000
    for p in small + [big]:
        libc.free(p)
    after = heap_info()
    # relative to the held state: other threads of the process may allocate meanwhile
    assert held["mmapped"] - after["mmapped"] >= 256 * 2 ** 20
    assert held["in_use"] - after["in_use"] >= 15000 * 1000


def test_pool_report_reads_the_last_state_line_of_the_log():
    line = ("[INFO] PRE_ACT(17071,7f83cb09cb80,python):2026-12-06-04:58:22.164.212 [mindspore/ccsrc/runtime/memory/"
            "mem_pool/mem_dynamic_allocator.cc:1211] DumpDynamicMemPoolStateInfo] The dynamic memory pool total "
            "allocated mem:{0}M, min addr :0, max addr: 0, peak used mem:{1}M, actual peak used mem:{2}M, in used "
            "mem:0M, total used by event mem:0M, total idle mem:1024M, total eager free mem:0M.")
    common = ("[INFO] PRE_ACT(1,2,python):... Common mem pool info: Total allocated mem:1024M, peak used mem:786M, "
              "in used mem:0M, total use by event mem:0M, total idle mem:1024M.")
    log = "\n".join([line.format(1024, 700, 800), common, line.format(2048, 786, 873), "[WARNING] other"])
    assert pool_report(log) == {"allocated": 2048, "peak_used": 786, "actual_peak": 873}
    assert pool_report(common + "\n[WARNING] other") is None
