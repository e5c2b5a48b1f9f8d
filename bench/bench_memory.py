"""Where the train step's memory goes: peak RSS by stage, what its resident memory is made of, the
libraries holding it, and the tensors alive at its peak.

    python -m bench.bench_memory [--height 768 --width 1280 --batch 2] [--preset default] [--top 25]
                                 [--conv_backward native] [--memory_optimize_level O0]
                                 [--parts stages resident libraries replay]

Stages: the train step with the losses of the RPN only (backbone, FPN, RPN head, anchor targets),
of the RPN and the box head, and of all heads (the compiler prunes what the losses do not use), and
the forward pass of all heads without gradients. Each runs in its own process, so each peak RSS is
its own; "after compile" is the RSS once the graph is compiled here and the compiler's freed heap
handed back (``compile_then_release``, as train.py does with ``compile_in_child`` off), before it
runs.

Resident: bench_network's train step (the project's ``TrainOneStepCell``), compiled in a child
process as train.py does (``compile_in_child``) and called three times: its resident memory by kind
of mapping (``/proc/self/smaps``), with glibc's account of its heap (``mallinfo2``: what is in use
and what is free but still mapped) and MindSpore's report of its memory pool (its log at INFO
level: blocks, peak used, actual peak).

By library: the whole train step (compile, then two calls) with ``alloc_by_library.c`` preloaded
(built with the system C compiler; skipped with a message when there is none): the live bytes of
allocations of 1 MiB or more, by the shared library that made them (through libstdc++ / libc: the
first other library up the stack), after compiling and after the two calls, and each library's peak.

Alive at the peak: the whole train step's kernel graph (MS_DEV_SAVE_GRAPHS) replayed in the order
MindSpore's runtime launched its kernels (its memory tracker), each output freed after its last
consumer (``graph_liveness``): the tensors held at the replay's peak, by stage and source line. The
replay leaves out kernel workspaces and the allocator's overhead, so its peak is below the RSS
growth of the step; MindSpore merges equal primitives and keeps one call's source line, so a line
can stand for a sibling call (the largest shape shows which).
"""
import argparse
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile

from bench.bench_network import (ROOT, PRESETS, case_network, case_settings, checked_case_config, machine,
                                 peak_rss_gb, train_case_step, train_step)
from bench.graph_liveness import alive_at_peak
from bench.resident_memory import heap_info, pool_report, smaps_resident

STAGES = {1: "RPN", 2: "RPN + box head", 3: "all heads"}
PARTS = ("stages", "resident", "libraries", "replay")
# what the libraries that hold most of the step's memory hold, by the start of their file name
LIBRARY_ROLES = {
    "libmindspore_cpu.so": "MindSpore's CPU memory pool: the graph's tensors",
    "libdnnl.so": "oneDNN: each primitive's own scratchpad",
    "_multiarray_umath.": "numpy: the input batch, initial weights",
    "libmindspore_ms_backend.so": "MindSpore: kernels' host buffers (index tables)",
    "_c_expression.": "MindSpore: kernels' host buffers (index tables)",
}


def library_role(lib):
    return next((f": {role}" for start, role in LIBRARY_ROLES.items() if lib.startswith(start)), "")


def rss_gb():
    with open("/proc/self/status", encoding="utf-8") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 2 ** 20


def stage_cell(net, stages):
    """A cell returning the sum of the losses of the first ``stages`` stages (1: RPN, 2: + box head,
    3: + mask branch)."""
    from mindspore import nn

    class StageLosses(nn.Cell):
        def __init__(self):
            super().__init__(auto_prefix=False)
            self.network = net

        def construct(self, *inputs):
            losses = self.network(*inputs)
            total = losses[0] + losses[1]
            if stages >= 2:
                total = total + losses[2] + losses[3]
            if stages >= 3:
                total = total + losses[4] + losses[5]
            return total

    return StageLosses()


def case_args(args):
    """bench_network's case arguments (height, width, batch, small test config, preset, settings)
    of the command line: for ``case_config``, ``case_network`` and ``train_case_step``."""
    return args.height, args.width, args.batch, False, args.preset, case_settings(args)


def build_step(args, stages, backward):
    """(compiled-to-be cell, inputs) of one stage case."""
    cfg, net = case_network(*case_args(args))
    import mindspore as ms
    from mindspore import nn

    from src.dataset.pipeline import TRAIN_COLUMNS
    from src.demo.synthetic_batch import synthetic_batch
    from src.training.network_define import split_decay_groups

    net.set_train(True)
    cell = stage_cell(net, stages)
    if backward:
        opt = nn.Momentum(split_decay_groups(net.trainable_params(), 1e-4, False), learning_rate=0.001, momentum=0.9)
        cell = nn.TrainOneStepCell(cell, opt)
    cell.set_train(True)
    data = synthetic_batch(cfg, seed=0)
    inputs = [ms.Tensor(data[k]) for k in TRAIN_COLUMNS]
    return cell, inputs


def run_stage(args, report=None):
    """Compile one stage case, then call it twice; ``report``: the preloaded tracer's
    ``alloc_report`` (``by_library``), called after compiling and after the calls."""
    cell, inputs = build_step(args, args.stage, not args.forward)
    from src.utils.runtime import compile_then_release  # importable once build_step has set the path
    compile_then_release(cell, *inputs)
    compiled = rss_gb()
    if report:
        report(b"compiled")
    for _ in range(2):
        cell(*inputs).asnumpy()
    if report:
        report(b"stepped")
    print(f"RESULT {compiled:.2f} {peak_rss_gb():.2f}")


def by_library(base, tmp):
    """Print the live bytes by library after compiling and after two calls of the train step."""
    cc = shutil.which(os.environ.get("CC", "cc"))
    if cc is None:
        print("\nby library: skipped, no C compiler (cc) to build bench/alloc_by_library.c")
        return
    tracer = os.path.join(tmp, "alloc_by_library.so")
    built = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", tracer,
                            os.path.join(ROOT, "bench", "alloc_by_library.c"), "-ldl", "-lpthread"],
                           capture_output=True, text=True)
    if built.returncode != 0:
        print(f"\nby library: skipped, building bench/alloc_by_library.c failed\n{built.stderr[-2000:]}")
        return
    out = subprocess.run(base + ["--by-library"], cwd=ROOT, env=dict(os.environ, LD_PRELOAD=tracer),
                         capture_output=True, text=True)
    rows = {}
    for line in out.stderr.splitlines():
        if line.startswith("ALLOC "):
            _, tag, lib, live, peak = line.split()
            rows.setdefault(lib, {})[tag] = (int(live), int(peak))
    if out.returncode != 0 or not rows:
        print(f"\nby library: the traced train step failed\n{out.stderr[-2000:]}")
        return
    print("\nlive allocations of 1 MiB or more by library (GiB): after compiling, after two calls, peak")
    total = [0, 0]
    for lib, tags in sorted(rows.items(), key=lambda kv: -kv[1].get("stepped", (0, 0))[1]):
        compiled, stepped = tags.get("compiled", (0, 0))[0], tags.get("stepped", (0, 0))
        total = [total[0] + compiled, total[1] + stepped[0]]
        print(f"  {compiled / 2 ** 30:6.2f} {stepped[0] / 2 ** 30:6.2f} {stepped[1] / 2 ** 30:6.2f}  "
              f"{lib}{library_role(lib)}")
    print(f"  {total[0] / 2 ** 30:6.2f} {total[1] / 2 ** 30:6.2f}         all", flush=True)


def run_resident(args):
    """The measured side of ``resident``: bench_network's train step, compiled in a child process
    and called three times; prints one RESIDENT line (JSON)."""
    cfg, net = case_network(*case_args(args))
    from src.utils.compile_in_child import compile_in_child
    step, inputs = train_step(net, cfg)
    compile_in_child(step, inputs, train_case_step, case_args(args) + ("O0",))
    compiled = rss_gb()
    for _ in range(3):
        step(*inputs)[0].asnumpy()
    with open("/proc/self/smaps", encoding="utf-8") as f:
        kinds = smaps_resident(f.read())
    print("RESIDENT " + json.dumps({"compiled": compiled, "peak": peak_rss_gb(), "kinds": kinds, "heap": heap_info()}))


def resident(base):
    """Print what the train step's resident memory is made of after three calls: by kind of
    mapping, with glibc's account of its heap and MindSpore's report of its pool."""
    # the pool reports itself at INFO level (its PRE_ACT submodule) when the process ends
    env = dict(os.environ, GLOG_v="2", MS_SUBMODULE_LOG_v="{PRE_ACT:1}")
    out = subprocess.run(base + ["--resident"], cwd=ROOT, env=env, capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESIDENT ")]
    if out.returncode != 0 or not lines:
        print(f"\nresident memory: the train step failed\n{out.stderr[-2000:]}")
        return
    row = json.loads(lines[-1][len("RESIDENT "):])
    kinds, heap, pool = row["kinds"], row["heap"], pool_report(out.stderr)
    gib = 2 ** 30
    print(f"\nresident memory of the train step (bench_network's) after three calls, GiB: RSS after compiling "
          f"{row['compiled']:.2f}, peak RSS {row['peak']:.2f}")
    heap_note = "" if heap is None else (f" (glibc, all arenas: {heap['in_use'] / gib:.2f} in use, "
                                         f"{heap['free'] / gib:.2f} free; {heap['mmapped'] / gib:.2f} in chunks "
                                         f"mapped on their own, counted below)")
    pool_note = "MindSpore's pool: no report in its log" if pool is None else (
        f"MindSpore's pool: {pool['allocated']} MiB of blocks, peak used {pool['peak_used']} MiB, "
        f"actual peak {pool['actual_peak']} MiB")
    print(f"  {kinds['heap'] / gib:6.2f}  glibc's main heap{heap_note}")
    print(f"  {kinds['anonymous'] / gib:6.2f}  anonymous mappings: {pool_note}; glibc's other arenas and "
          f"large chunks (oneDNN's scratchpads, numpy's weights, moments and batch)")
    print(f"  {kinds['files'] / gib:6.2f}  mapped files (libraries)")
    print(f"  {kinds['other'] / gib:6.2f}  other ([stack], [vdso], ...)", flush=True)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=768)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--preset", choices=sorted(PRESETS))
    parser.add_argument("--conv_backward", help="auto | native | taps: the config's conv_backward (default: the "
                                                "config's, auto; the config checks the value)")
    parser.add_argument("--top", type=int, default=25, help="source lines listed")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=PARTS, help="what to measure (default: all)")
    parser.add_argument("--stage", type=int, choices=sorted(STAGES), help=argparse.SUPPRESS)
    parser.add_argument("--forward", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--by-library", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--resident", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--memory_optimize_level", help="O0 | O1: the config's memory_optimize_level (default: "
                                                        "the config's, O0)")
    args = parser.parse_args()
    checked_case_config(parser, *case_args(args))
    return args


def main():
    args = parse_args()
    if args.by_library:  # the traced side of by_library: the whole train step
        report = ctypes.CDLL(None).alloc_report
        report.argtypes = [ctypes.c_char_p]
        args.stage, args.forward = 3, False
        run_stage(args, report)
        return
    if args.resident:
        run_resident(args)
        return
    if args.traced:  # one call of the whole train step, under the caller's IR and tracker settings
        cell, inputs = build_step(args, 3, True)
        cell(*inputs).asnumpy()
        return
    if args.stage:
        run_stage(args)
        return
    config = f"{args.preset} preset" if args.preset else "COCO (81 classes, BN)"
    settings = case_settings(args)
    print(f"machine: {machine()}; train step {args.height}x{args.width}, batch {args.batch}, {config}"
          f"{''.join(f', {key} {value}' for key, value in settings.items())}", flush=True)
    base = [sys.executable, "-m", "bench.bench_memory", "--height", str(args.height), "--width", str(args.width),
            "--batch", str(args.batch)] + (["--preset", args.preset] if args.preset else []) + \
        [arg for key, value in settings.items() for arg in (f"--{key}", value)]
    if "stages" in args.parts:
        by_stage(base)
    if "resident" in args.parts:
        resident(base)
    with tempfile.TemporaryDirectory() as tmp:
        if "libraries" in args.parts:
            by_library(base, tmp)
        if "replay" in args.parts:
            alive_in_replay(base, tmp, args.top)


def by_stage(base):
    """Print the RSS after compiling and the peak RSS of each stage, each in its own process."""
    for stage, forward in ((1, False), (2, False), (3, False), (3, True)):
        out = subprocess.run(base + ["--stage", str(stage)] + (["--forward"] if forward else []), cwd=ROOT,
                             capture_output=True, text=True)
        result = [line.split()[1:] for line in out.stdout.splitlines() if line.startswith("RESULT")]
        name = f"{STAGES[stage]}, {'forward only' if forward else 'train step'}"
        if out.returncode != 0 or not result:
            print(f"{name}: failed\n{out.stderr[-2000:]}", flush=True)
            continue
        compiled, peak = result[-1]
        print(f"{name:32s} after compile {compiled} GB, peak RSS {peak} GB", flush=True)


def alive_in_replay(base, tmp, top):
    """Print what is alive at the peak of the traced train step's replay, by stage and source line."""
    ir_dir, tracker_dir = os.path.join(tmp, "ir"), os.path.join(tmp, "tracker")
    env = dict(os.environ, MS_DEV_SAVE_GRAPHS="1", MS_DEV_SAVE_GRAPHS_PATH=ir_dir, GLOG_v="3",
               MS_ALLOC_CONF=f"memory_tracker:True,memory_tracker_path:{tracker_dir}")
    out = subprocess.run(base + ["--traced"], cwd=ROOT, env=env, capture_output=True, text=True)
    task_csv = os.path.join(tracker_dir, "task.csv")
    if out.returncode != 0 or not os.path.exists(task_csv):
        print(f"tracing the train step failed\n{out.stderr[-2000:]}")
        return
    peak, at, rows = alive_at_peak(ir_dir, task_csv, ROOT)
    print(f"\nalive at the peak of the train step's kernel graph, replayed in the runtime's launch order: "
          f"{peak / 2 ** 30:.2f} GiB (at {at['prim']}, {at['scope'] or 'top level'});\n"
          f"the largest by stage and source line (MiB, tensors, largest shape):")
    for stage, where, size, count, shape in rows[:top]:
        print(f"  {size / 2 ** 20:8.1f} MiB {count:4d}  {stage:28s} {where:42s} {shape}")


if __name__ == "__main__":
    main()
