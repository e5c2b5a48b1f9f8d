"""Process-level runtime setup shared by every entry point."""
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


def setup_context(cfg):
    """GRAPH_MODE on ``cfg.device_target``; data-parallel init when ``cfg.run_distribute``.

    Sets ``cfg.rank_id`` and ``cfg.device_num`` from the collective group.
    """
    if cfg.device_target == "CPU":
        cap_onednn_isa()
    import mindspore as ms
    from mindspore.communication import get_group_size, get_rank, init

    ms.set_context(mode=ms.GRAPH_MODE)
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
