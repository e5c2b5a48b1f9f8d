"""Process-level runtime setup shared by every entry point."""
import ctypes
import os
import sys

from src.utils.errors import UserError


def cap_onednn_isa():
    """Cap oneDNN at AVX2 unless the user chose an ISA.

    On AVX-512 CPUs MindSpore's oneDNN picks a reference convolution kernel that is about two
    orders of magnitude slower; AVX2 kernels are fast. Must run before the first convolution.
    Harmless on GPU runs and on CPUs without AVX-512.
    """
    if "ONEDNN_MAX_CPU_ISA" not in os.environ and "DNNL_MAX_CPU_ISA" not in os.environ:
        os.environ["ONEDNN_MAX_CPU_ISA"] = "AVX2"


def release_free_heap():
    """Hand the C heap's free pages back to the OS (glibc's ``malloc_trim``).

    MindSpore's graph compiler frees most of what it allocates, but glibc keeps those pages
    (0.7-0.8 GiB after compiling the train step, ``mallinfo2``); without this, the step's tensors
    and kernels come on top of them. Returns False where the C library has no ``malloc_trim``.
    """
    try:
        trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    except (OSError, TypeError):  # no C library to open by None (Windows)
        trim = None
    if trim is None:
        return False
    trim(0)
    return True


def set_memory_optimize_level(level):
    """MindSpore's memory optimize level, "O0" or "O1", for the graphs compiled from now on.

    O1 plans where each of a graph's tensors lives when the graph is compiled (SOMAS), instead of
    taking them from the memory pool as the kernels run, whose free blocks end up between live ones.
    MindSpore accepts ``set_memory`` once per process, so a level already set is not set again.
    """
    import mindspore as ms
    if ms.get_context("memory_optimize_level") != int(level[1:]):
        ms.runtime.set_memory(optimize_level=level)


def compile_then_release(cell, *inputs):
    """Compile ``cell`` (an ``nn.Cell`` in GRAPH_MODE) for ``inputs``, then ``release_free_heap``:
    the peak memory of the first call is the compiled graph's, not the compiler's leftovers too.
    Later calls with inputs of the same shapes and types reuse the compiled graph."""
    cell.compile(*inputs)
    release_free_heap()


def setup_context(cfg):
    """GRAPH_MODE on ``cfg.device_target``; data-parallel init when ``cfg.run_distribute``.

    Sets ``cfg.rank_id`` and ``cfg.device_num`` from the collective group.
    """
    if cfg.device_target == "CPU":
        cap_onednn_isa()
    import mindspore as ms
    from mindspore.communication import get_group_size, get_rank, init

    ms.set_context(mode=ms.GRAPH_MODE)
    set_memory_optimize_level(cfg.memory_optimize_level)
    if cfg.run_distribute:
        ms.set_device(cfg.device_target)
        init()
        cfg.rank_id = get_rank()
        cfg.device_num = get_group_size()
        ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                     device_num=cfg.device_num)
    else:
        ms.set_device(cfg.device_target, cfg.device_id)
        cfg.rank_id = 0
        cfg.device_num = 1
    ms.set_seed(cfg.seed)
    return cfg


def run_main(main):
    """Run an entry point; user errors become one ``error:`` line and exit code 2."""
    try:
        main()
    except (UserError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
