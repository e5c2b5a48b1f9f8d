"""Small synthetic batches for network tests and benchmarks (numpy only; no data pipeline involved)."""
import cv2
import numpy as np

from src.config import config_from_dict
from src.dataset.transforms import pack_bitmasks

SMALL = {
    "device_target": "CPU", "img_height": 128, "img_width": 128, "num_classes": 4, "batch_size": 2,
    "test_batch_size": 2, "max_instance_count": 6,
    "backbone_norm": "bn", "freeze_at": 1,
    "rpn_proposal_nms_pre": 300, "rpn_proposal_max_num": 300,
    "rpn_nms_pre": 200, "rpn_max_num": 200,
    "num_expected_pos_stage2": 16, "num_expected_neg_stage2": 48, "num_expected_total_stage2": 64,
    "test_nms_pre": 200, "test_max_per_img": 10,
}


def small_config(**overrides):
    values = dict(SMALL)
    values.update(overrides)
    return config_from_dict(values)


def synthetic_batch(cfg, seed=0, num_objects=3):
    """A batch of images with bright ellipses / rectangles on noise.

    Returns dict of numpy arrays: img, img_metas, gt_bboxes, gt_labels, gt_valids, gt_masks (packed, as
    the input pipeline makes them), and the unpacked masks ``full_masks`` (B, G, H, W) uint8 for
    reference checks.
    """
    rng = np.random.default_rng(seed)
    b, h, w, g = cfg.batch_size, cfg.img_height, cfg.img_width, cfg.max_instance_count
    img = rng.normal(0, 0.3, size=(b, 3, h, w)).astype(np.float32)
    boxes = np.zeros((b, g, 4), np.float32)
    labels = np.zeros((b, g), np.int32)
    valids = np.zeros((b, g), bool)
    full = np.zeros((b, g, h, w), np.uint8)
    for i in range(b):
        for j in range(num_objects):
            bw, bh = rng.integers(w // 5, w // 2), rng.integers(h // 5, h // 2)
            x1, y1 = rng.integers(0, w - bw), rng.integers(0, h - bh)
            label = int(rng.integers(1, cfg.num_classes))
            m = np.zeros((h, w), np.uint8)
            if label % 2:
                cv2.ellipse(m, (int(x1 + bw / 2), int(y1 + bh / 2)), (int(bw / 2), int(bh / 2)), 0, 0, 360, 1, -1)
            else:
                m[y1:y1 + bh, x1:x1 + bw] = 1
            ys, xs = np.nonzero(m)
            box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            boxes[i, j] = box
            labels[i, j] = label
            valids[i, j] = True
            full[i, j] = m
            img[i, :, m > 0] += np.array([1.5, -1.0, 0.5])[None, :] * (1 if label % 2 else -1) + label * 0.3
    metas = np.tile(np.array([[h, w, 1.0, 1.0]], np.float32), (b, 1))
    return {"img": img, "img_metas": metas, "gt_bboxes": boxes, "gt_labels": labels, "gt_valids": valids,
            "gt_masks": pack_bitmasks(full.reshape(b * g, h, w)).reshape(b, g, -1), "full_masks": full}
