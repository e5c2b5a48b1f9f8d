"""Fine-tuning from a converted detectron2 checkpoint on another data set (another num_classes):
everything but the class-specific layers loads, those are reported, and the network trains."""
import numpy as np
import mindspore as ms
from mindspore import nn

from src.checkpoint_utils import load_pretrained
from src.demo.synthetic_batch import SMALL, synthetic_batch
from src.maskrcnn_pointrend_r50 import MaskRcnnPointRend
from src.training.network_define import TrainOneStepCell, WithLossCell, split_decay_groups
from tools.convert_detectron2 import convert
from tools.detectron2_parity import REFERENCE_NPZ, REFERENCE_PKL, load_reference, reference_config

CLASS_SPECIFIC = {"rcnn_cls.fpn_cls.cls_scores.weight", "rcnn_cls.fpn_cls.cls_scores.bias",
                  "rcnn_cls.fpn_cls.reg_scores.weight", "rcnn_cls.fpn_cls.reg_scores.bias",
                  "mask_coarse_head.prediction.weight", "mask_coarse_head.prediction.bias",
                  "mask_point_head.predictor.weight", "mask_point_head.predictor.bias"}


def test_converted_checkpoint_fine_tunes_with_other_classes(tmp_path):
    ckpt = str(tmp_path / "init.ckpt")
    lines = []
    report = convert(REFERENCE_PKL, ckpt, num_classes=3, log=lines.append)
    assert set(report["reinitialised"]) >= CLASS_SPECIFIC
    assert any("re-initialised: rcnn_cls.fpn_cls.cls_scores.weight" in line for line in lines)

    ref = load_reference(REFERENCE_NPZ)
    small = {k: v for k, v in SMALL.items() if k.startswith(("rpn_", "num_expected", "test_", "max_instance"))}
    overrides = [("num_classes", 3), ("coco_classes", "[background, a, b]"), ("img_height", 128),
                 ("img_width", 192), ("batch_size", 1)] + list(small.items())
    cfg = reference_config(ref, overrides)
    net = MaskRcnnPointRend(cfg, cfg.batch_size)
    loaded = load_pretrained(net, ckpt, log=lambda *_: None)
    missing = {n for n in loaded["missing"] if not n.startswith("rcnn_mask.")}
    assert missing == CLASS_SPECIFIC and not loaded["mismatched"] and not loaded["unexpected"]
    # the point head keeps its fine-feature weights; its coarse-logit inputs start at zero
    first = net.mask_point_head.seq[0].weight.asnumpy()[:, :, 0, 0]
    assert np.abs(first[:, :cfg.fpn_out_channels]).sum() > 0 and np.all(first[:, cfg.fpn_out_channels:] == 0)

    net.set_train(True)
    before = {p.name: p.asnumpy().copy() for p in net.trainable_params()}
    step = TrainOneStepCell(WithLossCell(net, cfg), nn.Momentum(
        split_decay_groups(net.trainable_params(), 1e-4, False), learning_rate=0.01, momentum=0.9))
    step.set_train(True)
    batch = synthetic_batch(cfg, seed=1, num_objects=2)
    names = ("img", "img_metas", "gt_bboxes", "gt_labels", "gt_valids", "gt_masks")
    losses = [float(step(*[ms.Tensor(batch[k]) for k in names])[0].asnumpy()) for _ in range(2)]
    assert all(np.isfinite(losses))
    changed = [p.name for p in net.trainable_params() if not np.array_equal(before[p.name], p.asnumpy())]
    assert "mask_point_head.predictor.weight" in changed and "fpn_ncek.fpn_convs_list.0.weight" in changed
