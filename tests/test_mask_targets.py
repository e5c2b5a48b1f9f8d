"""Point labels and coarse mask targets against numpy written from detectron2's definitions on the
full-resolution masks, through the whole target path: host crops (``dataset.transforms.mask_crops``,
with the flip of the train transform) -> device sampling (``maskrcnn.mask_targets``).

In the regime where the crop is exact (integer square boxes whose side equals ``gt_mask_size``:
crop cells are the pixels), the labels must equal the definitions to float precision, including
boxes that touch the image border and flipped images. How far crops are from the full mask when
boxes are larger than the crop is measured by ``python -m bench.bench_mask_targets``.
"""
import numpy as np
import pytest
import mindspore as ms
from pycocotools import mask as mask_utils

from bench.bench_mask_targets import bilinear as full_bilinear  # detectron2's point_sample, from its definition
from src.dataset.transforms import Geometry, mask_crops
from src.layers.point_sample import regular_grid_points
from src.maskrcnn.mask_targets import gt_mask_at_points, grid_mask_targets

H, W, S = 48, 64, 24


def scene():
    """Original-image masks (n, H, W) with S x S tight boxes: one inside, one touching the left and
    top border, one the right border; asymmetric shapes so that a flip or an axis swap shows."""
    masks, boxes = [], []
    for x1, y1 in ((14, 10), (0, 0), (W - S, 20)):
        m = np.zeros((H, W), np.uint8)
        m[y1:y1 + S, x1:x1 + 4] = 1                    # left bar, full height
        m[y1:y1 + 5, x1:x1 + S] = 1                    # top bar, full width
        m[y1 + 9:y1 + 17, x1 + 10:x1 + 21] = 1         # a block right of centre
        m[y1 + 20:y1 + 23, x1 + 13] = 1                # a thin leg
        masks.append(m)
        boxes.append([x1, y1, x1 + S, y1 + S])
    return np.stack(masks), np.array(boxes, np.float32)


def canvas(flip):
    """(canvas masks, canvas boxes, crops) as the train transform makes them, with or without flip."""
    masks, boxes = scene()
    rles = [mask_utils.encode(np.asfortranarray(m)) for m in masks]
    geometry = Geometry(1.0, 1.0, flip_width=W if flip else None)
    canvas_boxes = geometry.boxes(boxes)
    canvas_masks = masks[:, :, ::-1] if flip else masks
    return canvas_masks, canvas_boxes, mask_crops(rles, canvas_boxes, geometry, S)


@pytest.mark.parametrize("flip", [False, True])
def test_point_labels_equal_the_full_mask_definition(flip):
    masks, boxes, crops = canvas(flip)
    rng = np.random.default_rng(4)
    n, p = len(boxes), 500
    # points inside each box (where the network draws them), its border rows included
    u, v = rng.uniform(0, 1, (n, p)), rng.uniform(0, 1, (n, p))
    u[:, :20], v[:, 20:40] = 0.0, 1.0
    xs = boxes[:, 0:1] + u * (boxes[:, 2:3] - boxes[:, 0:1])
    ys = boxes[:, 1:2] + v * (boxes[:, 3:4] - boxes[:, 1:2])
    points = np.stack([xs, ys], -1).astype(np.float32)
    got = gt_mask_at_points(ms.Tensor(crops), ms.Tensor(boxes), ms.Tensor(points)).asnumpy()
    expected = np.stack([full_bilinear(masks[k], xs[k], ys[k]) for k in range(n)])
    np.testing.assert_allclose(got, expected, atol=2e-5)
    assert 0.2 < (expected >= 0.5).mean() < 0.8  # both sides of the boundary are exercised


@pytest.mark.parametrize("flip", [False, True])
def test_coarse_targets_equal_the_definition_on_proposal_boxes(flip):
    masks, boxes, crops = canvas(flip)
    side, samples = 7, 2
    # proposal-like RoIs: shifted and scaled GT boxes, clipped to the image
    rng = np.random.default_rng(5)
    rois = boxes + rng.uniform(-6, 6, boxes.shape).astype(np.float32)
    rois[:, [0, 2]] = np.clip(rois[:, [0, 2]], 0, W)
    rois[:, [1, 3]] = np.clip(rois[:, [1, 3]], 0, H)
    got = grid_mask_targets(ms.Tensor(crops), ms.Tensor(boxes), ms.Tensor(rois),
                            ms.Tensor(regular_grid_points(side * samples)), side, samples).asnumpy()
    # definition: the mean of samples x samples bilinear samples of the full mask per cell, >= 0.5
    offsets = (np.arange(side * samples) + 0.5) / (side * samples)
    for k, (x1, y1, x2, y2) in enumerate(rois):
        xs, ys = x1 + offsets * (x2 - x1), y1 + offsets * (y2 - y1)
        values = full_bilinear(masks[k], xs[None, :].repeat(len(ys), 0), ys[:, None].repeat(len(xs), 1))
        cells = values.reshape(side, samples, side, samples).mean(axis=(1, 3))
        decided = np.abs(cells - 0.5) > 1e-4  # float ties at exactly 0.5 may go either way
        np.testing.assert_array_equal(got[k][decided], (cells >= 0.5)[decided].astype(np.float32))
        assert 0 < got[k].sum() < side * side
