"""Loading checkpoints: pretrained weights (model-zoo Mask R-CNN or ImageNet ResNet-50), resume."""
import os

import mindspore as ms

from src.utils.errors import UserError

OPTIMIZER_KEYS = ("learning_rate", "global_step", "momentum", "loss_scale", "loss_scale_finite_steps",
                  "loss_scale_overflow")
OPTIMIZER_PREFIXES = ("moments.", "accum.", "stat.")
NETWORK_PREFIXES = ("backbone.", "fpn_ncek.", "rpn_with_loss.", "rcnn_cls.", "rcnn_mask.", "mask_coarse_head.",
                    "mask_point_head.")


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that is missing or does not fit the network (one-line message)."""


def read_checkpoint(path):
    """{name: Parameter} of a checkpoint file, or CheckpointError naming the path."""
    if not path or not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path!r}")
    try:
        return ms.load_checkpoint(path)
    except (ValueError, RuntimeError, OSError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {str(e).splitlines()[0]}") from None


def _is_optimizer_key(name):
    return name in OPTIMIZER_KEYS or name.startswith(OPTIMIZER_PREFIXES)


def imagenet_to_backbone_names(params):
    """Rename an ImageNet ResNet-50 model-zoo checkpoint to our backbone names.

    ``down_sample_layer.0/1`` become ``conv_down_sample``/``bn_down_sample``, everything gets the
    ``backbone.`` prefix, and the classifier (``end_point.*``) is dropped.
    """
    renamed = {}
    for name, value in params.items():
        if name.startswith("end_point."):
            continue
        name = name.replace("down_sample_layer.0", "conv_down_sample").replace("down_sample_layer.1", "bn_down_sample")
        renamed["backbone." + name] = value
    return renamed


def match_checkpoint(net, params):
    """Split checkpoint tensors against the network.

    Returns:
        dict with ``loaded`` {name: Parameter} (name and shape match), ``mismatched`` [(name,
        checkpoint shape, network shape)], ``missing`` [network names not in the checkpoint],
        ``unexpected`` [checkpoint names not in the network].
    """
    own = {p.name: p for p in net.get_parameters()}
    loaded, mismatched, unexpected = {}, [], []
    for name, value in params.items():
        if name not in own:
            unexpected.append(name)
        elif tuple(value.shape) != tuple(own[name].shape):
            mismatched.append((name, tuple(value.shape), tuple(own[name].shape)))
        else:
            loaded[name] = value
    missing = [n for n in own if n not in params]
    return {"loaded": loaded, "mismatched": mismatched, "missing": missing, "unexpected": unexpected}


def load_pretrained(net, path, log=print):
    """Load pretrained weights into the network, ignoring optimizer state.

    A model-zoo Mask R-CNN R50 checkpoint loads all its network tensors key for key; an ImageNet
    ResNet-50 checkpoint loads into the backbone. Prints loaded / missing / unexpected /
    shape-mismatched counts; a checkpoint that matches nothing raises CheckpointError.
    Returns the ``match_checkpoint`` report.
    """
    params = {k: v for k, v in read_checkpoint(path).items() if not _is_optimizer_key(k)}
    if params and not any(k.startswith(NETWORK_PREFIXES) for k in params):
        params = imagenet_to_backbone_names(params)
    report = match_checkpoint(net, params)
    if not report["loaded"]:
        raise CheckpointError(f"checkpoint {path} matches no parameter of the network "
                              f"({len(report['unexpected'])} unknown names, {len(report['mismatched'])} shape mismatches)")
    ms.load_param_into_net(net, report["loaded"], strict_load=True)
    log(f"pretrained {path}: loaded {len(report['loaded'])}, missing {len(report['missing'])}, "
        f"unexpected {len(report['unexpected'])}, shape-mismatched {len(report['mismatched'])}")
    for name, got, want in report["mismatched"][:10]:
        log(f"  shape mismatch {name}: checkpoint {list(got)} vs network {list(want)}")
    return report


def load_resume(train_cell, path, log=print):
    """Restore weights, optimizer state and the global step into the train cell.

    Returns the global step to continue from. Every tensor of the train cell must be in the
    checkpoint with its shape (a different LR table length means a different schedule).
    """
    params = read_checkpoint(path)
    report = match_checkpoint(train_cell, params)
    if report["mismatched"] or report["missing"]:
        details = report["mismatched"][:1] or report["missing"][:1]
        raise CheckpointError(f"cannot resume from {path}: {len(report['missing'])} missing and "
                              f"{len(report['mismatched'])} mismatched tensors (e.g. {details[0]}); "
                              "same config and data set needed")
    ms.load_param_into_net(train_cell, report["loaded"], strict_load=True)
    step = int(params["global_step"].asnumpy().reshape(-1)[0])
    log(f"resumed from {path} at step {step}")
    return step


def load_network_checkpoint(net, path, log=print):
    """Load a trained checkpoint (train-cell or network) for inference: every network tensor must
    be present with its shape; optimizer state is ignored. Raises CheckpointError otherwise."""
    params = {k: v for k, v in read_checkpoint(path).items() if not _is_optimizer_key(k)}
    report = match_checkpoint(net, params)
    if report["missing"] or report["mismatched"]:
        example = report["mismatched"][0] if report["mismatched"] else report["missing"][0]
        raise CheckpointError(f"checkpoint {path} does not fit this network ({len(report['missing'])} missing, "
                              f"{len(report['mismatched'])} shape-mismatched tensors, e.g. {example}); "
                              "check num_classes and mask_head")
    ms.load_param_into_net(net, report["loaded"], strict_load=True)
    log(f"loaded {len(report['loaded'])} tensors from {path}")
    return report
