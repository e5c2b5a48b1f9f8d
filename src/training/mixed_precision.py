"""Mixed precision of the train step (``amp_level``, ``amp_dtype``).

O0: everything in float32.
O1: MindSpore's operator-level autocast (``mindspore.amp.auto_mixed_precision`` level "auto", the
    counterpart of the torch autocast that detectron2's AMP uses) on the layers: backbone, FPN and
    the heads (``LAYER_CELLS``). There, convolutions and matrix products run in ``amp_dtype``, the
    operators of MindSpore's black list (BatchNorm, GroupNorm, softmax, exp, log) in float32, the
    others in the widest type of their inputs: the float32 bias add or normalisation after each
    layer brings its output back to float32, so O1 speeds up the arithmetic but keeps float32
    activations. Not
    on the whole network: RoIAlign and point sampling are matrix products here too, and they stay
    float32 as detectron2 keeps its RoIAlign and grid_sample. MindSpore's own "O1" rewrites the
    Python source and fails on this network.
O2: O1, and the backbone and the FPN entirely in ``amp_dtype``, activations included; their
    normalisation layers compute in float32 (but for the frozen BatchNorms that training folds into
    their convolutions, ``src/layers/frozen_batch_norm.py``, which compute with them).

At every level the FPN and the heads return float32 (each casts its output), so everything after
them computes as at O0: losses, sigmoid and softmax, box encoding and decoding, IoU, NMS, RoIAlign
and point sampling on the FPN table, the points chosen by uncertainty. Parameters stay float32
(checkpoints are the same at every level); inference and export always run in float32.
"""
import mindspore as ms
from mindspore import amp, nn

AMP_LEVELS = ("O0", "O1", "O2")
AMP_DTYPES = {"float16": ms.float16, "bfloat16": ms.bfloat16}
NORM_CELLS = (nn.BatchNorm2d, nn.GroupNorm)
# the network's cells made of layers only (the heads without their losses or sampling)
LAYER_CELLS = ("backbone", "fpn_ncek", "rpn_with_loss", "rcnn_cls", "rcnn_mask", "mask_coarse_head",
               "mask_point_head")


def _whole_cell_in(cell, dtype):
    """Run ``cell`` and its children in ``dtype``, normalisation layers in float32.

    ``to_float`` casts the inputs of a cell: a norm layer's float32 output goes back to ``dtype`` at
    the next cell (the ReLU cell after each norm of the backbone, the next block's convolutions).
    """
    cell.to_float(dtype)
    for _, child in cell.cells_and_names():
        if isinstance(child, NORM_CELLS):
            child.to_float(ms.float32)


def apply_mixed_precision(net, amp_level, amp_dtype):
    """Set ``net`` (a ``MaskRcnnPointRend``) up to train at ``amp_level`` in ``amp_dtype``
    ("float16" | "bfloat16"), in place."""
    if amp_level not in AMP_LEVELS:
        raise ValueError(f"amp_level: {amp_level!r} is not one of {', '.join(AMP_LEVELS)}")
    if amp_dtype not in AMP_DTYPES:
        raise ValueError(f"amp_dtype: {amp_dtype!r} is not one of {', '.join(AMP_DTYPES)}")
    if amp_level == "O0":
        return
    dtype = AMP_DTYPES[amp_dtype]
    cells = net.name_cells()
    for name in LAYER_CELLS:
        if name in cells:  # one of the two mask heads is absent
            amp.auto_mixed_precision(cells[name], "auto", dtype)
    if amp_level == "O2":
        _whole_cell_in(net.backbone, dtype)
        _whole_cell_in(net.fpn_ncek, dtype)
