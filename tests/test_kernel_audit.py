"""Every primitive of the compiled train and inference graphs (both mask heads, the detectron2
preset, mixed precision) is declared for GPU by MindSpore (tools/kernel_audit.py); under mixed
precision only the layers' arithmetic runs in float16; and the audit's rules flag what they should."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import kernel_audit  # noqa: E402

MS = os.path.dirname(__import__("mindspore").__file__)


# The standard-head graphs (model-zoo conventions everywhere) and the detectron2-preset graphs
# (PointRend mask branch; its train graph in mixed precision, O2 float16) hold every primitive of
# the other graphs as well: in the full audit (python tools/kernel_audit.py, all seven graphs) none
# of the 89 primitives occurs only in train/pointrend, infer/pointrend or train/detectron2. Four
# graphs instead of seven keep this test at about two minutes.
CI_GRAPHS = ("train/standard", "infer/standard", "train/amp", "infer/detectron2")


def test_every_primitive_of_both_heads_is_declared_for_gpu():
    rows = kernel_audit.audit(CI_GRAPHS)
    missing = {n: r["origin"] for n, r in rows.items() if "GPU" not in (r["platforms"] or [])}
    assert not missing, "not declared for GPU (primitive: where it comes from):\n" + kernel_audit.report(rows)
    # the graphs were really read: both heads' signature kernels and the backward pass are there
    assert {"TensorScatterElements", "NMSWithMask", "Conv2DBackpropInput", "ApplyMomentum"} <= set(rows)
    assert rows["TensorScatterElements"]["graphs"] == {"infer/detectron2"}
    # RoIAlign's look-ups in chunks (gather_chunk_mib): their backward, with and without amp
    assert {"train/standard", "train/amp"} <= rows["TensorScatterAdd"]["graphs"]
    # tensor_utils.permute's views (TransposeView), in the train graphs and at inference
    assert {"train/standard", "train/amp", "infer/standard"} <= rows["TransposeView"]["graphs"]
    assert len(rows) > 60
    # mixed precision: convolutions and matrix products (and their gradients) in float16; losses,
    # sigmoid, IoU, NMS, top-k, RoIAlign and point sampling (batched matrix products) in float32
    unsafe = kernel_audit.not_low_precision_safe(rows)
    assert not unsafe, f"in float16 under amp_level O2 but not layer arithmetic: {unsafe}"
    low = {n for n, r in rows.items() if r["low_precision"]}
    assert {"Conv2D", "Conv2DBackpropFilter", "MatMul"} <= low
    assert not low & {"BatchNorm", "Sigmoid", "TopK", "IOU", "NMSWithMask", "BatchMatMul", "SoftmaxBackward"}


def test_low_precision_rules():
    def rows(name, *origins):
        return {name: {"low_precision": "low", "low_origins": set(origins)}}
    assert kernel_audit.not_low_precision_safe(rows("Conv2D", "src/maskrcnn/resnet50.py:60")) == {}
    # a reduction is allowed in float16 only where it sums the nearest upsampling's 2 x 2 cells
    assert kernel_audit.not_low_precision_safe(rows("SumExt", "src/maskrcnn/fpn_neck.py:41")) == {}
    assert kernel_audit.not_low_precision_safe(rows("SumExt", "src/maskrcnn/rpn.py:70")) == {
        "SumExt": ["src/maskrcnn/rpn.py:70"]}
    assert kernel_audit.not_low_precision_safe(rows("Sigmoid", "?")) == {"Sigmoid": ["?"]}
    # and the IR's type line is what marks a node
    assert kernel_audit._LOW_PRECISION.search("(<Tensor[Float16], (2, 3)>, <Tensor[Float32], (3,)>)")
    assert kernel_audit._LOW_PRECISION.search("(<Tensor[BFloat16], (2, 3)>)")
    assert not kernel_audit._LOW_PRECISION.search("(<Tensor[Float32], (2, 3)>, <Tensor[Int32], (3,)>)")


def test_rules_flag_what_mindspore_does_not_declare_for_gpu():
    # a primitive used directly whose class says "Deprecated" (ops.UniformReal()) is not declared
    assert kernel_audit.classify("UniformReal", [], False) == (None, None)
    # ZerosLikeExt on its own is declared for Ascend only
    found, _ = kernel_audit.classify("ZerosLikeExt", [], False)
    assert found == ["Ascend"]
    # ... but created by ops.rand / ops.where, whose declarations include GPU, they pass
    rand = [(os.path.join(MS, "ops", "function", "random_func.py"), 1, "    output = rand_op(shape)"),
            (os.path.join(MS, "ops", "function", "random_func.py"), 1, "def rand(*size, dtype=None, seed=None):")]
    assert "GPU" in kernel_audit.classify("UniformReal", rand[::-1], False)[0]
    where = [(os.path.join(MS, "ops", "function", "array_func.py"), 1, "def where(condition, input, other):")]
    found, how = kernel_audit.classify("ZerosLikeExt", where, True)
    assert "GPU" in found and "forward node" in how
    # a gradient kernel is covered by its forward primitive, a Python operator by its documented function
    assert "GPU" in kernel_audit.classify("ReluGrad", [], True)[0]
    assert kernel_audit.classify("Muls", [], False)[1].startswith("ops.mul")
    assert kernel_audit.classify("NoSuchPrimitive", [], False) == (None, None)
