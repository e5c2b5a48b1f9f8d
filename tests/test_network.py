"""The whole network in GRAPH_MODE at a small size: a train step, learning, inference."""
import numpy as np
import pytest
import mindspore as ms

from src.maskrcnn_pointrend_r50 import LOSS_NAMES, MaskRcnnPointRend
from src.training.network_define import TrainOneStepCell, WithLossCell, split_decay_groups
from mindspore import nn
from src.demo.synthetic_batch import small_config, synthetic_batch

TRAIN_KEYS = ("img", "img_metas", "gt_bboxes", "gt_labels", "gt_valids", "gt_masks")


@pytest.fixture(scope="module")
def trained():
    """Network, its train step, the fixed batch and the losses of 30 steps (compiled once)."""
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_seed(0)
    cfg = small_config()
    net = MaskRcnnPointRend(cfg, cfg.batch_size)
    net.set_train(True)
    batch = synthetic_batch(cfg, seed=3)
    inputs = [ms.Tensor(batch[k]) for k in TRAIN_KEYS]
    first_components = [float(x.asnumpy()) for x in net(*inputs)]
    before = {p.name: p.asnumpy().copy() for p in net.get_parameters()}
    optimizer = nn.Momentum(split_decay_groups(net.trainable_params(), 1e-4, False), learning_rate=0.002,
                            momentum=0.9)
    step = TrainOneStepCell(WithLossCell(net, cfg), optimizer)
    step.set_train(True)
    losses = [float(step(*inputs)[0].asnumpy()) for _ in range(30)]
    return {"cfg": cfg, "net": net, "batch": batch, "inputs": inputs, "first": first_components,
            "before": before, "losses": losses}


def test_one_step_gives_six_finite_losses(trained):
    first = trained["first"]
    assert len(first) == len(LOSS_NAMES) == 6
    assert all(np.isfinite(v) and v > 0 for v in first), dict(zip(LOSS_NAMES, first))


def test_trainable_parameters_change_and_frozen_ones_do_not(trained):
    net, before = trained["net"], trained["before"]
    trainable = {p.name for p in net.trainable_params()}
    assert any(n.startswith("mask_coarse_head.") for n in trainable)
    assert any(n.startswith("mask_point_head.") for n in trainable)
    for p in net.get_parameters():
        changed = not np.array_equal(before[p.name], p.asnumpy())
        if p.name in trainable:
            assert changed, f"{p.name} should learn"
        elif "moving_" not in p.name:
            assert not changed, f"{p.name} is frozen but changed"
    # freeze_at=1 froze the stem; the unused standard mask head never trains with PointRend
    assert "backbone.conv1.weight" not in trainable
    assert "backbone.layer1.0.conv1.weight" in trainable
    assert not any(n.startswith("rcnn_mask.") for n in trainable)


def test_loss_falls_on_a_fixed_batch(trained):
    losses = trained["losses"]
    assert all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:3]), losses


def test_inference_shapes_and_detections(trained):
    net, cfg, batch = trained["net"], trained["cfg"], trained["batch"]
    net.set_train(False)
    try:
        boxes, scores, labels, valid, masks = net(ms.Tensor(batch["img"]), ms.Tensor(batch["img_metas"]))
        d = cfg.test_max_per_img
        assert boxes.shape == (2, d, 4) and scores.shape == (2, d) and labels.shape == (2, d)
        assert valid.shape == (2, d) and masks.shape == (2, d, 224, 224)
        valid = valid.asnumpy()
        scores = scores.asnumpy()
        masks = masks.asnumpy()
        assert np.all(scores[valid] > cfg.test_score_thr) and np.all(scores[~valid] == 0)
        assert np.all((masks >= 0) & (masks <= 1))
        lab = labels.asnumpy()[valid]
        assert np.all((lab >= 1) & (lab < cfg.num_classes))
        b = boxes.asnumpy()[valid]
        assert np.all(b[:, 2] >= b[:, 0]) and np.all(b >= 0) and np.all(b <= cfg.img_width)

        # an image without objects scores lower than the training images; outputs stay well formed
        blank = np.zeros_like(batch["img"])
        metas = ms.Tensor(batch["img_metas"])
        out = net(ms.Tensor(blank), metas)
        assert out[1].asnumpy().max() < scores.max()
        assert np.all(out[1].asnumpy()[~out[3].asnumpy()] == 0)

        # no detection passing the threshold (classifier forced to background): zero detections, no error
        bias = net.rcnn_cls.fpn_cls.cls_scores.bias
        saved = bias.asnumpy().copy()
        forced = saved.copy()
        forced[0] += 20.0
        bias.set_data(ms.Tensor(forced))
        try:
            out = net(ms.Tensor(blank), metas)
        finally:
            bias.set_data(ms.Tensor(saved))
        assert out[3].asnumpy().sum() == 0 and np.all(out[1].asnumpy() == 0)
        assert np.all(np.isfinite(out[4].asnumpy()))
    finally:
        net.set_train(True)


def test_standard_mask_head_baseline_trains_and_predicts_28x28():
    # both RoIAligns gather in chunks: 128 RoIs x 49 bins (box head) and 32 x 196 (mask head), 16
    # neighbours x 256 channels each: 98 MiB, in three chunks of at most 40 MiB (gather_chunk_mib)
    cfg = small_config(mask_head="standard", resnet_block=[1, 1, 1, 1], gather_chunk_mib=40)
    net = MaskRcnnPointRend(cfg, cfg.batch_size)
    assert net.roi_align.chunked_gather.points_per_chunk(16, 256) * 3 > 128 * 49 > \
        net.roi_align.chunked_gather.points_per_chunk(16, 256) * 2
    assert net.mask_branch.roi_align.chunked_gather is not None
    batch = synthetic_batch(cfg, seed=4)
    optimizer = nn.Momentum(net.trainable_params(), learning_rate=0.001, momentum=0.9)
    step = TrainOneStepCell(WithLossCell(net, cfg), optimizer)
    step.set_train(True)
    before = net.rcnn_mask.fpn_mask.mask_conv6.weight.asnumpy().copy()
    total, *components = [float(x.asnumpy()) for x in step(*[ms.Tensor(batch[k]) for k in TRAIN_KEYS])]
    assert np.isfinite(total) and all(np.isfinite(components))
    assert components[4] > 0 and components[5] == 0.0  # the 28x28 mask loss; no point loss
    assert not np.array_equal(before, net.rcnn_mask.fpn_mask.mask_conv6.weight.asnumpy())
    net.set_train(False)
    out = net(ms.Tensor(batch["img"]), ms.Tensor(batch["img_metas"]))
    assert out[4].shape == (2, cfg.test_max_per_img, 28, 28)
