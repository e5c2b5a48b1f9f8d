"""What a process's resident memory is made of (Linux): ``/proc/<pid>/smaps`` by kind of mapping,
glibc's own account of its heap (``mallinfo2``), and MindSpore's own report of its memory pool.

Used by ``bench_memory``'s "resident" part. Resident is what peak RSS counts: a page allocated but
never written is not, and a freed page stays resident until it is handed back to the kernel.
"""
import ctypes
import re

_MAPPING = re.compile(r"^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+(?: +(.*))?$")
# MindSpore's pool, logged at INFO level by its PRE_ACT submodule when the process ends
_POOL = re.compile(r"total allocated mem:(\d+)M, .*?peak used mem:(\d+)M, actual peak used mem:(\d+)M")


def smaps_resident(text):
    """Resident bytes by kind of mapping from the text of an ``smaps`` file: "heap" (glibc's main
    heap, ``[heap]``), "anonymous" (no name: MindSpore's pool blocks, glibc's other arenas and its
    mmapped chunks, numpy arrays, oneDNN's scratchpads, thread stacks), "files" (libraries and other
    mapped files) and "other" (``[stack]``, ``[vdso]``, ...)."""
    totals = {"heap": 0, "anonymous": 0, "files": 0, "other": 0}
    kind = None
    for line in text.splitlines():
        mapping = _MAPPING.match(line)
        if mapping:
            name = (mapping.group(1) or "").strip()
            kind = ("heap" if name == "[heap]" else "anonymous" if not name
                    else "other" if name.startswith("[") else "files")
        elif line.startswith("Rss:") and kind is not None:
            totals[kind] += int(line.split()[1]) * 1024
    return totals


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def heap_info():
    """glibc's account of its heap, bytes: "arenas" (obtained from the kernel for its arenas),
    "in_use" (allocated in them), "free" (free in them: resident where a page holds a live
    chunk too, or was not handed back), "mmapped" (large chunks mapped on their own); None
    where the C library has no ``mallinfo2`` (not glibc, or glibc before 2.33)."""
    try:
        call = getattr(ctypes.CDLL(None), "mallinfo2", None)
    except (OSError, TypeError):
        call = None
    if call is None:
        return None
    call.restype = _MallInfo2
    info = call()
    return {"arenas": info.arena, "in_use": info.uordblks, "free": info.fordblks, "mmapped": info.hblkhd}


def pool_report(log_text):
    """MindSpore's memory pool from its log (``GLOG_v=2`` or ``MS_SUBMODULE_LOG_v={PRE_ACT:1}``),
    MiB: "allocated" (its blocks), "peak_used" (the most its tensors held at once) and "actual_peak"
    (its "actual peak used", the peak with what its fragmentation left unusable); the last such
    line of the log, None when there is none."""
    found = _POOL.findall(log_text)
    if not found:
        return None
    allocated, peak_used, actual_peak = (int(v) for v in found[-1])
    return {"allocated": allocated, "peak_used": peak_used, "actual_peak": actual_peak}
