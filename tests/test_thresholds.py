"""Otsu and k-means thresholds on arrays whose answers are computed by hand."""

from __future__ import annotations

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
