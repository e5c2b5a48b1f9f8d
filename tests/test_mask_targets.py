"""GT masks and mask targets against references written from the definitions:

- host: the canvas bitmask of the train transform (``canvas_bitmasks``: each canvas pixel takes the
  original pixel under its centre) vs integer arithmetic, through scale, expand offset and flip; the
  packing vs ``np.unpackbits``;
- device: point labels vs detectron2's ``point_sample`` of the full-resolution bitmask (numpy, in
  bench/bench_mask_targets.py), anywhere on the canvas, for masks of several images;
- device: coarse targets vs detectron2's ``BitMasks.crop_and_resize`` (numpy RoIAlign, ibid.) on
  proposal-like RoIs, boxes on the image border, an image smaller than the canvas (RoIAlign clamps
  onto the image's border), with detectron2's adaptive and with a fixed sample count.
"""
import numpy as np
import pytest
import mindspore as ms
from pycocotools import mask as mask_utils

from bench.bench_mask_targets import bilinear, roi_align_cells
from src.dataset.transforms import Geometry, canvas_bitmasks, pack_bitmasks, packed_mask_bytes
from src.maskrcnn.mask_targets import gt_mask_at_points, roi_mask_targets

CANVAS = (40, 56)  # H, W: H * W / 8 is not a multiple of the width, so rows straddle bytes


def shapes(h, w, boxes):
    """(n, h, w) asymmetric masks in the given integer boxes (left bar, top bar, a block, a thin leg),
    so that a flip or an axis swap shows."""
    out = np.zeros((len(boxes), h, w), np.uint8)
    for m, (x1, y1, x2, y2) in zip(out, boxes):
        bw, bh = x2 - x1, y2 - y1
        m[y1:y2, x1:x1 + max(bw // 6, 1)] = 1
        m[y1:y1 + max(bh // 5, 1), x1:x2] = 1
        m[y1 + bh * 2 // 5:y1 + bh * 3 // 4, x1 + bw // 2:x1 + bw * 7 // 8] = 1
        m[y1 + bh * 3 // 4:y2, x1 + bw // 2] = 1
    return out


def source_index(canvas_pixels, size, new_size, offset, flip):
    """Original pixel under each canvas pixel centre by integer arithmetic: the canvas centre c + 0.5
    is original (c + 0.5) * size / new_size - offset (flipped: new_size - c - 0.5); the expand offset
    is in original pixels (integers here). Returns (index, tie): tie where the centre falls exactly on
    a pixel border (either neighbour is right)."""
    c = new_size - 1 - canvas_pixels if flip else canvas_pixels
    num = (2 * c + 1) * size
    den = 2 * new_size
    return num // den - offset, num % den == 0


@pytest.mark.parametrize("scale, offset, flip", [((1.6, 0.75), (0, 0), False), ((0.6, 1.25), (7, 3), True),
                                                 ((2.0, 2.0), (0, 0), True)])
def test_canvas_bitmask_takes_the_pixel_under_each_canvas_pixel_centre(scale, offset, flip):
    h0, w0 = 30, 40
    masks = shapes(h0, w0, [(3, 2, 31, 27), (0, 0, 12, 30), (25, 10, 40, 22)])
    # the expand canvas is (h0 + 2 oy) x (w0 + 2 ox), resized to new_h x new_w on a larger canvas
    eh, ew = h0 + 2 * offset[1], w0 + 2 * offset[0]
    new_h, new_w = int(eh * scale[1]), int(ew * scale[0])
    geometry = Geometry(new_w / ew, new_h / eh, offset[0], offset[1], new_w if flip else None)
    rles = [mask_utils.encode(np.asfortranarray(m)) for m in masks]
    got = canvas_bitmasks(rles, geometry, new_h, new_w, new_h + 5, new_w + 3)
    assert got.shape == (3, new_h + 5, new_w + 3)
    assert not got[:, new_h:].any() and not got[:, :, new_w:].any()
    cols, col_tie = source_index(np.arange(new_w), ew, new_w, offset[0], flip)
    rows, row_tie = source_index(np.arange(new_h), eh, new_h, offset[1], False)
    inside = ((rows >= 0) & (rows < h0))[:, None] & ((cols >= 0) & (cols < w0))[None, :]
    want = np.where(inside, masks[:, np.clip(rows, 0, h0 - 1)][:, :, np.clip(cols, 0, w0 - 1)], 0)
    decided = ~row_tie[:, None] & ~col_tie[None, :]
    np.testing.assert_array_equal(got[:, :new_h, :new_w][:, decided], want[:, decided])
    assert decided.mean() > 0.75 and want.any()


def test_packing_is_numpys_bit_order_and_size():
    rng = np.random.default_rng(0)
    masks = (rng.uniform(size=(4, 7, 9)) > 0.5).astype(np.uint8)
    packed = pack_bitmasks(masks)
    assert packed.shape == (4, packed_mask_bytes(7, 9)) == (4, 8)
    np.testing.assert_array_equal(np.unpackbits(packed, axis=1)[:, :63].reshape(4, 7, 9), masks)
    assert packed_mask_bytes(768, 1280) == 768 * 160


def batch_masks():
    """Two images' GT masks on the canvas, boxes inside and on the image borders: (masks (M, H, W),
    boxes (M, 4) integer, packed table)."""
    h, w = CANVAS
    boxes = [(5, 4, 29, 28), (0, 0, 17, 23), (36, 15, 56, 40), (10, 20, 45, 40)]
    masks = shapes(h, w, boxes)
    return masks, np.array(boxes, np.float32), pack_bitmasks(masks)


def test_point_labels_equal_point_sample_of_the_full_mask():
    masks, boxes, table = batch_masks()
    rng = np.random.default_rng(4)
    h, w = CANVAS
    instance = np.array([3, 0, 2, 1, 2], np.int32)  # RoIs in another order than the masks, one mask twice
    p = 600
    xs = rng.uniform(-1.5, w + 1.5, (len(instance), p))
    ys = rng.uniform(-1.5, h + 1.5, (len(instance), p))
    xs[:, :40], ys[:, 40:80] = np.round(xs[:, :40]), np.round(ys[:, 40:80]) + 0.5  # on pixel borders / centres
    points = np.stack([xs, ys], -1).astype(np.float32)
    got = gt_mask_at_points(ms.Tensor(table), ms.Tensor(instance), CANVAS, ms.Tensor(points)).asnumpy()
    want = np.stack([bilinear(masks[i], points[k, :, 0], points[k, :, 1]) for k, i in enumerate(instance)])
    np.testing.assert_allclose(got, want, atol=2e-5)
    assert 0.05 < (want >= 0.5).mean() < 0.6 and ((want > 0.05) & (want < 0.95)).any()


@pytest.mark.parametrize("side, samples, adaptive", [(7, 8, True), (7, 2, False), (14, 3, False)])
def test_coarse_targets_equal_crop_and_resize(side, samples, adaptive):
    masks, boxes, table = batch_masks()
    rng = np.random.default_rng(5)
    # proposal-like RoIs: shifted and scaled GT boxes, some beyond the image
    rois = np.concatenate([boxes + rng.uniform(-4, 4, boxes.shape), boxes + rng.uniform(-6, 6, boxes.shape)])
    rois = rois.astype(np.float32)
    instance = np.tile(np.arange(len(boxes), dtype=np.int32), 2)
    # detectron2's bitmask is the resized image's size: the second half's image ends before the canvas
    image_hw = np.array([CANVAS] * len(boxes) + [(CANVAS[0] - 2, CANVAS[1] - 3)] * len(boxes), np.float32)
    got = roi_mask_targets(ms.Tensor(table), ms.Tensor(instance), CANVAS, ms.Tensor(image_hw), ms.Tensor(rois),
                           side, samples, adaptive).asnumpy()
    decided_share = []
    for k, i in enumerate(instance):
        ih, iw = image_hw[k].astype(int)
        image_mask = masks[i][:ih, :iw]
        if adaptive:  # the cap (samples) is above every RoI's ceil(cell side): detectron2's exact count
            assert max(rois[k, 2] - rois[k, 0], rois[k, 3] - rois[k, 1]) / side <= samples
            cells = roi_align_cells(image_mask, rois[k], side)
        else:
            cells = roi_align_cells(image_mask, rois[k], side, samples=samples)
        decided = np.abs(cells - 0.5) > 1e-5  # float ties at exactly 0.5 may go either way
        np.testing.assert_array_equal(got[k][decided], (cells >= 0.5)[decided], err_msg=f"RoI {k}")
        decided_share.append(decided.mean())
    assert np.mean(decided_share) > 0.75 and 0.2 < got.mean() < 0.8
