"""train_on_pred_boxes: the mask branch trains on the box head's boxes for each positive's GT class,
decoded as detectron2's Box2BoxTransform does (numpy below), without gradient; and each positive's
own GT mask and image size for its targets."""
import numpy as np
import mindspore as ms

from src.demo.synthetic_batch import small_config, synthetic_batch
from src.maskrcnn_pointrend_r50 import MaskRcnnPointRend

TRAIN_KEYS = ("img", "img_metas", "gt_bboxes", "gt_labels", "gt_valids", "gt_masks")


def decode_numpy(boxes, deltas, stds):
    """Box2BoxTransform.apply_deltas with weights 1 / stds (no +1, dw/dh clamped at log(1000 / 16))."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    cx, cy = boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h
    d = deltas * np.array(stds)
    dw, dh = np.minimum(d[:, 2], np.log(1000 / 16)), np.minimum(d[:, 3], np.log(1000 / 16))
    px, py, pw, ph = cx + d[:, 0] * w, cy + d[:, 1] * h, w * np.exp(dw), h * np.exp(dh)
    return np.stack([px - pw / 2, py - ph / 2, px + pw / 2, py + ph / 2], 1)


def test_mask_branch_gets_the_decoded_boxes_of_the_gt_class_and_its_mask():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    cfg = small_config(train_on_pred_boxes=True, box_convention="detectron2")
    ms.set_seed(0)
    net = MaskRcnnPointRend(cfg, cfg.batch_size)
    net.set_train(True)
    seen = {}
    sample, head, losses = net.sampler_stage2.construct, net.rcnn_cls.construct, net.mask_branch.losses

    def record(name, fn):
        def wrapped(*args):
            out = fn(*args)
            seen[name] = (args, out)
            return out
        return wrapped

    net.sampler_stage2.construct = record("sample", sample)
    net.rcnn_cls.construct = record("head", head)
    net.mask_branch.losses = record("mask", losses)
    batch = synthetic_batch(cfg, seed=2)
    batch["img_metas"][1, :2] = (cfg.img_height - 20, cfg.img_width - 8)  # images of different sizes
    net(*[ms.Tensor(batch[k]) for k in TRAIN_KEYS])
    rois, labels = (seen["sample"][1][i].asnumpy() for i in (0, 1))
    deltas = seen["head"][1][1].asnumpy()
    fed = seen["mask"][0][1].asnumpy()  # (R, 4) RoIs given to the mask branch
    n = net.num_pos_slots
    b, slots = rois.shape[:2]
    pos_rois = rois[:, :n].reshape(-1, 4)
    pos_labels = labels[:, :n].reshape(-1)
    pos_deltas = deltas.reshape(b, slots, cfg.num_classes, 4)[:, :n].reshape(-1, cfg.num_classes, 4)
    chosen = pos_deltas[np.arange(len(pos_labels)), pos_labels]
    want = decode_numpy(pos_rois, chosen, cfg.rcnn_target_stds)
    positive = pos_labels > 0
    assert positive.sum() >= 4
    np.testing.assert_allclose(fed[positive], want[positive], rtol=1e-4, atol=1e-3)
    assert not np.allclose(fed[positive], pos_rois[positive], atol=1e-2)  # they are not the RoIs themselves
    # each positive's GT mask: its row in the batch's mask table is that image's GT of the sampler
    gt_index = seen["sample"][1][4].asnumpy()[:, :n]
    table, instance, image_hw = (seen["mask"][0][i].asnumpy() for i in (5, 6, 7))
    unpacked = np.unpackbits(table, axis=1)[:, :cfg.img_height * cfg.img_width]
    unpacked = unpacked.reshape(-1, cfg.img_height, cfg.img_width)
    images = np.repeat(np.arange(b), n)
    for k in np.flatnonzero(positive):
        np.testing.assert_array_equal(unpacked[instance[k]], batch["full_masks"][images[k], gt_index.reshape(-1)[k]])
        np.testing.assert_array_equal(image_hw[k], batch["img_metas"][images[k], :2])
