"""Where the train step's memory goes: peak RSS by stage, and the largest tensors of its compiled graph.

    python -m bench.bench_memory [--height 768 --width 1280 --batch 2] [--preset detectron2] [--top 25]

Stages: the train step with the losses of the RPN only (backbone, FPN, RPN head, anchor targets),
of the RPN and the box head, and of all heads (the compiler prunes what the losses do not use), and
the forward pass of all heads without gradients. Each runs in its own process, so each peak RSS is
its own; "after compile" is the RSS once the graph is compiled, before it runs.

Graph tensors: the kernel graph of the whole train step as MindSpore compiles it
(MS_DEV_SAVE_GRAPHS), every node's output bytes summed by the project source line that made it
(the innermost one under src/; views such as Reshape left out), with the largest single output of
each line. It is a sum over the step, not what is alive at one time, but it names the operations
whose outputs are large. MindSpore merges equal primitives and keeps one call's source line, so a
line can stand for a sibling call: the largest output shows which (e.g. RoIAlign's gather of
(K * 49 * 16, C) rows listed under another ``ops.gather`` line).
"""
import argparse
import collections
import glob
import os
import re
import resource
import subprocess
import sys
import tempfile

from bench.bench_network import ROOT, PRESETS, case_config, machine

STAGES = {1: "RPN", 2: "RPN + box head", 3: "all heads"}
_NODE = re.compile(r"^\s+%\d+\([^)]*\) = (?:PrimFunc_)?([A-Za-z_][A-Za-z0-9_]*)\(")
_OUTPUT = re.compile(r"<Tensor\[(\w+)\], \(([\d, ]*)\)>")
_TRACE = re.compile(r"# In file (.+?):(\d+)")
_VIEWS = {"Reshape", "TupleGetItem", "Load", "ExpandDims", "Squeeze", "Depend", "MakeTuple", "UpdateState",
          "Flatten", "Return"}
_BYTES = {"Float32": 4, "Int32": 4, "Float16": 2, "BFloat16": 2, "Bool": 1, "UInt8": 1, "Int8": 1, "Int64": 8,
          "Float64": 8}


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


def build_step(args, stages, backward):
    """(compiled-to-be cell, inputs) of one stage case."""
    sys.path.insert(0, ROOT)
    from src.utils.runtime import cap_onednn_isa
    cap_onednn_isa()
    import mindspore as ms
    from mindspore import nn

    from src.dataset.pipeline import TRAIN_COLUMNS
    from src.demo.synthetic_batch import synthetic_batch
    from src.maskrcnn_pointrend_r50 import MaskRcnnPointRend
    from src.training.network_define import split_decay_groups

    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device("CPU")
    cfg = case_config(args.height, args.width, args.batch, False, args.preset)
    net = MaskRcnnPointRend(cfg, args.batch)
    net.set_train(True)
    cell = stage_cell(net, stages)
    if backward:
        opt = nn.Momentum(split_decay_groups(net.trainable_params(), 1e-4, False), learning_rate=0.001, momentum=0.9)
        cell = nn.TrainOneStepCell(cell, opt)
    cell.set_train(True)
    data = synthetic_batch(cfg, seed=0)
    inputs = [ms.Tensor(data[k]) for k in TRAIN_COLUMNS]
    return cell, inputs


def run_stage(args):
    cell, inputs = build_step(args, args.stage, not args.forward)
    cell.compile(*inputs)
    compiled = rss_gb()
    for _ in range(2):
        cell(*inputs).asnumpy()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    print(f"RESULT {compiled:.2f} {peak:.2f}")


def graph_tensors(ir_dir, root):
    """(total bytes, Counter of bytes by 'file:line', {line: (bytes, text) of its largest output})
    over the compiled kernel graphs in ir_dir."""
    by_line = collections.Counter()
    largest = {}

    def add(where, size, shape):
        by_line[where] += size
        if size > largest.get(where, (0, ""))[0]:
            largest[where] = (size, shape)

    for path in glob.glob(os.path.join(ir_dir, "graph_build_*.ir")):
        prim, size, where, shape = None, 0, None, ""
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                node = _NODE.match(line)
                if node:
                    if prim is not None and prim not in _VIEWS:
                        add(where, size or 0, shape)
                    prim, size, where, shape = node.group(1), None, "(no project line)", ""
                    continue
                if prim is None:
                    continue
                text = line.strip()
                if size is None and text.startswith(": (<") and "->" in text:
                    size = 0
                    for dtype, dims in _OUTPUT.findall(text.split("->", 1)[1]):
                        count = 1
                        for dim in filter(None, (d.strip() for d in dims.split(","))):
                            count *= int(dim)
                        size += count * _BYTES.get(dtype, 4)
                        shape = f"{dtype} ({dims})"
                trace = _TRACE.search(line)
                if trace and trace.group(1).startswith(os.path.join(root, "src") + os.sep):
                    where = f"{os.path.relpath(trace.group(1), root)}:{trace.group(2)}"
        if prim is not None and prim not in _VIEWS:
            add(where, size or 0, shape)
    return sum(by_line.values()), by_line, largest


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=768)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--preset", choices=sorted(PRESETS))
    parser.add_argument("--top", type=int, default=25, help="source lines listed")
    parser.add_argument("--stage", type=int, choices=sorted(STAGES), help=argparse.SUPPRESS)
    parser.add_argument("--forward", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--compile-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.compile_only:
        cell, inputs = build_step(args, 3, True)
        cell.compile(*inputs)
        return
    if args.stage:
        run_stage(args)
        return
    config = f"{args.preset} preset" if args.preset else "COCO (81 classes, BN)"
    print(f"machine: {machine()}; train step {args.height}x{args.width}, batch {args.batch}, {config}", flush=True)
    base = [sys.executable, "-m", "bench.bench_memory", "--height", str(args.height), "--width", str(args.width),
            "--batch", str(args.batch)] + (["--preset", args.preset] if args.preset else [])
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
    with tempfile.TemporaryDirectory() as ir_dir:
        env = dict(os.environ, MS_DEV_SAVE_GRAPHS="1", MS_DEV_SAVE_GRAPHS_PATH=ir_dir, GLOG_v="3")
        out = subprocess.run(base + ["--compile-only"], cwd=ROOT, env=env, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"compiling the train step failed\n{out.stderr[-2000:]}")
            return
        total, by_line, largest = graph_tensors(ir_dir, ROOT)
    print(f"\ncompiled train step: node outputs {total / 2 ** 30:.2f} GiB in all; the largest by source line:")
    for where, size in by_line.most_common(args.top):
        print(f"  {size / 2 ** 20:8.1f} MiB  {where:45s} largest: {largest[where][1]}")


if __name__ == "__main__":
    main()
