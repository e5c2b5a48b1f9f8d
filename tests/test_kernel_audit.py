"""Every primitive of the compiled train and inference graphs (both mask heads, the detectron2
preset) is declared for GPU by MindSpore (tools/kernel_audit.py), and the audit's rules flag what
they should."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import kernel_audit  # noqa: E402

MS = os.path.dirname(__import__("mindspore").__file__)


# The standard-head graphs (model-zoo conventions everywhere) and the detectron2-preset graphs
# (PointRend mask branch) hold every primitive of the model-zoo PointRend graphs as well: the mask
# branch's operations do not depend on the conventions, and in the full audit (python
# tools/kernel_audit.py, all six graphs) none of the 86 primitives occurs only in those two graphs.
# Four graphs instead of six keep this test at two minutes.
CI_GRAPHS = ("train/standard", "infer/standard", "train/detectron2", "infer/detectron2")


def test_every_primitive_of_both_heads_is_declared_for_gpu():
    rows = kernel_audit.audit(CI_GRAPHS)
    missing = {n: r["origin"] for n, r in rows.items() if "GPU" not in (r["platforms"] or [])}
    assert not missing, "not declared for GPU (primitive: where it comes from):\n" + kernel_audit.report(rows)
    # the graphs were really read: both heads' signature kernels and the backward pass are there
    assert {"TensorScatterElements", "NMSWithMask", "Conv2DBackpropInput", "ApplyMomentum"} <= set(rows)
    assert rows["TensorScatterElements"]["graphs"] == {"infer/detectron2"}
    assert len(rows) > 60


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
