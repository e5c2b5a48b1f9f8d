"""Which primitives the compiled graphs use, and whether MindSpore declares each of them for GPU.

    python tools/kernel_audit.py [--graphs train/pointrend infer/pointrend train/standard infer/standard
                                           train/detectron2 infer/detectron2 train/amp]

This machine has no GPU, so the audit reads what MindSpore says: every graph is compiled here (a
small config; the primitives do not depend on sizes; ``conv_backward: native``, what ``auto`` runs on
GPU) with its IR saved, and every primitive of the backend graph (after MindSpore's
device-independent passes) is looked up in MindSpore's own "Supported Platforms" declarations, in
this order:

1. the primitive's class (or the ``mindspore.ops`` function its docstring refers to);
2. the MindSpore API function that created the node, read from the node's source trace in the IR
   (e.g. ``SumExt`` comes from ``ops.sum``), or for the primitives that Python's operators between a
   tensor and a number become (``x * 0.5`` -> ``Muls``), the documented operator (``ops.mul``): a
   declaration of an API is taken to cover the primitives MindSpore implements it with;
3. for a gradient kernel (``ReluGrad``, ``Conv2DBackpropInput``, ...), the forward primitive it
   differentiates (``GRADIENT_OF``): MindSpore declares platforms per forward operator.

Nodes that MindSpore's compiler inserts itself (no source in their trace) are listed in
``COMPILER_INSERTED`` with the evidence that the GPU backend has them.

The ``train/amp`` graph (``amp_level: O2`` in float16) is also read for precision: every primitive
that receives a float16 / bfloat16 input there must be one of ``LOW_PRECISION_OK`` (the layers'
arithmetic), so that losses, sigmoid/softmax, box coding, IoU, NMS, top-k, RoIAlign and point
sampling provably compute in float32 (``src/training/mixed_precision.py``).

Prints one line per primitive (platforms, how it was found, where it comes from in this project,
"low" if it runs in low precision) and exits with 1 if any primitive is not declared for GPU or
runs in low precision without being in ``LOW_PRECISION_OK``.
"""
import argparse
import glob
import importlib
import inspect
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRAPHS = ("train/pointrend", "infer/pointrend", "train/standard", "infer/standard", "train/detectron2",
          "infer/detectron2", "train/amp")
PRESET = os.path.join(ROOT, "configs", "detectron2_pointrend_r50_fpn.yaml")
# graph variant -> config overrides: the two mask heads, and PointRend with the switches of
# configs/detectron2_pointrend_r50_fpn.yaml (anchors, box coder, aligned adaptive RoIAlign, ...)
VARIANTS = {
    "pointrend": {"mask_head": "pointrend"},
    "standard": {"mask_head": "standard"},
    # the preset file itself, at the small sizes that small_config sets on top of it
    "detectron2": {"config_path": PRESET},
    # the preset's train graph in mixed precision (O2 holds O1's autocast and adds the float16 backbone)
    "amp": {"config_path": PRESET, "amp_level": "O2", "amp_dtype": "float16"},
}

# The primitives that may take float16 / bfloat16 inputs under mixed precision: the layers' own
# arithmetic and its gradients (the symmetric-padding stem pool is MaxPool3DWithArgmax), layout
# changes, and graph bookkeeping ...
LOW_PRECISION_OK = {"Conv2D", "Conv2DBackpropFilter", "Conv2DBackpropInput", "MatMul", "BiasAdd", "BiasAddGrad",
                    "ReLU", "ReluGrad", "Add", "AddN", "MaxPool", "MaxPoolGrad", "MaxPool3DWithArgmax",
                    "ResizeBilinearV2", "ResizeBilinearGrad", "Reshape", "ExpandDims", "Squeeze", "BroadcastTo",
                    "StridedSlice", "StridedSliceGrad", "Cast", "MakeTuple", "UpdateState"}
# ... and reductions only where they are layer arithmetic: the gradient of the nearest 2x upsampling
# (a broadcast) sums 2 x 2 cells. A loss or a mean in low precision fails the audit.
LOW_PRECISION_OK_AT = {"SumExt": {"src/maskrcnn/fpn_neck.py"}}
# Graph bookkeeping nodes, not kernels.
STRUCTURAL = {"Load", "MakeTuple", "TupleGetItem", "UpdateState", "Depend", "Return", "Partial", "Switch",
              "SwitchLayer", "MakeList", "ListGetItem", "stop_gradient", "StopGradient"}
# Python operators between a tensor and a number: the primitive -> the documented operator
OPERATOR_PRIMITIVES = {"Muls": "mul", "Divs": "div", "LessScalar": "less", "RemainderTensorScalar": "remainder"}
# trace frames of generated functions without docs -> the documented operator
OPERATOR_FUNCTIONS = {"muls": "mul", "divs": "div"}
# nodes without source that MindSpore inserts, and why the GPU backend has them
COMPILER_INSERTED = {
    "TensorMove": "inserted before a Parameter is assigned (the dynamic loss scale); MindSpore's GPU plugin "
                  "inserts TensorMove itself (InsertTensorMoveForCommunication)",
}
# gradient kernels -> the forward primitive whose declaration covers them
GRADIENT_OF = {
    "BatchNormGrad": "BatchNorm", "BiasAddGrad": "BiasAdd", "BinaryCrossEntropyWithLogitsBackward": "BCEWithLogitsLoss",
    "Conv2DBackpropFilter": "Conv2D", "Conv2DBackpropInput": "Conv2D", "GatherDGradV2": "GatherD",
    "MaxPoolGrad": "MaxPool", "ReluGrad": "ReLU", "ResizeBilinearGrad": "ResizeBilinearV2",
    "SigmoidGrad": "Sigmoid", "StridedSliceGrad": "StridedSlice", "MaximumGrad": "Maximum",
    "MinimumGrad": "Minimum", "GroupNormGrad": "GroupNorm", "SoftmaxBackward": "Softmax",
}
PRIMITIVE_MODULES = ("mindspore.ops.operations", "mindspore.ops.auto_generate.gen_ops_prim",
                     "mindspore.ops.operations._grad_ops", "mindspore.ops.operations._inner_ops",
                     "mindspore.ops.operations.manually_defined")

# What the compiling subprocess runs: one graph, IR saved to the folder given.
COMPILE = r"""
import os, sys
sys.path.insert(0, {root!r})
from src.utils.runtime import cap_onednn_isa
cap_onednn_isa()
import mindspore as ms
from mindspore import nn
from src.demo.synthetic_batch import small_config, synthetic_batch
from src.maskrcnn_pointrend_r50 import MaskRcnnPointRend
from src.training.mixed_precision import apply_mixed_precision
from src.training.network_define import TrainOneStepCell, WithLossCell, split_decay_groups
ms.set_context(mode=ms.GRAPH_MODE)
ms.set_device("CPU")
# RoIAlign's look-ups in chunks, as at full size (gather_chunk_mib 200 splits the 784 MiB of the
# 768x1280 box head; 16 MiB splits each look-up of these small graphs in two or more)
cfg = small_config(resnet_block=[1, 1, 1, 1], conv_backward="native", gather_chunk_mib=16, **{overrides!r})
net = MaskRcnnPointRend(cfg, cfg.batch_size)
data = synthetic_batch(cfg)
if {kind!r} == "train":
    net.set_train(True)
    opt = nn.Momentum(split_decay_groups(net.trainable_params(), 1e-4, False), learning_rate=0.01, momentum=0.9)
    apply_mixed_precision(net, cfg.amp_level, cfg.amp_dtype)
    cell = TrainOneStepCell(WithLossCell(net, cfg), opt, loss_scale=1024.0, dynamic_scale=True)
    cell.set_train(True)
    names = ("img", "img_metas", "gt_bboxes", "gt_labels", "gt_valids", "gt_masks")
else:
    net.set_train(False)
    cell = net
    names = ("img", "img_metas")
cell.compile(*[ms.Tensor(data[k]) for k in names])
"""

_NODE = re.compile(r"^\s+%\d+\([^)]*\) = (?:PrimFunc_)?([A-Za-z_][A-Za-z0-9_]*)\(")
_TRACE = re.compile(r"# In file (.+?):(\d+)[^/]*/(.*)/$")
_API_DEF = re.compile(r"^\s*def (\w+)\(")
_LOW_PRECISION = re.compile(r"Tensor\[B?Float16\]")


def compile_graph(graph, ir_dir):
    """Compile ``graph`` ("train/pointrend", ...) in a subprocess with its IR saved in ir_dir."""
    kind, head = graph.split("/")
    env = dict(os.environ, MS_DEV_SAVE_GRAPHS="1", MS_DEV_SAVE_GRAPHS_PATH=ir_dir, GLOG_v="3")
    script = COMPILE.format(root=ROOT, kind=kind, overrides=VARIANTS[head])
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"compiling {graph} failed: {out.stderr.strip().splitlines()[-1:]}")


def backend_nodes(ir_dir):
    """[(primitive, trace lines, is gradient, has a float16/bfloat16 input)] of the backend graphs
    after the common passes."""
    files = sorted(glob.glob(os.path.join(ir_dir, "hwopt_common_unify_mindir_after_graph_*.ir")))
    if not files:
        raise RuntimeError(f"no backend IR in {ir_dir}: did MS_DEV_SAVE_GRAPHS take effect?")
    nodes = []
    for path in files:
        current = None
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                match = _NODE.match(line)
                if match:
                    current = [match.group(1), [], False, False]
                    nodes.append(current)
                elif current is not None and line.lstrip().startswith(": ("):  # (input types) -> (outputs)
                    current[3] = bool(_LOW_PRECISION.search(line.split("->")[0]))
                elif current is not None and "# Scope: (Gradients/" in line:
                    current[2] = True
                elif current is not None:
                    trace = _TRACE.search(line)
                    if trace:
                        current[1].append((trace.group(1), int(trace.group(2)), trace.group(3)))
    return [tuple(n) for n in nodes if n[0] not in STRUCTURAL]


def platforms_of(obj):
    """The "Supported Platforms" line of an object's docstring, or None."""
    match = re.search(r"Supported Platforms:\s*\n\s*(.+)", inspect.getdoc(obj) or "")
    return match.group(1).replace("``", "").split() if match else None


def class_declaration(name):
    """(platforms, how) from the primitive class ``name``, or (None, None)."""
    import mindspore.ops as ops
    for module in PRIMITIVE_MODULES:
        cls = getattr(importlib.import_module(module), name, None)
        if cls is None:
            continue
        found = platforms_of(cls)
        if found and found != ["Deprecated"]:
            return found, f"class {name}"
        ref = re.search(r":func:`mindspore\.ops\.(\w+)`", inspect.getdoc(cls) or "")
        if ref and hasattr(ops, ref.group(1)):
            found = platforms_of(getattr(ops, ref.group(1)))
            if found:
                return found, f"ops.{ref.group(1)} (named by class {name})"
    return None, None


def _decorated_def(path, line):
    """The ``def`` match below a decorator at ``path``:``line`` (a trace names the decorator line)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()[line - 1:line + 9]
    except OSError:
        return None
    return next((m for m in map(_API_DEF.match, lines) if m), None)


def api_declaration(trace):
    """(platforms, how) from the innermost MindSpore API function in a node's source trace."""
    import mindspore.ops as ops
    for path, line, code in reversed(trace):
        if "site-packages/mindspore/" not in path.replace(os.sep, "/"):
            continue
        match = _API_DEF.match(code)
        if not match and code.lstrip().startswith("@"):
            match = _decorated_def(path, line)
        if not match:
            continue
        name = OPERATOR_FUNCTIONS.get(match.group(1), match.group(1))
        if hasattr(ops, name):
            found = platforms_of(getattr(ops, name))
            if found and found != ["Deprecated"]:
                return found, f"ops.{name} (in its trace)"
    return None, None


def project_origin(trace):
    """The innermost line of this project in a trace: 'path:line', or '?'."""
    for path, line, _ in reversed(trace):
        norm = path.replace(os.sep, "/")
        if norm.startswith(ROOT.replace(os.sep, "/")) and "/.venv/" not in norm and "site-packages" not in norm:
            return f"{os.path.relpath(path, ROOT)}:{line}"
    return "?"


def classify(name, trace, gradient):
    """(platforms, how) that MindSpore declares for a node ``name`` with its source ``trace``
    (rules 1-3 of the module docstring), or (None, None)."""
    import mindspore.ops as ops
    found, how = class_declaration(name)
    if not found and name in GRADIENT_OF:
        found, how = class_declaration(GRADIENT_OF[name])
        how = how and f"gradient of {GRADIENT_OF[name]}: {how}"
    if not found and name in OPERATOR_PRIMITIVES:
        found = platforms_of(getattr(ops, OPERATOR_PRIMITIVES[name]))
        how = f"ops.{OPERATOR_PRIMITIVES[name]} (a Python operator with a number)"
    if not found and name in COMPILER_INSERTED and not trace:
        found, how = ["GPU"], f"compiler-inserted: {COMPILER_INSERTED[name]}"
    if not (found and "GPU" in found):
        api_found, api_how = api_declaration(trace)
        if api_found:
            found, how = api_found, api_how + (" of the forward node" if gradient else "")
    return found, how


def audit(graphs=GRAPHS, keep_ir=None, parallel=2):
    """{primitive: {"platforms", "how", "origin", "graphs", "low_precision" ("low" if it takes a
    float16/bfloat16 input somewhere), "low_origins" (project lines of those nodes)}} over the
    compiled graphs."""
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        ir_dirs = {graph: os.path.join(keep_ir or tmp, graph.replace("/", "_")) for graph in graphs}
        with ThreadPoolExecutor(parallel) as pool:  # each compile is a subprocess of its own
            list(pool.map(lambda g: compile_graph(g, ir_dirs[g]), graphs))
        for graph in graphs:
            for name, trace, gradient, low in backend_nodes(ir_dirs[graph]):
                row = rows.setdefault(name, {"platforms": None, "how": None, "origin": "?", "graphs": set(),
                                             "low_precision": "", "low_origins": set()})
                row["graphs"].add(graph)
                if low:
                    row["low_precision"] = "low"
                    row["low_origins"].add(project_origin(trace))
                if row["origin"] == "?":
                    row["origin"] = project_origin(trace)
                if row["platforms"] and "GPU" in row["platforms"]:
                    continue
                found, how = classify(name, trace, gradient)
                if found:
                    row["platforms"], row["how"] = found, how
    return rows


def report(rows):
    """Text table, undeclared-for-GPU primitives first."""
    lines = []
    for name in sorted(rows, key=lambda n: ("GPU" in (rows[n]["platforms"] or []), n)):
        row = rows[name]
        platforms = " ".join(row["platforms"]) if row["platforms"] else "NOT DECLARED"
        lines.append(f"{name:38s} {platforms:20s} {row['low_precision']:3s} {row['how'] or '-':48s} "
                     f"{row['origin']}  [{', '.join(sorted(row['graphs']))}]")
    return "\n".join(lines)


def not_low_precision_safe(rows):
    """{primitive: [project lines]} of the nodes that take a low-precision input without being
    allowed to (``LOW_PRECISION_OK``, ``LOW_PRECISION_OK_AT``)."""
    unsafe = {}
    for name, row in rows.items():
        if name in LOW_PRECISION_OK:
            continue
        allowed = LOW_PRECISION_OK_AT.get(name, set())
        origins = sorted(o for o in row["low_origins"] if o.rsplit(":", 1)[0] not in allowed)
        if origins:
            unsafe[name] = origins
    return unsafe


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graphs", nargs="+", default=list(GRAPHS), choices=list(GRAPHS))
    parser.add_argument("--keep-ir", default=None, help="keep the IR files in this folder")
    args = parser.parse_args()
    rows = audit(args.graphs, args.keep_ir)
    print(report(rows))
    missing = [n for n, r in rows.items() if "GPU" not in (r["platforms"] or [])]
    print(f"{len(rows)} primitives, {len(rows) - len(missing)} declared for GPU"
          + (f"; not declared for GPU: {', '.join(sorted(missing))}" if missing else ""))
    low = sorted(n for n, r in rows.items() if r["low_precision"])
    unsafe = not_low_precision_safe(rows)
    if low:
        print(f"in low precision under amp: {', '.join(low)}"
              + (f"; not expected in low precision: {unsafe}" if unsafe else ""))
    sys.exit(1 if missing or unsafe else 0)


if __name__ == "__main__":
    main()
