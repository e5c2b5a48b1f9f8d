"""The detectron2 conventions behind the config switches, each against numpy written from
detectron2's / torchvision's definitions (the end-to-end comparison with detectron2 itself is
test_detectron2_parity.py)."""
import math

import numpy as np
import pytest
import mindspore as ms

from src.dataset.transforms import eval_size, shortest_edge_size
from src.demo.synthetic_batch import small_config
from src.layers.box_utils import box_offset_of, clip_boxes, decode_deltas, encode_deltas
from src.layers.feature_table import flatten_levels
from src.layers.roi_align import MultiLevelRoIAlign
from src.maskrcnn.anchor_generator import grid_anchors
from src.maskrcnn.fpn_neck import FeatPyramidNeck
from src.maskrcnn.resnet50 import ResNetFea


def torchvision_roi_align(feat, box, scale, out, sampling_ratio, aligned):
    """torchvision's roi_align forward for one RoI, transcribed loop by loop (feat (C, H, W))."""
    c, h, w = feat.shape
    offset = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = [v * scale - offset for v in box]
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:
        roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
    bin_w, bin_h = roi_w / out, roi_h / out
    grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / out)
    grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / out)
    count = max(grid_h * grid_w, 1)
    result = np.zeros((c, out, out))
    for ph in range(out):
        for pw in range(out):
            acc = np.zeros(c)
            for iy in range(grid_h):
                y = y1 + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                for ix in range(grid_w):
                    x = x1 + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                    if y < -1.0 or y > h or x < -1.0 or x > w:
                        continue
                    yy, xx = max(y, 0.0), max(x, 0.0)
                    y_low, x_low = int(yy), int(xx)
                    if y_low >= h - 1:
                        y_low = y_high = h - 1
                        yy = float(y_low)
                    else:
                        y_high = y_low + 1
                    if x_low >= w - 1:
                        x_low = x_high = w - 1
                        xx = float(x_low)
                    else:
                        x_high = x_low + 1
                    ly, lx = yy - y_low, xx - x_low
                    acc += ((1 - ly) * (1 - lx) * feat[:, y_low, x_low] + (1 - ly) * lx * feat[:, y_low, x_high]
                            + ly * (1 - lx) * feat[:, y_high, x_low] + ly * lx * feat[:, y_high, x_high])
            result[:, ph, pw] = acc / count
    return result


def detectron2_level(box):
    """detectron2's assign_boxes_to_levels (canonical 224 at level 4, levels 2..5) as an index 0..3."""
    size = math.sqrt((box[2] - box[0]) * (box[3] - box[1]))
    return int(min(max(math.floor(4 + math.log2(size / 224 + 1e-8)), 2), 5)) - 2


@pytest.mark.parametrize("max_samples,gather_chunk_mib", [(4, 0), (2, 0), (4, 0.02)])
def test_aligned_adaptive_roi_align_matches_torchvision_definition(max_samples, gather_chunk_mib):
    rng = np.random.default_rng(0)
    strides = [4, 8, 16, 32]
    img_h, img_w = 128, 192
    shapes = [(img_h // s, img_w // s) for s in strides]
    feats = [rng.standard_normal((1, 3, h, w)).astype(np.float32) for h, w in shapes]
    boxes = []
    for lo, hi in ((3, 30), (30, 70), (70, 140), (140, 190)):  # several levels and sample counts
        for _ in range(6):
            bw, bh = rng.uniform(lo, hi, 2)
            x1, y1 = rng.uniform(-8, img_w - bw / 2), rng.uniform(-8, img_h - bh / 2)
            boxes.append([x1, y1, x1 + bw, y1 + bh])
    # bins of exactly 2 and 3 feature cells at level 2 (ceil, not floor + 1, samples per bin)
    boxes += [[8.0, 12.0, 8.0 + 56.0, 12.0 + 84.0], [20.0, 4.0, 20.0 + 84.0, 4.0 + 56.0]]
    boxes.append([5.0, 6.0, 5.0, 30.0])  # zero width: no samples in detectron2 along x
    boxes = np.array(boxes, np.float32)
    rois = np.concatenate([np.zeros((len(boxes), 1), np.float32), boxes], 1)
    align = MultiLevelRoIAlign(shapes, strides, 1, out_size=7, sample_num=0, finest_scale=56, aligned=True,
                               max_sample_num=max_samples, gather_chunk_mib=gather_chunk_mib)
    got = align(flatten_levels(tuple(ms.Tensor(f) for f in feats)), ms.Tensor(rois)).asnumpy()
    checked = capped = 0
    for k, box in enumerate(boxes[:-1]):
        level = detectron2_level(box)
        side = max(box[2] - box[0], box[3] - box[1]) / strides[level]
        if math.ceil(side / 7) > max_samples:
            capped += 1
            continue
        want = torchvision_roi_align(feats[level][0], box, 1.0 / strides[level], 7, 0, True)
        np.testing.assert_allclose(got[k], want, rtol=1e-4, atol=1e-5, err_msg=f"box {box} level {level}")
        checked += 1
    assert checked >= (15 if max_samples == 4 else 6) and capped >= 1
    np.testing.assert_array_equal(got[-1], 0.0)  # torchvision: no samples, output 0


def test_fixed_sampling_unaligned_roi_align_still_matches_torchvision_definition():
    rng = np.random.default_rng(1)
    shapes = [(32, 48), (16, 24), (8, 12), (4, 6)]
    feats = [rng.standard_normal((1, 2, h, w)).astype(np.float32) for h, w in shapes]
    boxes = np.array([[10, 12, 40, 50], [3, 4, 90, 70], [20, 30, 180, 120]], np.float32)
    rois = np.concatenate([np.zeros((3, 1), np.float32), boxes], 1)
    align = MultiLevelRoIAlign(shapes, [4, 8, 16, 32], 1, out_size=7, sample_num=2, finest_scale=56)
    got = align(flatten_levels(tuple(ms.Tensor(f) for f in feats)), ms.Tensor(rois)).asnumpy()
    for k, box in enumerate(boxes):
        size = math.sqrt((box[2] - box[0] + 1) * (box[3] - box[1] + 1))
        level = int(min(max(math.floor(math.log2(size / 56 + 1e-6)), 0), 3))
        # the model zoo's RoI ends one pixel after x2 (roi_end_mode 1)
        end_box = [box[0], box[1], box[2] + 1, box[3] + 1]
        want = torchvision_roi_align(feats[level][0], end_box, 1.0 / 4 / 2 ** level, 7, 2, False)
        np.testing.assert_allclose(got[k], want, rtol=1e-4, atol=1e-5)


def test_detectron2_anchors_match_default_anchor_generator_definition():
    stride, size = 8, 64
    anchors = grid_anchors((3, 5), stride, [size / stride], [0.5, 1.0, 2.0], "detectron2")
    # DefaultAnchorGenerator.generate_cell_anchors: w = sqrt(size^2 / ratio), h = ratio * w, centred on 0
    cell = []
    for ratio in (0.5, 1.0, 2.0):
        w = math.sqrt(size * size / ratio)
        h = ratio * w
        cell.append([-w / 2, -h / 2, w / 2, h / 2])
    cell = np.array(cell)
    want = []
    for y in range(3):  # shifts (y, x) in row-major order, offset 0
        for x in range(5):
            want.extend(cell + np.array([x * stride, y * stride, x * stride, y * stride]))
    np.testing.assert_allclose(anchors, np.array(want), rtol=1e-6, atol=1e-4)
    modelzoo = grid_anchors((3, 5), stride, [size / stride], [0.5, 1.0, 2.0], "modelzoo")
    assert not np.allclose(modelzoo, anchors, atol=0.5)


def test_detectron2_box_coder_matches_box2boxtransform_definition():
    rng = np.random.default_rng(2)
    boxes = rng.uniform(0, 50, (20, 2))
    boxes = np.concatenate([boxes, boxes + rng.uniform(1, 60, (20, 2))], 1).astype(np.float32)
    targets = (boxes + rng.normal(0, 5, boxes.shape)).astype(np.float32)
    targets[:, 2:] = np.maximum(targets[:, 2:], targets[:, :2] + 1)
    weights = np.array([10.0, 10.0, 5.0, 5.0])
    stds = tuple(1 / weights)
    off = box_offset_of("detectron2")
    # Box2BoxTransform.get_deltas
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    cx, cy = boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h
    tw, th = targets[:, 2] - targets[:, 0], targets[:, 3] - targets[:, 1]
    tx, ty = targets[:, 0] + 0.5 * tw, targets[:, 1] + 0.5 * th
    want = np.stack([10 * (tx - cx) / w, 10 * (ty - cy) / h, 5 * np.log(tw / w), 5 * np.log(th / h)], 1)
    got = encode_deltas(ms.Tensor(boxes), ms.Tensor(targets), (0, 0, 0, 0), stds, off).asnumpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # Box2BoxTransform.apply_deltas, with the dw/dh clamp at log(1000 / 16)
    deltas = rng.normal(0, 2, (20, 4)).astype(np.float32)
    deltas[0, 2] = 40.0
    dx, dy = deltas[:, 0] / 10, deltas[:, 1] / 10
    dw = np.minimum(deltas[:, 2] / 5, math.log(1000 / 16))
    dh = np.minimum(deltas[:, 3] / 5, math.log(1000 / 16))
    pcx, pcy, pw, ph = dx * w + cx, dy * h + cy, np.exp(dw) * w, np.exp(dh) * h
    want = np.stack([pcx - pw / 2, pcy - ph / 2, pcx + pw / 2, pcy + ph / 2], 1)
    got = decode_deltas(ms.Tensor(boxes), ms.Tensor(deltas), (0, 0, 0, 0), stds, off).asnumpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)
    # Boxes.clip: x to [0, W], y to [0, H]
    clipped = clip_boxes(ms.Tensor(np.array([[-5, -3, 300, 90]], np.float32)), ms.Tensor(50.0), ms.Tensor(80.0),
                         off).asnumpy()
    np.testing.assert_allclose(clipped, [[0, 0, 80, 50]])


def test_shortest_edge_resize_matches_detectron2_rounding():
    # ResizeShortestEdge(800, 1333): the shorter side to 800 unless the longer passes 1333; int(x + 0.5)
    assert shortest_edge_size(480, 640, 800, 1333) == (800, 1067)
    assert shortest_edge_size(427, 640, 800, 1333) == (800, 1199)
    assert shortest_edge_size(640, 427, 800, 1333) == (1199, 800)
    assert shortest_edge_size(300, 1000, 800, 1333) == (400, 1333)
    assert shortest_edge_size(500, 500, 800, 1333) == (800, 800)
    cfg = small_config(resize_rule="shortest_edge", min_size_test=96, max_size_test=128, img_height=96,
                       img_width=128)
    assert eval_size(300, 400, cfg) == (96, 128)
    assert eval_size(400, 300, cfg) == (96, 72)  # portrait on a landscape canvas: shrunk to fit


def test_stride_in_1x1_and_symmetric_stem_pool_change_only_where_detectron2_differs():
    net_d2 = ResNetFea([1, 1, 1, 1], [8, 16, 32, 64], [16, 32, 64, 128], "frozen_bn", 0, True, "symmetric")
    assert tuple(net_d2.layer2[0].conv1.stride)[-1] == 2
    assert tuple(net_d2.layer2[0].conv2.stride)[-1] == 1
    net_mz = ResNetFea([1, 1, 1, 1], [8, 16, 32, 64], [16, 32, 64, 128], "frozen_bn", 0)
    assert tuple(net_mz.layer2[0].conv1.stride)[-1] == 1 and tuple(net_mz.layer2[0].conv2.stride)[-1] == 2
    # stem max-pool: torch's max_pool2d(3, 2, padding=1) written out on an 8 x 8 map of ReLU outputs
    # (even sides, as the stem conv makes them; on odd sides "same" padding is symmetric too)
    x = np.random.default_rng(3).uniform(0, 1, (1, 1, 8, 8)).astype(np.float32)
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    want = np.array([[padded[0, 0, 2 * i:2 * i + 3, 2 * j:2 * j + 3].max() for j in range(4)] for i in range(4)])
    got = net_d2.maxpool(ms.Tensor(x)).asnumpy()[0, 0]
    np.testing.assert_allclose(got, want)
    assert not np.allclose(net_mz.maxpool(ms.Tensor(x)).asnumpy()[0, 0], want)


def test_nearest_fpn_upsampling_copies_each_cell_to_a_2x2_block():
    neck = FeatPyramidNeck([2, 2, 2, 2], 2, 5, "nearest")
    x = ms.Tensor(np.arange(12, dtype=np.float32).reshape(1, 1, 3, 4))
    got = neck.upsampled(x, (6, 8)).asnumpy()[0, 0]
    np.testing.assert_array_equal(got, np.repeat(np.repeat(x.asnumpy()[0, 0], 2, 0), 2, 1))


def test_infer_names_labels_with_coco_category_ids_without_a_data_set():
    from infer import class_names_and_ids
    names, ids = class_names_and_ids(small_config(num_classes=81, mindrecord_dir=""))
    # COCO's ids have gaps (12, 26, 29, 30, 45, 66, 68, 69, 71, 83 are unused)
    assert (names[1], ids[1]) == ("person", 1) and (names[12], ids[12]) == ("stop sign", 13)
    assert (names[80], ids[80]) == ("toothbrush", 90) and len(set(ids.values())) == 80
    names, ids = class_names_and_ids(small_config(num_classes=3, mindrecord_dir="", coco_category_ids=[],
                                                  coco_classes=["background", "a", "b"]))
    assert ids == {1: 1, 2: 2} and names == {1: "a", 2: "b"}


@pytest.mark.parametrize("stride_in_1x1,block_type", [(False, "bottleneck"), (True, "bottleneck"), (False, "basic")])
def test_size_divisibility_makes_features_independent_of_the_canvas(stride_in_1x1, block_type):
    # an image whose padded extent is 64 x 96, alone on that canvas and on a larger one: with the
    # padding masks, every feature inside the extent is the same (detectron2 pads only to 32)
    from src.layers.padding_mask import padded_extent_masks
    rng = np.random.default_rng(4)
    image = rng.standard_normal((1, 3, 64, 96)).astype(np.float32)
    backbone = ResNetFea([1, 2, 1, 1], [8, 16, 32, 64], [16, 32, 64, 128], "frozen_bn", 0, stride_in_1x1,
                         "symmetric", block_type)
    neck = FeatPyramidNeck([16, 32, 64, 128], 8, 5, "nearest")
    for cell in (backbone, neck):
        for p in cell.get_parameters():  # random statistics so that the canvas padding is not zero
            if "moving_mean" in p.name or "beta" in p.name:
                p.set_data(ms.Tensor(rng.normal(0, 0.5, p.shape).astype(np.float32)))
            elif "bias" in p.name:
                p.set_data(ms.Tensor(rng.normal(0, 0.5, p.shape).astype(np.float32)))
    metas = ms.Tensor(np.array([[60, 90, 1, 1]], np.float32))  # padded to 64 x 96
    outputs = []
    for canvas in ((64, 96), (128, 160)):
        img = np.zeros((1, 3) + canvas, np.float32)
        img[:, :, :64, :96] = image
        masks = padded_extent_masks(metas, canvas, (2, 4, 8, 16, 32, 64), 32)
        outputs.append([p.asnumpy() for p in neck(backbone(ms.Tensor(img), masks[:-1]), masks[1:])])
        unmasked = [p.asnumpy() for p in neck(backbone(ms.Tensor(img)))]
    for level, (small, large, plain) in enumerate(zip(outputs[0], outputs[1], unmasked)):
        h, w = small.shape[2:]
        np.testing.assert_allclose(large[:, :, :h, :w], small, rtol=1e-4, atol=1e-5, err_msg=f"P{level + 2}")
        assert np.abs(large[:, :, h:, :]).max(initial=0) == 0 and np.abs(large[:, :, :, w:]).max() == 0
    assert not np.allclose(plain[:, :, :h, :w], outputs[0][-1], atol=1e-3)  # without masks they differ
