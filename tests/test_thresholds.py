"""Otsu and k-means thresholds on arrays whose answers are computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hypernet_qgis.core.classic.thresholds import compute_threshold, kmeans_threshold, otsu_threshold
from hypernet_qgis.core.errors import InputError


def test_otsu_hand_computed_unbalanced():
    # between-class variance w0*w1*(mu0-mu1)^2 for the splits of [0, 1, 2, 6, 10]:
    #   {0}|{1,2,6,10}: .16*4.75^2 = 3.61   {0,1}|{2,6,10}: .24*5.5^2 = 7.26
    #   {0,1,2}|{6,10}: .24*7^2 = 11.76     {0,1,2,6}|{10}: .16*7.75^2 = 9.61   -> best split 2 | 6
    assert otsu_threshold(np.array([0, 1, 2, 6, 10.0])) == pytest.approx(4.0)  # midpoint of the gap


def test_otsu_bimodal_with_nan_and_repeats():
    values = np.array([0, 0, 0, 1, np.nan, 9, 10, 10, np.inf, -np.inf], dtype=np.float32)
    # finite values 0,0,0,1 | 9,10,10: the only sensible split; gap 1..9 -> 5
    assert otsu_threshold(values) == pytest.approx(5.0)


def test_otsu_prefers_variance_not_gap_size():
    # {0,0,0,0,4} vs {5}: gap 4->5 is small but the split 0|4 gives w0*w1*(mu0-mu1)^2 = (4/6)(2/6)*4.5^2 = 4.5,
    # and 4|5 gives (5/6)(1/6)*(5-0.8)^2 = 2.45 -> Otsu splits between 0 and 4 (threshold 2)
    assert otsu_threshold(np.array([0, 0, 0, 0, 4, 5.0])) == pytest.approx(2.0)


def test_otsu_histogram_version_close_to_exact():
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.normal(0, 1, 5000), rng.normal(8, 1, 1000)])
    exact = otsu_threshold(v)
    hist = otsu_threshold(v, bins=256)
    assert 3.0 < exact < 5.0
    # both land in the same empty gap of the sample: they flag exactly the same pixels
    assert (v > exact).sum() == (v > hist).sum() == 1000


def test_kmeans_hand_computed():
    # 10th/90th percentiles of [0, 1, 2, 6, 10] (linear): 0.4 and 8.4 -> t = 4.4 -> {0,1,2} mean 1, {6,10} mean 8
    # -> t = 4.5 -> same split: stop
    assert kmeans_threshold(np.array([10, 0, 6, 2, 1.0])) == pytest.approx(4.5)


def test_kmeans_starts_in_the_bulk_not_at_the_extremes():
    v = np.array([0, 1, 2, 3, 40, 100.0])
    # percentiles 0.5 and 70 -> t 35.25: {0,1,2,3} mean 1.5 | {40,100} mean 70 -> t 35.75, same split -> 35.75
    assert kmeans_threshold(v) == pytest.approx(35.75)
    # Otsu = global 2-means optimum: {0,1,2,3,40} | {100} (SSE 1190.8 < 1805) -> midpoint of the gap 40..100
    assert otsu_threshold(v) == pytest.approx(70.0)
    # percentiles 0.5 / 11.5 -> t 6: {0,1,2} (mean 1) | {10,11,12} (mean 11) -> t 6 again -> 6
    assert kmeans_threshold(np.array([0, 1, 2, 10, 11, 12.0])) == pytest.approx(6.0)
    # the threshold moves off the first midpoint: percentiles 2 / 8 -> t 5: {0,4,4.5} mean 8.5/3 |
    # {6,6,10} mean 22/3 -> t 5.0833, split unchanged
    assert kmeans_threshold(np.array([0, 4, 4.5, 6, 6, 10.0])) == pytest.approx((8.5 / 3 + 22 / 3) / 2)
    # mostly equal values: both percentiles are 0, start from min/max -> {0 x19} | {5} -> 2.5
    assert kmeans_threshold(np.r_[np.zeros(19), 5.0]) == pytest.approx(2.5)


def test_constant_and_empty():
    assert otsu_threshold(np.full(5, 3.0)) == 3.0 and kmeans_threshold(np.full(5, 3.0)) == 3.0
    with pytest.raises(InputError, match="no valid intensity"):
        otsu_threshold(np.array([np.nan, np.nan]))


def test_compute_threshold_dispatch():
    v = np.array([0, 1, 2, 6, 10.0])
    assert compute_threshold(v, "otsu") == 4.0 and compute_threshold(v, "kmeans") == 4.5
    assert compute_threshold(v, "fixed", 1.5) == 1.5
    with pytest.raises(InputError, match="fixed threshold needs"):
        compute_threshold(v, "fixed")
    with pytest.raises(InputError, match="Unknown threshold"):
        compute_threshold(v, "median")


# ---------------------------------------------------------------------------- the mixture + Potts MRF map ("mrf")


def _blocks_with_noise(seed: int = 0):
    """A 60x60 scene: a 20x20 changed block (intensity ~3) on an unchanged background (~1), both noisy enough that
    the pixel-wise mixture makes speckle; one isolated pixel far above everything (a real small change)."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((60, 60), bool)
    truth[20:40, 10:30] = True
    x = np.where(truth, rng.normal(3.0, 0.9, truth.shape), rng.normal(1.0, 0.35, truth.shape))
    x[50, 50] = 40.0
    truth[50, 50] = True
    return x.astype(np.float32), truth


def test_mrf_removes_speckle_and_fills_holes_that_the_pixelwise_mixture_leaves():
    from hypernet_qgis.core.classic.thresholds import binary_change, mixture_threshold, mrf_change

    x, truth = _blocks_with_noise()
    valid = np.ones(x.shape, bool)
    pixelwise, t_mix = binary_change(x, valid, "mixture")
    mrf, t_mrf = binary_change(x, valid, "mrf")
    assert t_mrf == t_mix == mixture_threshold(x[valid])  # the MRF starts at the mixture's split
    wrong_pixelwise = int(((pixelwise == 1) != truth).sum())
    wrong_mrf = int(((mrf == 1) != truth).sum())
    assert wrong_pixelwise > 40  # speckle outside the block and holes inside it
    assert wrong_mrf <= wrong_pixelwise // 4
    assert mrf[50, 50] == 1  # strong evidence stays changed even with no changed neighbour
    # without the prior (beta 0) the MRF map is the mixture's own
    assert np.array_equal(mrf_change(x, valid, beta=0.0)[0], pixelwise)


def test_mrf_a_weak_isolated_pixel_follows_its_neighbours_and_invalid_pixels_are_not_neighbours():
    from hypernet_qgis.core.classic.thresholds import MRF_BETA, MRF_RADIUS, fit_mixture, mrf_change

    x, _ = _blocks_with_noise(1)
    valid = np.ones(x.shape, bool)
    mixture = fit_mixture(x[valid])
    # a pixel just above the split, alone in the background: its llr is below beta * 24, so it turns unchanged
    x[5, 45] = mixture.threshold + 0.05
    assert 0 < mixture.log_likelihood_ratio(np.array([x[5, 45]]))[0] < MRF_BETA * ((2 * MRF_RADIUS + 1) ** 2 - 1)
    out, _ = mrf_change(x, valid)
    assert out[5, 45] == 0
    # the same pixel inside the changed block, with its 5x5 window invalid except itself: nothing pulls it
    x2 = x.copy()
    x2[30, 20] = mixture.threshold + 0.05
    valid2 = valid.copy()
    valid2[28:33, 18:23] = False
    valid2[30, 20] = True
    x2[~valid2] = np.nan
    out2, _ = mrf_change(x2, valid2)
    assert out2[30, 20] == 1 and (out2[~valid2] == 255).all()


def test_mixture_log_likelihood_ratio_is_monotone_beyond_the_means():
    from hypernet_qgis.core.classic.thresholds import fit_mixture

    rng = np.random.default_rng(3)
    # the changed class narrower than the unchanged one: the raw Gaussian ratio falls again far out in the tail
    values = np.r_[rng.normal(0.0, 1.0, 9000), rng.normal(6.0, 0.3, 1000)]
    m = fit_mixture(values)
    grid = np.linspace(-10, 30, 4001)
    llr = m.log_likelihood_ratio(grid)
    assert m.means[0] < m.threshold < m.means[1]
    assert (np.diff(llr) >= 0).all() and (llr[grid > m.threshold] > 0).all() and (llr[grid < m.means[0]] < 0).all()
    raw = m.log_likelihood_ratio(np.array([30.0]))[0]  # one value alone: nothing holds it up
    assert raw < 0 < llr[-1]  # far out in the narrow class's tail the raw ratio says "unchanged"; the held one not
    assert fit_mixture(np.full(50, 2.0)) is None


def test_mrf_on_the_real_taizhou_pair_beats_the_pixelwise_mixture(shared_dir):
    """IR-MAD and CVA of Taizhou, averaged as the default fusion does (each over its median): the MRF map scores
    kappa 0.963 where the pixel-wise mixture scores 0.933 (BENCHMARKS.md, issue 10)."""
    from hypernet_qgis.core.classic.baselines import cva, irmad
    from hypernet_qgis.core.classic.metrics import change_metrics, reference_from_masks
    from hypernet_qgis.core.classic.thresholds import binary_change
    from hypernet_qgis.core.fusion import ratio_to_median
    from hypernet_qgis.core.io.raster_io import read_mask, read_raster

    tz = shared_dir / "data" / "taizhou"
    x1, v1, info = read_raster(tz / "2000TM")
    x2, v2, _ = read_raster(tz / "2003TM.HDR")
    valid = v1 & v2
    ref = reference_from_masks(read_mask(tz / "change.bmp", info), read_mask(tz / "unchanged.bmp", info))
    fused = (ratio_to_median(irmad(x1, x2, valid), valid) + ratio_to_median(cva(x1, x2, valid), valid)) / 2

    def kappa(how: str) -> float:
        return change_metrics(binary_change(fused, valid, how)[0], ref, changed=(1,), unchanged=(0,), ignore=(255,))[
            "kappa"
        ]

    assert kappa("mixture") == pytest.approx(0.933, abs=0.005)
    assert kappa("mrf") == pytest.approx(0.963, abs=0.005)


def test_refusals_say_what_to_do():
    """Every refusal of the thresholds, word for word (they reach the user as one-line messages)."""
    from hypernet_qgis.core.classic.thresholds import METHODS, binary_change, choose_threshold, mrf_change

    def message(call, *args, **kw):
        with pytest.raises(InputError) as info:
            call(*args, **kw)
        return str(info.value)

    assert message(otsu_threshold, np.array([np.nan, np.inf])) == (
        "There is no valid intensity value to threshold (every pixel is invalid)."
    )
    intensity = np.arange(16, dtype=np.float64).reshape(4, 4)
    valid = np.ones((4, 4), bool)
    assert message(mrf_change, intensity, valid, beta=-0.5, radius=1) == (
        "The MRF needs beta >= 0 and a radius >= 1, got -0.5 and 1."
    )
    assert message(mrf_change, intensity, valid, beta=1.0, radius=0) == (
        "The MRF needs beta >= 0 and a radius >= 1, got 1.0 and 0."
    )
    nodata = "The change intensity has no valid pixel; the inputs are all nodata."
    assert message(mrf_change, intensity, np.zeros((4, 4), bool)) == nodata
    assert message(choose_threshold, intensity, np.zeros((4, 4), bool)) == nodata
    assert message(binary_change, np.full((4, 4), np.nan), valid) == nodata
    assert message(compute_threshold, intensity.ravel(), "fixed") == (
        "A fixed threshold needs a finite THRESHOLD_VALUE. Give a number, or use otsu/kmeans."
    )
    assert message(compute_threshold, intensity.ravel(), "fixed", float("nan")) == (
        "A fixed threshold needs a finite THRESHOLD_VALUE. Give a number, or use otsu/kmeans."
    )
    assert message(compute_threshold, intensity.ravel(), "Median") == (
        f"Unknown threshold method 'median'. Use one of: {', '.join(METHODS)}."
    )
    assert compute_threshold(intensity.ravel(), "FIXED", 2.5) == 2.5


def test_kmeans_start_from_the_extremes_and_ties_at_the_midpoint():
    # 10th and 90th percentiles both 5 (nine of eleven values): start at 0 and 9 -> t 4.5 -> {0} | mean 5.4
    # -> t 2.7 -> same split: 2.7
    assert kmeans_threshold(np.array([0] + [5] * 9 + [9.0])) == pytest.approx(2.7)
    # percentiles 0.4, 3.6 -> t 2 equals a value, which goes to the lower class: {0, 2} | {4} -> t 2.5
    assert kmeans_threshold(np.array([4, 0, 2.0])) == pytest.approx(2.5)
    # the two top values equal, the lowest not: not constant. 1.4, 3 -> t 2.2 -> {1} | {3, 3} -> t 2
    assert kmeans_threshold(np.array([3, 1, 3.0])) == pytest.approx(2.0)


def test_mixture_of_a_constant_is_the_constant():
    from hypernet_qgis.core.classic.thresholds import mixture_threshold

    assert mixture_threshold(np.array([3.0, np.nan, 3.0, 3.0])) == 3.0


def test_binary_change_map_default_fixed_and_nodata():
    from hypernet_qgis.core.classic.thresholds import binary_change, choose_threshold, mrf_change

    intensity = np.array([[0.0, 0.0, 2.0], [10.0, np.inf, 10.0]])
    valid = np.array([[True, False, True], [True, True, True]])
    out, t = binary_change(intensity, valid)  # Otsu by default: 0, 2 | 10, 10 -> 6
    assert out.dtype == np.uint8 and t == pytest.approx(6.0)
    np.testing.assert_array_equal(out, [[0, 255, 0], [1, 255, 1]])
    out, t = binary_change(intensity, valid, "fixed", 2.0)  # change is strictly above the threshold
    assert t == 2.0
    np.testing.assert_array_equal(out, [[0, 255, 0], [1, 255, 1]])
    out, t = binary_change(intensity, valid, "fixed", 1.0)
    np.testing.assert_array_equal(out, [[0, 255, 1], [1, 255, 1]])
    assert choose_threshold(intensity, valid, "fixed", 7.5) == 7.5
    assert choose_threshold(intensity, valid) == pytest.approx(6.0)
    # the smallest MRF window is allowed
    big = np.zeros((6, 6))
    big[:3] = 10.0
    m, _ = mrf_change(big, np.ones((6, 6), bool), beta=0.5, radius=1)
    np.testing.assert_array_equal(m, np.repeat([[1], [0]], 3, axis=0).repeat(6, axis=1))


# ------------------------------------------------------------------------------ the mixture fit, exact behaviour


def _normal_sample(n: int, mean: float, sd: float) -> np.ndarray:
    """``n`` evenly spaced quantiles of N(mean, sd): a deterministic 'sample' whose moments are known."""
    from statistics import NormalDist

    return np.array([NormalDist(mean, sd).inv_cdf((i + 0.5) / n) for i in range(n)])


def _em_written_out(values: np.ndarray, max_iter: int = 200):
    """fit_mixture as its docstring describes it, written with densities instead of log-sum-exp: EM from Otsu's
    split until the means move by at most 1e-6 (relative) + 1e-12 * range, then the first point of 2001 between
    the means where the changed class's weighted density is above the unchanged one's."""
    v = np.sort(values)
    n, scale = v.size, v[-1] - v[0]
    t = otsu_threshold(v)
    lo, hi = v[v <= t], v[v > t]
    w = np.array([lo.size / n, hi.size / n])
    mu = np.array([lo.mean(), hi.mean()])
    sd = np.array([lo.std(), hi.std()]) + 1e-9 * scale
    for _ in range(max_iter):
        dens = [w[k] / sd[k] * np.exp(-0.5 * ((v - mu[k]) / sd[k]) ** 2) for k in (0, 1)]
        r = [dens[k] / (dens[0] + dens[1]) for k in (0, 1)]
        nk = np.array([r[0].sum(), r[1].sum()])
        mu_new = np.array([(r[k] * v).sum() / nk[k] for k in (0, 1)])
        sd_new = np.array([np.sqrt((r[k] * (v - mu_new[k]) ** 2).sum() / nk[k]) for k in (0, 1)]) + 1e-9 * scale
        done = bool(np.all(np.abs(mu_new - mu) <= 1e-12 * scale + 1e-6 * np.abs(mu)))
        w, mu, sd = nk / n, mu_new, sd_new
        if done:
            break
    grid = np.linspace(mu[0], mu[1], 2001)
    log_d = [-0.5 * ((grid - mu[k]) / sd[k]) ** 2 - np.log(sd[k]) + np.log(w[k]) for k in (0, 1)]
    return w, mu, sd, float(grid[np.nonzero(log_d[1] > log_d[0])[0][0]])


@pytest.mark.parametrize("max_iter", [1, 3, 200])
def test_fit_mixture_equals_em_written_out(max_iter):
    from hypernet_qgis.core.classic.thresholds import fit_mixture, mixture_threshold

    # 600 unchanged values N(0, 1), 200 changed N(3, 0.6): overlapping, so EM moves off Otsu's start
    values = np.r_[_normal_sample(200, 3.0, 0.6), _normal_sample(600, 0.0, 1.0)]
    m = fit_mixture(values, max_iter)
    w, mu, sd, threshold = _em_written_out(values, max_iter)
    np.testing.assert_allclose(m.weights, w, rtol=1e-9)
    np.testing.assert_allclose(m.means, mu, rtol=1e-9)
    np.testing.assert_allclose(m.sds, sd, rtol=1e-9)
    assert m.threshold == pytest.approx(threshold, rel=1e-12)
    assert mixture_threshold(values, max_iter) == m.threshold
    if max_iter == 200:  # converged near the classes the sample was drawn from
        assert m.weights == pytest.approx((0.75, 0.25), abs=0.02)
        assert m.means == pytest.approx((0.0, 3.0), abs=0.05) and m.sds == pytest.approx((1.0, 0.6), abs=0.05)
        assert m.means[0] < m.threshold < m.means[1]
        assert all(isinstance(x, float) for x in (*m.weights, *m.means, *m.sds, m.threshold))


def test_fit_mixture_of_two_constant_classes():
    """Two values repeated: each class is one value, its sd the floor 1e-9 * range; the split is the first of the
    2001 points between the means past the middle (the weights are lost against the huge quadratic terms)."""
    from hypernet_qgis.core.classic.thresholds import Mixture, fit_mixture

    assert fit_mixture(np.array([0.0, 0.0, 5.0])) == Mixture((2 / 3, 1 / 3), (0.0, 5.0), (5e-9, 5e-9), 2.5025)
    m = fit_mixture(np.array([5.0, 0.0, 5.0, 5.0]))  # only the lowest value differs; unsorted
    assert m.weights == (0.25, 0.75) and m.means == (0.0, 5.0) and m.sds == pytest.approx((5e-9, 5e-9), rel=1e-12)
    # a range under 1: the floor follows it down
    m = fit_mixture(np.array([0.0, 0.0, 0.5]))
    assert m.sds == pytest.approx((5e-10, 5e-10), rel=1e-12) and m.threshold == pytest.approx(0.25025)
    # not at 0: the range is max - min
    m = fit_mixture(np.array([1.5, 1.0, 1.0, np.nan]))
    assert m.means == (1.0, 1.5) and m.sds == pytest.approx((5e-10, 5e-10), rel=1e-12)
    assert m.threshold == pytest.approx(1.25025, rel=1e-12)


def test_fit_mixture_where_otsu_splits_onto_a_value():
    """Two adjacent doubles: Otsu's midpoint rounds onto one of them. Onto the lower one, the classes are still
    the two values; onto the upper one, the upper class is empty: no mixture, and mixture_threshold falls back to
    Otsu's threshold."""
    from hypernet_qgis.core.classic.thresholds import fit_mixture, mixture_threshold

    a = 1.0
    b = float(np.nextafter(a, 2.0))
    assert otsu_threshold(np.array([a, b])) == a
    m = fit_mixture(np.array([b, a]))
    assert m.weights == (0.5, 0.5) and m.means == (a, b)
    c = float(np.nextafter(b, 2.0))
    assert otsu_threshold(np.array([b, c])) == c
    assert fit_mixture(np.array([b, c])) is None
    assert mixture_threshold(np.array([c, b])) == c
    assert mixture_threshold(np.array([3.0])) == 3.0  # one value: constant


def test_fit_mixture_of_a_large_input_fits_evenly_spaced_order_statistics():
    from hypernet_qgis.core.classic.thresholds import MIXTURE_SAMPLE, fit_mixture

    assert MIXTURE_SAMPLE == 65536
    # 2 * 65536 - 1 distinct values: the sample is exactly every other order statistic, the first and last included
    rng = np.random.default_rng(4)
    v = np.r_[rng.normal(0, 1, 98303), rng.normal(10, 1, 32768)]
    assert v.size == 2 * MIXTURE_SAMPLE - 1 and np.unique(v).size == v.size
    sample = np.sort(v)[::2]
    assert sample.size == MIXTURE_SAMPLE
    assert fit_mixture(v) == fit_mixture(sample)
    assert fit_mixture(v) != fit_mixture(np.sort(v)[1::2])  # (one order statistic off is seen)


# ------------------------------------------------------------------------------- the log-likelihood ratio by hand


def test_log_likelihood_ratio_hand_computed_and_held_monotone():
    from hypernet_qgis.core.classic.thresholds import Mixture

    # unchanged N(0, 0.5), changed N(4, 2), equal weights: the raw ratio 2 x^2 - (x - 4)^2 / 8 - 2 ln 2 rises
    # again in the left tail (the changed class is wider)
    m = Mixture((0.5, 0.5), (0.0, 4.0), (0.5, 2.0), 1.1)

    def raw(x):
        return 2 * x**2 - (x - 4) ** 2 / 8 - 2 * math.log(2)

    x = np.array([[5.0, -3.0, 1.0], [0.0, 2.0, 1.1]], dtype=np.float32)  # float32 in, float64 math
    xs = x.astype(np.float64)
    llr = m.log_likelihood_ratio(x)
    assert llr.shape == (2, 3) and llr.dtype == np.float64
    # above 1.1 each value keeps the largest ratio from 1.1 up to itself (here its own: rising);
    # at and below 1.1 the smallest from itself up to 1.1
    expected = np.array(
        [
            [raw(xs[0, 0]), raw(xs[1, 0]), raw(xs[0, 2])],  # -3: min(raw(-3) = 10.5, raw(0), ...) = raw(0)
            [raw(xs[1, 0]), raw(xs[1, 1]), raw(xs[1, 2])],
        ]
    )
    np.testing.assert_allclose(llr, expected, rtol=1e-12)
    assert raw(-3.0) > 10 and llr[0, 1] == pytest.approx(-2 - 2 * math.log(2))
    # a value exactly at the threshold is on the lower side: it holds -3 down to its own ratio
    at = m.log_likelihood_ratio(np.array([-3.0, 1.1]))
    np.testing.assert_allclose(at, [raw(1.1), raw(1.1)], rtol=1e-12)
    # weights count: log(w1 / w0) is added
    m2 = Mixture((0.8, 0.2), (0.0, 4.0), (0.5, 2.0), 1.1)
    assert m2.log_likelihood_ratio(np.array([2.0]))[0] == pytest.approx(raw(2.0) + math.log(0.25), rel=1e-12)


# ------------------------------------------------------------------------------------- the MRF map, exact sweeps


def _icm_written_out(intensity, valid, beta, radius, max_iterations):
    """mrf_change's ICM pixel by pixel: all pixels at once per sweep, each to change where
    llr + beta * (changed - unchanged valid neighbours in its window) > 0."""
    from hypernet_qgis.core.classic.thresholds import fit_mixture

    ok = valid & np.isfinite(intensity)
    m = fit_mixture(intensity[ok])
    llr = np.zeros(intensity.shape)
    llr[ok] = m.log_likelihood_ratio(intensity[ok])
    rows, cols = intensity.shape
    changed = ok & (llr > 0)
    for _ in range(max_iterations):
        new = np.zeros_like(changed)
        for r in range(rows):
            for c in range(cols):
                if not ok[r, c]:
                    continue
                vote = 0
                for rr in range(max(0, r - radius), min(rows, r + radius + 1)):
                    for cc in range(max(0, c - radius), min(cols, c + radius + 1)):
                        if (rr, cc) != (r, c) and ok[rr, cc]:
                            vote += 1 if changed[rr, cc] else -1
                new[r, c] = llr[r, c] + beta * vote > 0
        if np.array_equal(new, changed):
            break
        changed = new
    out = np.full(intensity.shape, 255, np.uint8)
    out[ok] = changed[ok]
    return out, m.threshold, llr


def _mrf_scene(seed=5, size=14):
    rng = np.random.default_rng(seed)
    x = rng.normal(1.0, 0.45, (size, size))
    x[3:9, 4:11] = rng.normal(3.0, 0.8, (6, 7))
    valid = np.ones((size, size), bool)
    valid[0, :5] = False
    valid[10:12, 6:9] = False
    x[~valid] = np.nan
    x[0, 5] = np.inf  # not finite: invalid as well
    return x, valid


@pytest.mark.parametrize(
    "beta, radius, max_iterations", [(0.25, 2, 20), (1.0, 1, 20), (0.6, 1, 1), (0.6, 1, 2), (0.4, 3, 20), (0.3, 2, 0)]
)
def test_mrf_change_equals_icm_written_out(beta, radius, max_iterations):
    x, valid = _mrf_scene()
    out, threshold = mrf_change_args(x, valid, beta, radius, max_iterations)
    expected, expected_threshold, llr = _icm_written_out(x, valid, beta, radius, max_iterations)
    assert out.dtype == np.uint8 and threshold == expected_threshold
    np.testing.assert_array_equal(out, expected)
    assert out[0, 5] == 255 and (out[~valid] == 255).all()
    if max_iterations == 0:  # no sweep: the mixture's own split of the (held) ratio
        np.testing.assert_array_equal(out[valid & np.isfinite(x)], (llr > 0)[valid & np.isfinite(x)])


def mrf_change_args(x, valid, beta, radius, max_iterations):
    from hypernet_qgis.core.classic.thresholds import MRF_BETA, MRF_MAX_ITERATIONS, MRF_RADIUS, mrf_change

    if (beta, radius, max_iterations) == (MRF_BETA, MRF_RADIUS, MRF_MAX_ITERATIONS):
        return mrf_change(x, valid)  # the defaults
    return mrf_change(x, valid, beta=beta, radius=radius, max_iterations=max_iterations)


def test_mrf_change_sweeps_change_the_map_and_invalid_pixels_are_neither_side():
    """Facts the written-out ICM above must show on this scene (so that it is not trivially the pixel-wise map):
    sweeps flip pixels, and an invalid pixel neither pulls nor pushes its neighbours."""
    from hypernet_qgis.core.classic.thresholds import mrf_change

    x, valid = _mrf_scene()
    start, _ = mrf_change(x, valid, beta=0.6, radius=1, max_iterations=0)
    one, _ = mrf_change(x, valid, beta=0.6, radius=1, max_iterations=1)
    final, _ = mrf_change(x, valid, beta=0.6, radius=1)
    assert (start != one).sum() > 0 and (one != final).sum() > 0
    # weak pixels next to a hole: the map is the written-out ICM's, where only valid pixels are neighbours
    v = np.ones((5, 5), bool)
    v[:, :2] = False
    flat = np.where(v, 0.0, np.nan)
    flat[:, 2:] = [[0.0, 0.0, 0.1], [0.1, 0.0, 0.0], [0.0, 0.1, 0.0], [5.0, 5.0, 5.0], [5.0, 5.0, 5.0]]
    out, _ = mrf_change(flat, v, beta=0.5, radius=1)
    expected, _, _ = _icm_written_out(flat, v, 0.5, 1, 20)
    np.testing.assert_array_equal(out, expected)
    assert (out[:, :2] == 255).all()


def test_mrf_of_a_constant_or_unsplittable_intensity_is_the_mixture_map():
    from hypernet_qgis.core.classic.thresholds import mrf_change

    x = np.array([[2.0, 2.0], [np.nan, 2.0]])
    valid = np.array([[True, True], [True, False]])
    out, t = mrf_change(x, valid)
    assert t == 2.0 and out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[0, 0], [255, 255]])
    b = float(np.nextafter(1.0, 2.0))
    c = float(np.nextafter(b, 2.0))
    out, t = mrf_change(np.array([[b, c, c]]), np.ones((1, 3), bool))
    assert t == c  # Otsu's fallback
    np.testing.assert_array_equal(out, [[0, 0, 0]])


# ------------------------------------------------------------------- small edges of Otsu, k-means and the names


def test_otsu_edges_float32_and_one_value():
    # only the lowest (or the highest) value differs: not constant
    assert otsu_threshold(np.array([0.0, 5.0, 5.0])) == 2.5 and otsu_threshold(np.array([0.0, 0.0, 5.0])) == 2.5
    assert otsu_threshold(np.array([3.0])) == 3.0 and kmeans_threshold(np.array([3.0])) == 3.0
    # float32 values are thresholded in float64: the midpoint of two adjacent float32 values is between them
    b = np.nextafter(np.float32(1.0), np.float32(2.0))
    t = otsu_threshold(np.array([1.0, b], dtype=np.float32))
    assert t == 0.5 * (1.0 + float(b)) and 1.0 < t < float(b)


def test_otsu_histogram_version_hand_computed():
    # bins of 2 over 0..10: counts 3, 1, 0, 0, 1 at centres 1, 3, 5, 7, 9. Splits after bin 0..3:
    # 3*2*(1-6)^2 = 150, then 4*1*(1.5-9)^2 = 225 three times: the first wins -> upper edge of bin 1 = 4
    assert otsu_threshold(np.array([0, 0, 1, 3, 10.0]), bins=5) == 4.0
    # 10 bins by default would differ: counts 2,1,1,0,0,0,0,0,0,1 (bin edges 0,1,...,10)
    assert otsu_threshold(np.array([0, 0, 1, 3, 10.0]), bins=10) == 4.0


def test_method_names_and_default():
    from hypernet_qgis.core.classic.thresholds import mixture_threshold

    v = np.array([0, 1, 2, 6, 10.0])
    assert compute_threshold(v) == otsu_threshold(v)
    assert compute_threshold(v, "k-means") == compute_threshold(v, "K-Means") == kmeans_threshold(v)
    assert compute_threshold(v, "mrf") == compute_threshold(v, "MRF") == mixture_threshold(v)
    assert compute_threshold(v, "Mixture") == mixture_threshold(v)


# --------------------------------------------------------------------------------- HyperNet's root threshold


def test_threshold_feature_distance_each_method():
    from hypernet_qgis.core.classic.thresholds import (
        mixture_threshold,
        mrf_change,
        threshold_feature_distance,
    )

    intensity = np.array([[0.0, 1.0, 4.0], [9.0, np.nan, 16.0], [-0.5, 2.0, 16.0]])
    valid = np.array([[True, True, True], [True, True, True], [True, False, True]])
    ok = valid & np.isfinite(intensity)
    # fixed: in intensity units, change strictly above, nodata 255 where invalid or not finite
    out, t = threshold_feature_distance(intensity, valid, "fixed", 4.0)
    assert t == 4.0 and out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[0, 0, 0], [1, 255, 1], [0, 255, 1]])
    with pytest.raises(InputError, match="fixed threshold needs"):
        threshold_feature_distance(intensity, valid, "fixed")
    # otsu (the default) on the square root: roots 0, 1, 2, 3, 4, 0 (-0.5 counts as 0), 4 ->
    # sorted 0 0 | 1 2 3 4 4: splits 0|..: 2*5*(0-2.8)^2 = 78.4; 0 0 1|: 3*4*(1/3-3.25)^2 = 102.1;
    # 0 0 1 2|: 4*3*(0.75-11/3)^2 = 102.1; ..3|4 4: 5*2*(1.2-4)^2 = 78.4 -> first best: root 1.5, 2.25 squared
    out, t = threshold_feature_distance(intensity, valid)
    assert t == pytest.approx(2.25, rel=1e-12)
    np.testing.assert_array_equal(out, [[0, 0, 1], [1, 255, 1], [0, 255, 1]])
    # Otsu of the raw values would split elsewhere (between 4 and 9)
    assert otsu_threshold(intensity[ok]) == 6.5
    # k-means on the roots: 10th/90th percentiles 0 and 4 -> t 2: {0,0,1,2} mean 0.75 | {3,4,4} 11/3 ->
    # t 2.2083: same split -> root 2.2083, squared
    out, t = threshold_feature_distance(intensity, valid, "kmeans")
    assert t == pytest.approx(((0.75 + 11 / 3) / 2) ** 2, rel=1e-12)
    np.testing.assert_array_equal(out, [[0, 0, 0], [1, 255, 1], [0, 255, 1]])
    # mixture and mrf: the mixture of the roots, squared; the mrf map is mrf_change's on the roots
    roots = np.sqrt(np.maximum(intensity, 0.0))
    out, t = threshold_feature_distance(intensity, valid, "mixture")
    assert t == pytest.approx(mixture_threshold(roots[ok]) ** 2, rel=1e-12)
    np.testing.assert_array_equal(out[ok], (intensity[ok] > t).astype(np.uint8))
    assert (out[~ok] == 255).all()
    out, t = threshold_feature_distance(intensity, valid, "mrf")
    expected, root = mrf_change(roots, valid)
    assert t == pytest.approx(root**2, rel=1e-12)
    np.testing.assert_array_equal(out, expected)


def test_kmeans_from_the_extremes_starts_at_the_largest_value():
    # 19 zeros, 14, 33: both percentiles 0, start 0 / 33 -> t 16.5: {0 x19, 14} mean 0.7 | {33} -> t 16.85, same
    # split. Started at 0 / 14 it would settle on the other local optimum, {0 x19} | {14, 33} -> 11.75.
    assert kmeans_threshold(np.r_[np.zeros(19), 33.0, 14.0]) == pytest.approx(16.85)


def test_threshold_feature_distance_mrf_is_the_regularised_map_not_the_pixelwise_one():
    from hypernet_qgis.core.classic.thresholds import binary_change, mrf_change, threshold_feature_distance

    x, valid = _mrf_scene()
    x = np.abs(x)
    intensity = x**2  # a squared distance whose root is the scene
    out, t = threshold_feature_distance(intensity, valid, "mrf")
    expected, root = mrf_change(x, valid)
    np.testing.assert_array_equal(out, expected)
    assert t == pytest.approx(root**2, rel=1e-12)
    pixelwise, _ = binary_change(intensity, valid, "fixed", t)
    assert (out != pixelwise).sum() > 0  # the neighbours changed some labels
