"""PointRend point sampling against numpy references written from the definitions."""
import numpy as np
import mindspore as ms

from src.layers.point_sample import point_sample, regular_grid_points
from src.pointrend.point_selection import (select_uncertain_points, training_point_counts, training_points,
                                           uncertain_grid_points)


def numpy_point_sample(feat, points):
    """feat (C, H, W), points (P, 2) normalised; grid_sample align_corners=False, zero padding."""
    c, h, w = feat.shape
    out = np.zeros((c, len(points)))
    for p, (u, v) in enumerate(points):
        x, y = u * w - 0.5, v * h - 0.5
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        for yy in (y0, y0 + 1):
            for xx in (x0, x0 + 1):
                if 0 <= yy < h and 0 <= xx < w:
                    out[:, p] += (1 - abs(y - yy)) * (1 - abs(x - xx)) * feat[:, yy, xx]
    return out


def test_point_sample_matches_numpy_inside_and_outside():
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((3, 4, 7, 9)).astype(np.float32)
    points = rng.uniform(-0.4, 1.4, size=(3, 50, 2)).astype(np.float32)
    got = point_sample(ms.Tensor(feats), ms.Tensor(points)).asnumpy()
    assert got.shape == (3, 4, 50)
    for n in range(3):
        np.testing.assert_allclose(got[n], numpy_point_sample(feats[n], points[n]), rtol=1e-4, atol=1e-5)
    # far outside reads exactly zero; a cell centre reads that cell exactly
    far = point_sample(ms.Tensor(feats), ms.Tensor(np.full((3, 1, 2), 2.0, np.float32))).asnumpy()
    assert np.all(far == 0)
    centre = np.array([[[(4 + 0.5) / 9, (2 + 0.5) / 7]]] * 3, np.float32)
    np.testing.assert_allclose(point_sample(ms.Tensor(feats), ms.Tensor(centre)).asnumpy()[:, :, 0],
                               feats[:, :, 2, 4], rtol=1e-5)


def test_select_uncertain_points_is_numpy_topk():
    rng = np.random.default_rng(1)
    cands = rng.uniform(size=(5, 588, 2)).astype(np.float32)
    logits = rng.normal(size=(5, 588)).astype(np.float32)
    got = select_uncertain_points(ms.Tensor(cands), ms.Tensor(logits), 147).asnumpy()
    for r in range(5):
        ref = cands[r][np.argsort(np.abs(logits[r]), kind="stable")[:147]]
        np.testing.assert_array_equal(np.sort(got[r], 0), np.sort(ref, 0))


def test_training_points_counts_and_importance_part():
    num_points, over, importance = 196, 3.0, 0.75
    n_cand, n_unc, n_rand = training_point_counts(num_points, over, importance)
    assert (n_cand, n_unc, n_rand) == (588, 147, 49)
    rng = np.random.default_rng(2)
    coarse = rng.normal(size=(4, 1, 7, 7)).astype(np.float32)
    cands = rng.uniform(size=(4, n_cand, 2)).astype(np.float32)
    extra = rng.uniform(size=(4, n_rand, 2)).astype(np.float32)
    got = training_points(ms.Tensor(coarse), ms.Tensor(cands), ms.Tensor(extra), n_unc).asnumpy()
    assert got.shape == (4, num_points, 2)
    for r in range(4):
        cand_logits = numpy_point_sample(coarse[r], cands[r])[0]
        chosen = cands[r][np.argsort(np.abs(cand_logits), kind="stable")[:n_unc]]
        np.testing.assert_allclose(np.sort(got[r, :n_unc], 0), np.sort(chosen, 0))
        np.testing.assert_array_equal(got[r, n_unc:], extra[r])
        # every kept candidate is at least as uncertain as every dropped one
        kept = numpy_point_sample(coarse[r], got[r, :n_unc])[0]
        assert np.abs(kept).max() <= np.sort(np.abs(cand_logits))[n_unc] + 1e-5


def test_uncertain_grid_points_and_regular_grid():
    grid = regular_grid_points(4)
    assert grid.shape == (16, 2)
    np.testing.assert_allclose(grid[1], [0.375, 0.125])  # row-major, (x, y)
    logits = np.full((1, 4, 6), 5.0, np.float32)
    logits[0, 2, 3] = 0.1
    logits[0, 0, 5] = -0.2
    idx, pts = uncertain_grid_points(ms.Tensor(logits), 2)
    assert sorted(idx.asnumpy()[0].tolist()) == [5, 15]
    got = pts.asnumpy()[0][np.argsort(idx.asnumpy()[0])]
    np.testing.assert_allclose(got, [[5.5 / 6, 0.5 / 4], [3.5 / 6, 2.5 / 4]], rtol=1e-6)
