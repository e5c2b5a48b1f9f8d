"""Inference helpers shared by eval.py, infer.py, export.py and postprogress.py."""
import numpy as np

import mindspore as ms

from src.checkpoint_utils import load_network_checkpoint
from src.maskrcnn_pointrend_r50 import MaskRcnnPointRend

OUTPUT_NAMES = ("boxes", "scores", "labels", "valid", "masks")


def build_detector(cfg, checkpoint_path, batch_size, log=print):
    """Inference network for ``batch_size`` images with weights from ``checkpoint_path``."""
    net = MaskRcnnPointRend(cfg, batch_size)
    net.set_train(False)
    if checkpoint_path:
        load_network_checkpoint(net, checkpoint_path, log=log)
    return net


def outputs_to_numpy(outputs):
    """Network outputs -> {name: numpy array} with the batch as first axis."""
    return {name: (x.asnumpy() if isinstance(x, ms.Tensor) else np.asarray(x)) for name, x in zip(OUTPUT_NAMES, outputs)}


def split_images(outputs, count=None):
    """{name: (B, ...)} -> list of per-image {name: (...)} (the first ``count`` images)."""
    batch = len(outputs["boxes"]) if count is None else count
    return [{name: value[i] for name, value in outputs.items()} for i in range(batch)]
