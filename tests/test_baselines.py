"""Classic baselines: hand-computed values, invariances, a synthetic implanted change, and the real pairs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hypernet_qgis.core.classic.baselines import (
    BASELINES,
    DEFAULT_THRESHOLD_VALUES,
    DEFAULT_THRESHOLDS,
    chi2_sf,
    cva,
    irmad,
    irmad_details,
    pca_kmeans,
    sam,
)
from hypernet_qgis.core.classic.metrics import change_metrics, reference_from_masks, roc_auc
from hypernet_qgis.core.classic.thresholds import compute_threshold
from hypernet_qgis.core.errors import InputError
from hypernet_qgis.core.io.raster_io import read_mask, read_raster


def synthetic_pair(seed: int = 0, bands: int = 6, size: int = 48):
    """T2 = gain * T1 + offset + noise, with a 12 x 12 square (and a NaN pixel) of implanted change."""
    rng = np.random.default_rng(seed)
    classes = rng.normal(100, 30, size=(4, bands))
    labels = np.add.outer(np.arange(size) // 12, np.arange(size) // 16) % 4
    x1 = classes[labels].transpose(2, 0, 1) + rng.normal(0, 3, (bands, size, size))
    gain = rng.uniform(0.8, 1.2, bands)[:, None, None]
    x2 = gain * x1 + rng.uniform(-10, 10, bands)[:, None, None] + rng.normal(0, 3, (bands, size, size))
    truth = np.zeros((size, size), np.uint8)
    truth[30:42, 6:18] = 1
    foreign = rng.normal(100, 30, bands)
    x2[:, truth == 1] = foreign[:, None] + rng.normal(0, 3, (bands, int(truth.sum())))
    x1, x2 = x1.astype(np.float32), x2.astype(np.float32)
    valid = np.ones((size, size), bool)
    valid[0, 0] = False
    x1[:, 0, 0] = np.nan
    return x1, x2, valid, truth


# ------------------------------------------------------------------------------------------ hand values


def test_cva_hand_computed():
    # one band per date; z-scores of [1, 3] are [-1, 1] and of [10, 30] are [-1, 1] -> no change at all
    x1 = np.array([[[1.0, 3.0]], [[0.0, 2.0]]], np.float32)
    x2 = np.array([[[10.0, 30.0]], [[2.0, 0.0]]], np.float32)
    valid = np.ones((1, 2), bool)
    # band 2: z(x1) = [-1, 1], z(x2) = [1, -1] -> differences [2, -2]; band 1 differences 0 -> |d| = 2
    np.testing.assert_allclose(cva(x1, x2, valid), [[2.0, 2.0]], rtol=1e-6)


def test_sam_hand_computed():
    x1 = np.array([[[1, 1, 1, 0, 0]], [[0, 1, 0, 0, 0]]], np.float32)
    x2 = np.array([[[0, 2, 1, 0, 3]], [[1, 2, 1, 0, 0]]], np.float32)
    valid = np.ones((1, 5), bool)
    np.testing.assert_allclose(sam(x1, x2, valid)[0], [math.pi / 2, 0.0, math.pi / 4, 0.0, math.pi / 2], atol=1e-7)
    # small angles stay accurate (arccos would round 1 - 5e-13 away)
    a = np.array([[[1.0]], [[0.0]]])
    b = np.array([[[1.0]], [[1e-6]]])
    assert sam(a, b, np.ones((1, 1), bool))[0, 0] == pytest.approx(1e-6, rel=1e-5)


def test_chi2_survival_function():
    x = np.array([0.0, 1.0, 3.841458820694124, 10.0])
    np.testing.assert_allclose(chi2_sf(x, 2), np.exp(-x / 2), rtol=1e-12)
    assert chi2_sf(np.array([3.841458820694124]), 1)[0] == pytest.approx(0.05, abs=1e-6)
    # chi2 with 4 dof: sf(x) = e^{-x/2} (1 + x/2)
    np.testing.assert_allclose(chi2_sf(x, 4), np.exp(-x / 2) * (1 + x / 2), rtol=1e-12)
    # float32 in, float64 math; the erfc fit's 1 + 3e-8 at 0 is clipped to a probability
    x32 = np.array([0.1, 1.0, 3.3, 7.7], np.float32)
    np.testing.assert_allclose(chi2_sf(x32, 3), chi2_sf(x32.astype(np.float64), 3), rtol=1e-14)
    assert chi2_sf(np.array([0.0]), 1)[0] == 1.0 == chi2_sf(np.array([0.0]), 3)[0]
    scipy_stats = pytest.importorskip("scipy.stats")
    xs = np.linspace(0, 400, 97)
    for dof in (1, 3, 6, 7, 50, 204):
        np.testing.assert_allclose(chi2_sf(xs, dof), scipy_stats.chi2.sf(xs, dof), rtol=1e-5, atol=1e-12)


# ------------------------------------------------------------------------------------------- invariances


def test_irmad_is_invariant_to_linear_band_mixing():
    """MAD variates do not change when either date's bands are replaced by invertible linear combinations."""
    x1, x2, valid, _ = synthetic_pair(1, bands=4)
    rng = np.random.default_rng(7)
    m = rng.normal(size=(4, 4)) + 3 * np.eye(4)
    mixed = (np.einsum("ij,jrc->irc", m, x2.astype(np.float64)) + 5.0).astype(np.float32)
    a = irmad_details(x1, x2, valid)
    b = irmad_details(x1, mixed, valid)
    np.testing.assert_allclose(a["rho"], b["rho"], atol=1e-4)
    np.testing.assert_allclose(a["chi2"][valid], b["chi2"][valid], rtol=2e-3, atol=2e-3)


def test_irmad_chi2_moments_first_iteration_and_fixed_point():
    rng = np.random.default_rng(2)
    x1 = rng.normal(size=(5, 60, 60)).astype(np.float32)
    x2 = (0.8 * x1 + 0.6 * rng.normal(size=x1.shape)).astype(np.float32)
    valid = np.ones((60, 60), bool)
    # unweighted first pass: each MAD variate has sample variance exactly 2 (1 - rho) -> mean chi2 = p
    first = irmad_details(x1, x2, valid, max_iter=1)
    assert np.mean(first["chi2"]) == pytest.approx(5.0, rel=1e-4)
    assert first["rho"] == sorted(first["rho"]) and all(0.75 < r < 0.85 for r in first["rho"])  # true 0.8
    # iterated: no-change weights favour small differences, correlations rise, and at the fixed point the
    # no-change-weighted mean of chi2 is p (Nielsen 2007)
    final = irmad_details(x1, x2, valid)
    assert final["converged"] and final["iterations"] <= 50
    assert min(final["rho"]) > max(first["rho"])
    w = final["no_change_probability"]
    assert np.average(final["chi2"], weights=w) == pytest.approx(5.0, rel=1e-3)


def test_sam_ignores_illumination_cva_ignores_gain_offset():
    x1, x2, valid, truth = synthetic_pair(3)
    scale = np.linspace(0.5, 2.0, x1.shape[2])[None, None, :].astype(np.float32)  # per-pixel brightness
    np.testing.assert_allclose(sam(x1, x1 * scale, valid)[valid], 0.0, atol=2e-3)
    np.testing.assert_allclose(cva(x1, 3 * x1 - 7, valid)[valid], 0.0, atol=1e-4)


# -------------------------------------------------------------------------------------- implanted change


@pytest.mark.parametrize("name", ["cva", "sam", "irmad", "pca_kmeans"])
def test_each_baseline_finds_the_implanted_change(name):
    x1, x2, valid, truth = synthetic_pair(0)
    intensity = BASELINES[name](x1, x2, valid)
    assert intensity.dtype == np.float32 and intensity.shape == valid.shape
    assert np.isnan(intensity[0, 0]) and np.isfinite(intensity[valid]).all()
    assert roc_auc(intensity, np.where(valid, truth, 255)) > 0.99
    thr = compute_threshold(intensity[valid], DEFAULT_THRESHOLDS[name], DEFAULT_THRESHOLD_VALUES.get(name))
    pred = np.where(valid, intensity > thr, 255).astype(np.uint8)
    assert change_metrics(pred, truth)["kappa"] > 0.9


def test_pca_kmeans_binary_agrees_with_score_and_is_deterministic():
    x1, x2, valid, truth = synthetic_pair(4)
    binary, score = pca_kmeans(x1, x2, valid)
    assert binary[0, 0] == 255 and np.isnan(score[0, 0])
    np.testing.assert_array_equal(binary[valid] == 1, score[valid] > 0)
    b2, s2 = pca_kmeans(x1, x2, valid)
    np.testing.assert_array_equal(binary, b2)
    assert change_metrics(binary, truth)["kappa"] > 0.9


def test_registry():
    assert set(BASELINES) == {"cva", "sam", "irmad", "pca_kmeans"} == set(DEFAULT_THRESHOLDS)


# ------------------------------------------------------------------------------------------ real data


def _scores(intensity, valid, reference, method):
    thr = compute_threshold(intensity[valid], method)
    return change_metrics(np.where(valid, intensity > thr, 255).astype(np.uint8), reference)


def test_bench_salinasA_pair_reproduces_readme(shared_dir):
    """bench/README.md: CVA OA/kappa/F1 0.942/0.786/0.820, SAM 0.954/0.820/0.847 (Otsu, gt 0/1 pixels)."""
    folder = shared_dir / "data" / "bench" / "salinasA_pair"
    x1, v1, _ = read_raster(folder / "t1.tif")
    x2, v2, _ = read_raster(folder / "t2.tif")
    gt = read_raster(folder / "gt.tif")[0][0]
    valid = v1 & v2
    m = _scores(cva(x1, x2, valid), valid, gt, "otsu")
    assert m["kappa"] == pytest.approx(0.786, abs=5e-4) and m["OA"] == pytest.approx(0.942, abs=5e-4)
    assert m["F1"] == pytest.approx(0.820, abs=1e-3)
    m = _scores(sam(x1, x2, valid), valid, gt, "otsu")
    # our exact Otsu gives 0.9535 / 0.8188 / 0.8454: within 0.002 of the README's rounded figures
    assert m["kappa"] == pytest.approx(0.820, abs=2e-3) and m["OA"] == pytest.approx(0.954, abs=1e-3)
    assert m["F1"] == pytest.approx(0.847, abs=2e-3)


def test_taizhou_irmad_kmeans_and_cva(shared_dir):
    """FINDINGS.md: IR-MAD + k-means kappa 0.933 (AUC 0.995), standardised CVA + Otsu 0.892 (AUC 0.990)."""
    tz = shared_dir / "data" / "taizhou"
    x1, v1, info = read_raster(tz / "2000TM")
    x2, v2, _ = read_raster(tz / "2003TM.HDR")
    valid = v1 & v2
    ref = reference_from_masks(read_mask(tz / "change.bmp", info), read_mask(tz / "unchanged.bmp", info))
    intensity = irmad(x1, x2, valid)
    m = _scores(intensity, valid, ref, "kmeans")
    assert m["kappa"] == pytest.approx(0.933, abs=0.01)
    assert roc_auc(intensity, ref) == pytest.approx(0.995, abs=0.003)
    c = cva(x1, x2, valid)
    assert _scores(c, valid, ref, "otsu")["kappa"] == pytest.approx(0.892, abs=0.005)
    assert roc_auc(c, ref) == pytest.approx(0.990, abs=0.003)


def test_sample_salinasA_int16_keeps_the_bench_scores(sample_dir):
    """The shipped int16 copy scores like the float32 bench pair (kappa 0.7860 CVA, 0.8188 SAM, Otsu)."""
    folder = sample_dir / "salinasA_pair"
    x1, v1, _ = read_raster(folder / "t1.tif")
    x2, v2, _ = read_raster(folder / "t2.tif")
    gt = read_raster(folder / "gt.tif")[0][0]
    valid = v1 & v2
    assert _scores(cva(x1, x2, valid), valid, gt, "otsu")["kappa"] == pytest.approx(0.786, abs=5e-4)
    assert _scores(sam(x1, x2, valid), valid, gt, "otsu")["kappa"] == pytest.approx(0.820, abs=2e-3)


def test_pca_kmeans_neighbourhood_features_by_row_chunks():
    from hypernet_qgis.core.classic.baselines import _project_neighbourhoods

    rng = np.random.default_rng(9)
    d = rng.random((23, 17))
    valid = rng.random((23, 17)) > 0.2
    basis = rng.normal(size=(16, 3))
    mean = rng.random(16)
    whole = _project_neighbourhoods(d, valid, 4, mean, basis, chunk_rows=1000)
    np.testing.assert_allclose(_project_neighbourhoods(d, valid, 4, mean, basis, chunk_rows=5), whole)
    # pixel (5, 7): window rows 3..6, cols 5..8 (h = 4: two before, one after)
    k = int(valid.ravel()[: 5 * 17 + 7].sum())
    assert valid[5, 7]
    np.testing.assert_allclose(whole[k], (d[3:7, 5:9].ravel() - mean) @ basis)


# ------------------------------------------------------------------------------------ IR-MAD by strips


def _window_reader(tmp_path, name, x):
    """``x`` (bands, rows, cols) as a windowed pair's scratch file (pixel-interleaved float32)."""
    from hypernet_qgis.core.io.streaming import WindowReader

    path = tmp_path / name
    path.write_bytes(np.ascontiguousarray(np.nan_to_num(x).transpose(1, 2, 0)).astype(np.float32).tobytes())
    return WindowReader(str(path), x.shape)


def test_irmad_by_strips_from_scratch_files_equals_the_whole_image(tmp_path):
    """A windowed pair's IR-MAD (strips of its scratch files) is the in-memory IR-MAD: the fused default is then
    the same on both routes."""
    x1, x2, valid, truth = synthetic_pair(4, bands=5)
    whole = irmad_details(x1, x2, valid)
    r1, r2 = _window_reader(tmp_path, "t1.f32", x1), _window_reader(tmp_path, "t2.f32", x2)
    try:
        for strip_rows in (1, 7, 48):
            strips = irmad_details(r1, r2, valid, strip_rows=strip_rows)
            assert strips["iterations"] == whole["iterations"] and strips["sampled_every"] == 1
            np.testing.assert_allclose(strips["rho"], whole["rho"], atol=1e-6)
            np.testing.assert_allclose(strips["chi2"][valid], whole["chi2"][valid], rtol=1e-4, atol=1e-4)
            assert np.isnan(strips["chi2"][~valid]).all()
    finally:
        r1.close()
        r2.close()


def test_irmad_iterates_on_a_regular_sample_and_maps_every_pixel(tmp_path):
    """Beyond memory.irmad_sample_pixels the iterations use every k-th valid pixel; the final transform then
    gives every valid pixel its chi2 (strip by strip, the same map from strips as whole), close to the full run."""
    x1, x2, valid, truth = synthetic_pair(5, bands=5, size=96)
    full = irmad_details(x1, x2, valid)
    sampled = irmad_details(x1, x2, valid, sample_pixels=math.ceil(valid.sum() / 4))
    assert sampled["sampled_every"] == 4 and full["sampled_every"] == 1
    assert np.isfinite(sampled["chi2"][valid]).all() and np.isnan(sampled["chi2"][~valid]).all()
    np.testing.assert_allclose(sampled["rho"], full["rho"], atol=0.02)
    assert np.corrcoef(sampled["chi2"][valid], full["chi2"][valid])[0, 1] > 0.99
    r1, r2 = _window_reader(tmp_path, "t1.f32", x1), _window_reader(tmp_path, "t2.f32", x2)
    try:
        by_strips = irmad_details(r1, r2, valid, strip_rows=5, sample_pixels=math.ceil(valid.sum() / 4))
    finally:
        r1.close()
        r2.close()
    np.testing.assert_allclose(by_strips["chi2"][valid], sampled["chi2"][valid], rtol=1e-4, atol=1e-4)
    # the implanted square is what the sampled transform finds
    assert np.nanmedian(sampled["chi2"][truth == 1]) > 10 * np.nanmedian(sampled["chi2"][truth == 0])


def test_refusals_word_for_word():
    """The baselines' refusals as the user (InputError) or a caller (ValueError) reads them."""
    rng = np.random.default_rng(3)
    x1 = rng.normal(size=(3, 8, 8)).astype(np.float32)
    x2 = x1 + rng.normal(scale=0.1, size=x1.shape).astype(np.float32)
    valid = np.ones((8, 8), bool)

    def error(kind, call, *args, **kw):
        with pytest.raises(kind) as info:
            call(*args, **kw)
        return str(info.value)

    assert error(ValueError, cva, x1, x2[:2], valid) == (
        "dates must be (bands, rows, cols) of equal shape, got (3, 8, 8) and (2, 8, 8)"
    )
    assert error(ValueError, sam, x1[0], x2[0], valid) == (
        "dates must be (bands, rows, cols) of equal shape, got (8, 8) and (8, 8)"
    )
    assert error(ValueError, cva, x1, x2, np.ones((8, 7), bool)) == "valid mask (8, 7) does not match images (8, 8)"
    assert error(InputError, cva, x1, x2, np.zeros((8, 8), bool)) == (
        "No pixel is valid in both dates; check the nodata values and that the images overlap."
    )
    assert error(ValueError, chi2_sf, np.array([1.0]), 0) == "dof must be >= 1"
    flat = np.ones_like(x1)
    assert error(InputError, irmad, flat, x2, valid) == (
        "IR-MAD needs at least one band that is not constant in both dates."
    )
    assert error(ValueError, pca_kmeans, x1, x2, valid, h=1) == "block size h must be >= 2"
    assert error(InputError, pca_kmeans, x1[:, :3, :5], x2[:, :3, :5], valid[:3, :5], h=4) == (
        "The image (5 x 3) is smaller than one 4 x 4 block; use a larger area."
    )


def _pca_kmeans_by_hand(x1, x2, valid, h=4, variance=0.9):
    """PCA-k-means written out pixel by pixel (Celik 2009, as pca_kmeans documents it), for comparison."""
    d = cva(x1, x2, valid).astype(np.float64)  # the difference image (tested on its own above)
    d[~valid] = 0.0
    rows, cols = d.shape
    blocks, block_ok = [], []
    for i in range(rows // h):
        for j in range(cols // h):
            blocks.append(d[i * h : (i + 1) * h, j * h : (j + 1) * h].ravel())
            block_ok.append(valid[i * h : (i + 1) * h, j * h : (j + 1) * h].all())
    blocks, block_ok = np.array(blocks), np.array(block_ok)
    if block_ok.sum() >= 2:
        blocks = blocks[block_ok]
    mean = blocks.mean(axis=0)
    _, sv, vt = np.linalg.svd(blocks - mean, full_matrices=False)
    share = np.cumsum(sv**2) / np.sum(sv**2)
    s = int(np.argmax(share >= variance - 1e-12)) + 1  # the fewest components that explain `variance`

    def mirror(k, n):  # numpy's "symmetric" padding: the edge pixel is repeated
        return -k - 1 if k < 0 else (2 * n - k - 1 if k >= n else k)

    feats = []
    for r in range(rows):
        for c in range(cols):
            if valid[r, c]:
                win = [
                    d[mirror(r + a, rows), mirror(c + b, cols)]
                    for a in range(-(h // 2), (h - 1) // 2 + 1)
                    for b in range(-(h // 2), (h - 1) // 2 + 1)
                ]
                feats.append((np.array(win) - mean) @ vt[:s].T)
    feats, dv = np.array(feats), d[valid]
    centres = np.stack([feats[dv <= np.median(dv)].mean(axis=0), feats[dv >= np.quantile(dv, 0.95)].mean(axis=0)])
    labels = None
    for _ in range(100):
        new = np.argmin(((feats[:, None] - centres[None]) ** 2).sum(axis=2), axis=1)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        centres = np.stack([feats[labels == k].mean(axis=0) for k in (0, 1)])
    changed = int(dv[labels == 1].mean() >= dv[labels == 0].mean())
    dist = np.sqrt(((feats[:, None] - centres[None]) ** 2).sum(axis=2))
    return dist[:, 1 - changed] - dist[:, changed]


@pytest.mark.parametrize(
    "rows, cols, h, invalid, noise, contrast",
    [
        (13, 14, None, [(0, 0), (5, 9), (12, 13)], 0.3, 2.5),  # the default block size, invalid pixels at the borders
        (8, 8, 4, [(1, 1), (6, 2)], 0.3, 2.5),  # two of the four blocks hold an invalid pixel: PCA from the other two
        (12, 6, 4, [], 0.3, 2.5),  # one block wide
        (9, 7, 2, [(4, 4)], 0.3, 2.5),  # the smallest block
        (10, 11, 3, [(9, 0)], 0.3, 2.5),  # an odd block: one row and column before the pixel, one after
        (16, 16, 4, [(3, 3)], 0.05, 0.3),  # a faint difference: total variance of the blocks under 1
    ],
)
def test_pca_kmeans_equals_the_method_written_out(rows, cols, h, invalid, noise, contrast):
    rng = np.random.default_rng(rows * 100 + cols)
    x1 = rng.normal(size=(3, rows, cols)).astype(np.float32)
    x2 = x1 + rng.normal(scale=noise, size=x1.shape).astype(np.float32)
    x2[:, rows // 3 : rows // 3 + 3, 1:4] += contrast  # a changed patch
    valid = np.ones((rows, cols), bool)
    for r, c in invalid:
        valid[r, c] = False
    binary, score = pca_kmeans(x1, x2, valid) if h is None else pca_kmeans(x1, x2, valid, h=h)
    expected = _pca_kmeans_by_hand(x1, x2, valid, **({} if h is None else {"h": h}))
    np.testing.assert_allclose(score[valid], expected, rtol=1e-6, atol=1e-9)
    assert np.all(np.isnan(score[~valid])) and np.all(binary[~valid] == 255) and binary.dtype == np.uint8
    np.testing.assert_array_equal(binary[valid], (expected > 0).astype(np.uint8))


def test_pca_kmeans_of_two_identical_dates_finds_no_change():
    """No difference at all (no variance to explain, one cluster takes every pixel): nothing is changed and
    every score is 0, so the fixed threshold 0 keeps it so."""
    x = np.random.default_rng(8).normal(size=(3, 9, 10)).astype(np.float32)
    valid = np.ones((9, 10), bool)
    valid[4, 4] = False
    binary, score = pca_kmeans(x, x.copy(), valid)
    assert binary.dtype == np.uint8 and np.all(binary[valid] == 0) and binary[4, 4] == 255
    assert np.all(score[valid] == 0.0) and np.isnan(score[4, 4])


# ------------------------------------------------------------------------------- IR-MAD's parts, exact facts


def test_irmad_weighted_moments_and_chi2_equal_numpy_written_out():
    from hypernet_qgis.core.classic.baselines import _chi2, _chunk_columns, _weighted_moments

    rng = np.random.default_rng(11)
    x = rng.normal(size=(3, 50)).astype(np.float32)
    y = (x + rng.normal(size=(3, 50))).astype(np.float32)
    w = rng.random(50)
    mean, cov = _weighted_moments(x, y, w)
    z = np.concatenate([x, y]).astype(np.float64)
    expected_mean = (z * w).sum(axis=1) / w.sum()
    d = z - expected_mean[:, None]
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-6)
    np.testing.assert_allclose(cov, (d * w) @ d.T / w.sum(), rtol=1e-6, atol=1e-9)
    assert mean.dtype == cov.dtype == np.float64 and cov.shape == (6, 6)
    # chi2 = sum_i M_i^2 / var_i, M = ca^T (x - mean_x) - cb^T (y - mean_y), in the transform's precision
    ca, cb = rng.normal(size=(3, 3)), rng.normal(size=(3, 3))
    var = rng.random(3) + 0.5
    mad = ca.T @ (x - mean[:3, None]) - cb.T @ (y - mean[3:, None])
    chi2 = _chi2(x, y, ca, cb, mean, var)
    assert chi2.dtype == np.float64 and chi2.shape == (50,)
    np.testing.assert_allclose(chi2, (mad**2 / var[:, None]).sum(axis=0), rtol=1e-6)
    f32 = [t.astype(np.float32) for t in (ca, cb, mean, var)]
    assert _chi2(x, y, *f32).dtype == np.float32
    # about 32 MB of float64 over 2p rows, at least 1024 columns
    assert _chunk_columns(1) == 2**21 and _chunk_columns(1000) == 2097 and _chunk_columns(10**6) == 1024
    assert _chunk_columns(0) == 2**21


def test_irmad_row_strips_and_sample():
    from hypernet_qgis.core.classic.baselines import _irmad_sample, _row_strips
    from hypernet_qgis.core.progress import NullFeedback

    assert _row_strips(10, None) == [(0, 10)] and _row_strips(10, 0) == [(0, 10)]
    assert _row_strips(10, 3) == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert (
        _row_strips(10, 10) == [(0, 10)] and _row_strips(10, 25) == [(0, 10)] and _row_strips(2, -4) == [(0, 1), (1, 2)]
    )
    rng = np.random.default_rng(12)
    valid = rng.random((9, 7)) > 0.3
    valid[4] = False  # a row without a valid pixel
    x1 = np.arange(2 * 9 * 7, dtype=np.float64).reshape(2, 9, 7)  # each value names its band and pixel
    x2 = -x1
    for every in (1, 2, 3, 50):
        for strip_rows in (None, 1, 2, 4):
            a, b = _irmad_sample(x1, x2, valid, _row_strips(9, strip_rows), every, NullFeedback())
            # every `every`-th valid pixel in row-major order, counted across the strips, the first one included
            np.testing.assert_array_equal(a, x1[:, valid][:, ::every])
            np.testing.assert_array_equal(b, x2[:, valid][:, ::every])
            assert a.dtype == b.dtype == np.float32


class _CountingFeedback:
    """A Feedback that counts the cancel checks (and cancels at check number ``cancel_at``)."""

    def __init__(self, cancel_at: int = 0):
        self.checks, self.cancel_at = 0, cancel_at

    def set_progress(self, fraction: float) -> None:
        pass

    def info(self, message: str) -> None:
        pass

    def is_cancelled(self) -> bool:
        self.checks += 1
        return self.checks == self.cancel_at


def test_irmad_details_fields_iterations_and_cancel_checks():
    from hypernet_qgis.core.progress import Cancelled

    x1, x2, valid, _ = synthetic_pair(6, bands=4, size=24)
    x1[2] = 7.0  # constant in date 1
    x2[3] = -1.0  # constant in date 2
    n = int(valid.sum())
    feedback = _CountingFeedback()
    d = irmad_details(x1, x2, valid, feedback=feedback)
    assert d["bands_used"] == [1, 2] and len(d["rho"]) == 2 and d["rho"] == sorted(d["rho"])
    assert d["sampled_every"] == 1 and d["converged"] and 2 <= d["iterations"] < 50
    assert isinstance(d["rho"], list) and all(isinstance(r, float) for r in d["rho"])
    assert feedback.checks == 1 + d["iterations"]  # one strip read, one check an iteration
    np.testing.assert_allclose(
        d["no_change_probability"][valid], chi2_sf(d["chi2"][valid].astype(np.float64), 2), rtol=1e-6
    )
    assert np.isnan(d["no_change_probability"][~valid]).all() and np.isnan(d["chi2"][~valid]).all()
    assert d["chi2"].dtype == d["no_change_probability"].dtype == np.float32
    # without the probability map: the same chi2, no map (irmad's fusion does not need it)
    lean = irmad_details(x1, x2, valid, probability=False)
    assert "no_change_probability" not in lean
    np.testing.assert_array_equal(lean["chi2"], d["chi2"])
    # stopped by max_iter: not converged, the count says so
    k = d["iterations"] - 1
    short = irmad_details(x1, x2, valid, max_iter=k)
    assert short["iterations"] == k and short["converged"] is False
    # tol: a change of rho under tol stops at the second iteration (the first with a previous rho)
    loose = irmad_details(x1, x2, valid, tol=1.0)
    assert loose["iterations"] == 2 and loose["converged"]
    # sampled, by strips of 5 rows: the strips are read twice (sample, final map)
    feedback = _CountingFeedback()
    s = irmad_details(x1, x2, valid, strip_rows=5, sample_pixels=n // 3, feedback=feedback)
    assert s["sampled_every"] == math.ceil(n / (n // 3)) == 4
    assert feedback.checks == 5 + s["iterations"] + 5
    with pytest.raises(Cancelled):
        irmad_details(x1, x2, valid, strip_rows=5, sample_pixels=n // 3, feedback=_CountingFeedback(7))
    # the wrapper: the square root of chi2, strips and feedback passed on (24 rows in strips of 5: 5 reads)
    feedback = _CountingFeedback()
    np.testing.assert_allclose(
        irmad(x1, x2, valid, strip_rows=5, feedback=feedback), np.sqrt(d["chi2"]), rtol=1e-5, equal_nan=True
    )
    assert feedback.checks == 5 + d["iterations"]


def test_irmad_sampled_iterates_on_every_kth_valid_pixel_and_maps_with_the_final_transform():
    """The sampled run is, in its iterations, IR-MAD of the sample alone (every k-th valid pixel in row-major
    order): the same correlations, and on the sampled pixels the same chi2 (its map pass is float32)."""
    x1, x2, valid, _ = synthetic_pair(7, bands=3, size=30)
    n = int(valid.sum())
    full = irmad_details(x1, x2, valid, sample_pixels=n)
    assert full["sampled_every"] == 1
    s = irmad_details(x1, x2, valid, sample_pixels=n // 5)
    every = s["sampled_every"]
    assert every == math.ceil(n / (n // 5)) == 6
    a, b = x1[:, valid][:, ::every], x2[:, valid][:, ::every]
    alone = irmad_details(a[:, None, :], b[:, None, :], np.ones((1, a.shape[1]), bool))
    assert s["rho"] == alone["rho"] and s["iterations"] == alone["iterations"]
    np.testing.assert_allclose(s["chi2"][valid][::every], alone["chi2"][0], rtol=2e-4, atol=1e-4)
    assert np.isfinite(s["chi2"][valid]).all() and np.isnan(s["chi2"][~valid]).all()
    assert s["chi2"].dtype == np.float32
    # strips of one row: the same sample, the same transform, the same map
    one = irmad_details(x1, x2, valid, sample_pixels=n // 5, strip_rows=1)
    assert one["rho"] == s["rho"]
    np.testing.assert_allclose(one["chi2"][valid], s["chi2"][valid], rtol=1e-6, atol=1e-6)
    # a strip without a valid pixel is skipped, the strips after it are mapped
    holed = valid.copy()
    holed[3] = False
    h = irmad_details(x1, x2, holed, sample_pixels=n // 5, strip_rows=1)
    assert h["sampled_every"] > 1 and np.isfinite(h["chi2"][holed]).all() and np.isnan(h["chi2"][~holed]).all()
    # the default sample: memory.irmad_sample_pixels(bands) pixels
    from hypernet_qgis.core import memory

    assert irmad_details(x1, x2, valid)["sampled_every"] == math.ceil(n / memory.irmad_sample_pixels(3)) == 1


def test_irmad_ridge_keeps_two_equal_bands_invertible():
    """Two identical bands (a singular covariance): the ridge, relative to the mean variance, lets the
    Cholesky factorisation through; without it there is none."""
    x1, x2, valid, truth = synthetic_pair(8, bands=3)
    x1[2] = x1[1]
    d = irmad_details(x1, x2, valid)
    assert d["bands_used"] == [1, 2, 3] and np.isfinite(d["chi2"][valid]).all()
    assert roc_auc(d["chi2"], np.where(valid, truth, 255)) > 0.99
    with pytest.raises(np.linalg.LinAlgError):
        irmad_details(x1, x2, valid, ridge=0.0)


def test_irmad_moments_and_chi2_over_two_chunks():
    """One band: chunks of 2^21 pixels, so 2^21 + 3 pixels are summed in two chunks (the second of 3 pixels)."""
    from hypernet_qgis.core.classic.baselines import _chi2, _chunk_columns, _weighted_moments

    n = _chunk_columns(1) + 3
    rng = np.random.default_rng(13)
    x = rng.normal(size=(1, n)).astype(np.float32)
    y = (0.5 * x + rng.normal(size=(1, n))).astype(np.float32)
    x[0, -3:] = 40.0  # the second chunk weighs in
    w = rng.random(n)
    mean, cov = _weighted_moments(x, y, w)
    z = np.concatenate([x, y]).astype(np.float64)
    expected_mean = (z @ w) / w.sum()
    d = z - expected_mean[:, None]
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-9)
    np.testing.assert_allclose(cov, (d * w) @ d.T / w.sum(), rtol=1e-9)
    ca, cb, var = np.array([[1.5]]), np.array([[-0.5]]), np.array([2.0])
    chi2 = _chi2(x, y, ca, cb, mean, var)
    mad = 1.5 * (z[0] - mean[0]) + 0.5 * (z[1] - mean[1])
    np.testing.assert_allclose(chi2, mad**2 / 2.0, rtol=1e-9)


def test_irmad_not_square_one_band_left_and_the_default_sample_counts_bands():
    """Strips run over the rows (here 30 rows of 8 columns, all read); one band not constant in both dates is
    enough; the default sample is memory.irmad_sample_pixels(bands): 2900 pixels of 3 bands are all used (it is
    not counted from the rows)."""
    from hypernet_qgis.core import memory

    x1, x2, valid, truth = synthetic_pair(9, bands=3, size=30)
    x1, x2, valid, truth = x1[:, :, :8], x2[:, :, :8], valid[:, :8], truth[:, :8]
    feedback = _CountingFeedback()
    d = irmad_details(x1, x2, valid, feedback=feedback)
    assert feedback.checks == 1 + d["iterations"]
    b = irmad_details(x1[:, :, :], x2, valid, strip_rows=30)
    np.testing.assert_array_equal(b["chi2"], d["chi2"])
    assert np.isfinite(d["chi2"][valid]).all() and d["chi2"].shape == (30, 8)
    flat1, flat2 = x1.copy(), x2.copy()
    flat1[0] = 1.0
    flat2[2] = 2.0
    one = irmad_details(flat1, flat2, valid)
    assert one["bands_used"] == [2] and len(one["rho"]) == 1
    # a tall one-column image: 2900 pixels > 8 M // 2900 but far under 8 M // 3
    rng = np.random.default_rng(14)
    t1 = rng.normal(size=(3, 2900, 1)).astype(np.float32)
    t2 = (t1 + 0.5 * rng.normal(size=t1.shape)).astype(np.float32)
    assert memory.irmad_sample_pixels(2900) < 2900 < memory.irmad_sample_pixels(3)
    assert irmad_details(t1, t2, np.ones((2900, 1), bool))["sampled_every"] == 1


def test_irmad_first_iteration_is_the_ridged_cca_written_out():
    """With weights 1 (max_iter=1) the correlations are the canonical correlations of the standardised dates,
    each covariance block plus ridge * (its mean variance) on the diagonal, smallest first."""
    rng = np.random.default_rng(15)
    x1 = rng.normal(size=(2, 20, 20))
    x2 = (np.einsum("ij,jrc->irc", [[0.9, 0.3], [-0.2, 0.5]], x1) + 0.6 * rng.normal(size=x1.shape)).astype(np.float32)
    x1 = x1.astype(np.float32)
    valid = np.ones((20, 20), bool)
    a = x1.reshape(2, -1).astype(np.float64)
    b = x2.reshape(2, -1).astype(np.float64)
    a = (a - a.mean(axis=1, keepdims=True)) / a.std(axis=1, keepdims=True)
    b = (b - b.mean(axis=1, keepdims=True)) / b.std(axis=1, keepdims=True)
    n = a.shape[1]
    sxx, syy, sxy = a @ a.T / n, b @ b.T / n, a @ b.T / n

    def inv_sqrt(m):
        e, v = np.linalg.eigh(m)
        return v @ np.diag(e**-0.5) @ v.T

    for ridge in (0.0, 0.5, 3.0):
        kx = sxx + ridge * np.trace(sxx) / 2 * np.eye(2)
        ky = syy + ridge * np.trace(syy) / 2 * np.eye(2)
        expected = np.sort(np.linalg.svd(inv_sqrt(kx) @ sxy @ inv_sqrt(ky), compute_uv=False))
        got = irmad_details(x1, x2, valid, ridge=ridge, max_iter=1)["rho"]
        np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_irmad_of_identical_dates_clips_the_correlations_at_1():
    for seed in range(6):
        x = np.random.default_rng(seed).normal(size=(4, 20, 20)).astype(np.float32)
        d = irmad_details(x, x.copy(), np.ones((20, 20), bool), ridge=0.0, max_iter=1)
        assert all(0.999999 < r <= 1.0 for r in d["rho"])


@pytest.mark.parametrize("source", ["arrays", "window readers"])
def test_irmad_map_pass_folds_the_centring_and_band_selection_into_the_transform(source, tmp_path):
    """The final map pass (stored values, all bands, one product a date) gives sum_i M_i^2 / var_i of the MAD
    variates on the kept bands after IR-MAD's own centring and scaling: raw values near 1000, a dropped band."""
    from hypernet_qgis.core.classic.baselines import _chi2, _chi2_of_rows, _transform_on_stored_values
    from hypernet_qgis.core.io.streaming import WindowReader

    rng = np.random.default_rng(5)
    bands, rows, cols, p = 5, 6, 7, 4
    x = rng.normal(1000.0, 30.0, (bands, rows, cols)).astype(np.float32)
    y = rng.normal(-500.0, 10.0, (bands, rows, cols)).astype(np.float32)
    keep = np.array([True, True, False, True, True])
    ca, cb = rng.normal(size=(p, p)), rng.normal(size=(p, p))
    mean, var = rng.normal(scale=0.1, size=2 * p), rng.uniform(0.5, 2.0, p)
    loc1, scale1 = rng.normal(1000.0, 1.0, (p, 1)), rng.uniform(20.0, 40.0, (p, 1))
    loc2, scale2 = rng.normal(-500.0, 1.0, (p, 1)), rng.uniform(5.0, 15.0, (p, 1))
    sa = (x[keep].reshape(p, -1).astype(np.float64) - loc1) / scale1
    sb = (y[keep].reshape(p, -1).astype(np.float64) - loc2) / scale2
    expected = _chi2(sa, sb, ca, cb, mean, var)
    transform = _transform_on_stored_values(bands, keep, ca, cb, mean, (loc1, scale1, loc2, scale2))
    if source == "arrays":
        d1, d2 = x, y
    else:
        readers = []
        for name, d in (("x", x), ("y", y)):
            (tmp_path / name).write_bytes(np.ascontiguousarray(d.transpose(1, 2, 0)).tobytes())
            readers.append(WindowReader(str(tmp_path / name), d.shape))
        d1, d2 = readers
    got = np.concatenate([_chi2_of_rows(d1, d2, r, r + 2, transform, var.astype(np.float32)) for r in (0, 2, 4)])
    np.testing.assert_allclose(got, expected, rtol=2e-4)
    if source != "arrays":  # the reads were changed in place, not the files
        np.testing.assert_array_equal(np.asarray(d1), x)


def test_irmad_sample_read_pixel_by_pixel_from_scratch_files_is_the_same(tmp_path):
    """From window sources that read single pixels (a windowed pair's scratch files) the sample is read pixel by
    pixel: the same pixels as strip by strip from the arrays, so the same fit and the same map."""
    from hypernet_qgis.core.io.streaming import WindowReader

    x1, x2, valid, _ = synthetic_pair(7, bands=3, size=30)
    valid[4:9, 2:20] = False
    n = int(valid.sum())
    readers = []
    for name, x in (("x1", x1), ("x2", x2)):
        (tmp_path / name).write_bytes(np.ascontiguousarray(x.transpose(1, 2, 0), dtype=np.float32).tobytes())
        readers.append(WindowReader(str(tmp_path / name), x.shape))
    a = irmad_details(x1.astype(np.float32), x2.astype(np.float32), valid, sample_pixels=n // 5)
    b = irmad_details(*readers, valid, sample_pixels=n // 5)
    assert a["sampled_every"] == b["sampled_every"] == 6
    assert a["rho"] == b["rho"] and a["iterations"] == b["iterations"]
    np.testing.assert_array_equal(a["chi2"], b["chi2"])
