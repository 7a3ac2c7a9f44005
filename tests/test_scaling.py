"""Per-date standardisation: hand-computed z-scores, invalid pixels, constant bands, pooled option."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from hypernet_qgis.core.classic.scaling import apply_stats, standardize, standardize_joint
from hypernet_qgis.core.errors import InputError


def _pair():
    x = np.array([[[1, 2], [3, 4]], [[5, 5], [5, 5]]], dtype=np.float32)  # band 2 constant
    return x, np.ones((2, 2), bool)


def test_hand_computed_zscores_and_constant_band():
    x, valid = _pair()
    xs, stats = standardize(x, valid)
    s = math.sqrt(1.25)  # population sd of 1, 2, 3, 4
    np.testing.assert_allclose(xs[0], np.array([[-1.5, -0.5], [0.5, 1.5]]) / s, rtol=1e-6)
    np.testing.assert_array_equal(xs[1], 0.0)
    assert stats["mean"] == pytest.approx([2.5, 5.0]) and stats["std"] == pytest.approx([s, 0.0])
    assert stats["constant_bands"] == [2] and stats["n_valid"] == 4
    assert xs.dtype == np.float32 and np.isfinite(xs).all()
    json.dumps(stats)  # plain lists and numbers


def test_invalid_pixels_are_ignored_and_zeroed():
    x = np.array([[[1, 2], [3, np.nan]]], dtype=np.float32)
    x2 = x.copy()
    x2[0, 1, 1] = 1e9  # a huge value on an invalid pixel must not change the statistics
    valid = np.array([[True, True], [True, False]])
    for arr in (x, x2):
        xs, stats = standardize(arr, valid)
        assert stats["mean"] == pytest.approx([2.0]) and stats["std"] == pytest.approx([math.sqrt(2 / 3)])
        assert xs[0, 1, 1] == 0.0
        np.testing.assert_allclose(xs[0][valid], np.array([-1, 0, 1]) / math.sqrt(2 / 3), rtol=1e-6)


def test_each_date_on_its_own_removes_gain_and_offset():
    rng = np.random.default_rng(3)
    x1 = rng.normal(100, 20, size=(4, 10, 12)).astype(np.float32)
    gains = np.array([0.8, 1.1, 1.5, 2.0], np.float32)[:, None, None]
    x2 = gains * x1 + 17
    valid = np.ones((10, 12), bool)
    a, _ = standardize(x1, valid)
    b, _ = standardize(x2, valid)
    np.testing.assert_allclose(a, b, atol=2e-5)
    j1, j2, stats = standardize_joint(x1, x2, valid)  # pooled stats keep the difference
    assert stats["method"] == "zscore-joint" and np.abs(j1 - j2).mean() > 0.3


def test_joint_statistics_hand_computed():
    x1 = np.array([[[0, 2]]], np.float32)
    x2 = np.array([[[4, 6]]], np.float32)
    valid = np.ones((1, 2), bool)
    j1, j2, stats = standardize_joint(x1, x2, valid)
    sd = math.sqrt(5.0)  # values 0, 2, 4, 6: mean 3, population variance 5
    assert stats["mean"] == [3.0] and stats["std"] == pytest.approx([sd])
    np.testing.assert_allclose(j1[0, 0], [-3 / sd, -1 / sd], rtol=1e-6)
    np.testing.assert_allclose(j2[0, 0], [1 / sd, 3 / sd], rtol=1e-6)


def test_apply_stats_reuses_whole_image_statistics_on_a_tile():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 8, 8)).astype(np.float32)
    valid = np.ones((8, 8), bool)
    xs, stats = standardize(x, valid)
    tile = apply_stats(x[:, 2:5, 3:7], valid[2:5, 3:7], stats)
    np.testing.assert_allclose(tile, xs[:, 2:5, 3:7], rtol=1e-6)


def test_no_valid_pixel_is_an_input_error():
    x, _ = _pair()
    with pytest.raises(InputError, match="No valid pixel"):
        standardize(x, np.zeros((2, 2), bool))


def test_shape_errors_name_both_shapes():
    """Programming errors (the pipeline checks the grids first) say which shapes disagree."""
    x, valid = _pair()
    with pytest.raises(ValueError) as info:
        standardize_joint(x, x[:1], valid)
    assert str(info.value) == "dates differ in shape: (2, 2, 2) vs (1, 2, 2)"
    with pytest.raises(ValueError) as info:
        standardize(x[0], valid)
    assert str(info.value) == "expected (bands, rows, cols), got shape (2, 2)"
    with pytest.raises(ValueError) as info:
        standardize(x, np.ones((2, 3), bool))
    assert str(info.value) == "valid mask (2, 3) does not match image (2, 2)"
    _, stats = standardize(x, valid)
    with pytest.raises(ValueError) as info:
        apply_stats(x[:1], valid, stats)
    assert str(info.value) == "image has 1 bands but the statistics have 2"
    with pytest.raises(ValueError) as info:
        apply_stats(x, np.ones((3, 2), bool), stats)
    assert str(info.value) == "valid mask (3, 2) does not match image (2, 2)"
    with pytest.raises(InputError) as info:
        standardize(x, np.zeros((2, 2), bool))
    assert str(info.value) == "No valid pixel to compute band statistics from. Check nodata values and masks."
    bad = x.copy()
    bad[1, 0, 0] = np.inf
    with pytest.raises(InputError) as info:
        standardize(bad, valid)
    assert str(info.value) == "Band 2 has non-finite values on valid pixels; check the input's nodata."


def test_apply_stats_without_a_constant_band_list():
    """Statistics written without "constant_bands" (a hand-made or older file) mean no band is constant."""
    x, valid = _pair()
    out = apply_stats(x[:1], valid, {"mean": [2.5], "std": [0.5]})
    np.testing.assert_allclose(out[0], [[-3.0, -1.0], [1.0, 3.0]])


def test_near_constant_band_of_a_large_mean_and_band_order():
    """A band that varies by float rounding only around a large mean is constant (all 0), the bands after a
    constant band are still standardised, and the statistics say how they were made."""
    x = np.empty((2, 2, 2), np.float64)
    x[0] = [[1000.0, 1000.0], [1000.0, 1000.0001]]  # spread 4e-5, below 1e-6 * 1000
    x[1] = [[1.0, 2.0], [3.0, 4.0]]
    valid = np.ones((2, 2), bool)
    xs, stats = standardize(x, valid)
    assert stats["constant_bands"] == [1] and stats["method"] == "zscore"
    assert np.all(xs[0] == 0.0)
    sd = math.sqrt(1.25)
    np.testing.assert_allclose(xs[1], [[-1.5 / sd, -0.5 / sd], [0.5 / sd, 1.5 / sd]], rtol=1e-6)


def test_a_spread_too_large_for_float64_is_refused():
    x = np.array([[[1e200, -1e200]]])  # finite values whose squared deviations overflow
    with np.errstate(over="ignore"):
        with pytest.raises(InputError, match="Band 1 has non-finite values"):
            standardize(x, np.ones((1, 2), bool))
