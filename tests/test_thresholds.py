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
