"""paste_masks against a per-pixel bilinear sampler written from the definition."""
import math
import time
import tracemalloc

import numpy as np

from src.evaluation.paste_masks import paste_masks


def reference_paste(grid, box, height, width):
    """Slow, direct: sample the grid at every pixel centre, bilinear, zero outside the grid."""
    mh, mw = grid.shape
    x1, y1, x2, y2 = box
    out = np.zeros((height, width))
    if not (x2 > x1 and y2 > y1):
        return out
    for y in range(height):
        for x in range(width):
            u = (x + 0.5 - x1) / (x2 - x1) * mw - 0.5
            v = (y + 0.5 - y1) / (y2 - y1) * mh - 0.5
            j0, i0 = math.floor(u), math.floor(v)
            fu, fv = u - j0, v - i0
            value = 0.0
            for i, wi in ((i0, 1.0 - fv), (i0 + 1, fv)):
                for j, wj in ((j0, 1.0 - fu), (j0 + 1, fu)):
                    if 0 <= i < mh and 0 <= j < mw:
                        value += wi * wj * grid[i, j]
            out[y, x] = value
    return out


HEIGHT, WIDTH = 37, 53
BOXES = np.array([
    [10.3, 5.7, 30.9, 25.2],     # inside
    [-6.5, -3.2, 12.4, 14.8],    # crosses the left and top border
    [40.2, 20.5, 61.0, 45.3],    # crosses the right and bottom border
    [-20.0, -15.0, 80.0, 60.0],  # larger than the image
    [60.0, 40.0, 75.0, 52.0],    # fully outside
    [20.2, 20.1, 20.6, 20.7],    # smaller than a pixel
    [5.0, 5.0, 5.0, 15.0],       # zero width
    [0.0, 0.0, 53.0, 37.0],      # exactly the image
])


def test_matches_reference_float_and_thresholded():
    rng = np.random.default_rng(0)
    for mh, mw in ((7, 7), (5, 9)):
        grids = rng.random((len(BOXES), mh, mw)).astype(np.float32)
        soft = paste_masks(grids, BOXES, (HEIGHT, WIDTH), threshold=None)
        hard = paste_masks(grids, BOXES, (HEIGHT, WIDTH))
        assert soft.shape == hard.shape == (len(BOXES), HEIGHT, WIDTH)
        assert soft.dtype == np.float32 and hard.dtype == np.uint8
        for d, box in enumerate(BOXES):
            ref = reference_paste(grids[d].astype(np.float64), box, HEIGHT, WIDTH)
            np.testing.assert_allclose(soft[d], ref, atol=2e-6, err_msg=f"box {box}")
            decided = np.abs(ref - 0.5) > 1e-5
            np.testing.assert_array_equal(hard[d][decided], (ref >= 0.5)[decided])
        assert not hard[4].any() and not soft[4].any(), "a box outside the image must give an empty mask"
        assert not soft[6].any(), "a zero-width box must give an empty mask"


def test_constant_grid_fills_the_box_and_fades_within_half_a_cell():
    # 20 px box, 4 cells of 5 px: the grid reads 1 from half a cell (2.5 px) inside the box edge,
    # fades linearly to 0 at half a cell outside it, and is exactly 0 beyond.
    out = paste_masks(np.ones((1, 4, 4), np.float32), np.array([[10.0, 10.0, 30.0, 30.0]]), (40, 40), None)[0]
    assert np.all(out[12:28, 12:28] == 1.0)
    assert out[:8].max() == 0.0 and out[:, :8].max() == 0.0
    assert out[32:].max() == 0.0 and out[:, 32:].max() == 0.0
    np.testing.assert_allclose(out[20, 7:13], [0.0, 0.2, 0.4, 0.6, 0.8, 1.0], atol=1e-6)


def test_hundred_detections_on_a_large_image_stay_within_memory():
    rng = np.random.default_rng(1)
    grids = rng.random((100, 224, 224), dtype=np.float32)
    corner = rng.uniform(-100.0, 1200.0, (100, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(20.0, 600.0, (100, 2))], 1)
    tracemalloc.start()
    start = time.perf_counter()
    out = paste_masks(grids, boxes, (1280, 1280))
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert out.shape == (100, 1280, 1280) and out.dtype == np.uint8
    assert peak < 300e6, f"peak {peak / 1e6:.0f} MB"  # the uint8 output alone is 164 MB
    assert elapsed < 10.0


def test_no_detections():
    out = paste_masks(np.zeros((0, 28, 28), np.float32), np.zeros((0, 4)), (10, 12))
    assert out.shape == (0, 10, 12)
