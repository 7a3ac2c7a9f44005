"""Accuracy metrics against hand-computed confusion matrices, kappa and AUC; label encodings."""

from __future__ import annotations

import numpy as np
import pytest

from hypernet_qgis.core.classic.metrics import (
    change_metrics,
    confusion,
    metrics_from_confusion,
    reference_from_masks,
    reference_labels,
    roc_auc,
    roc_curve,
)
from hypernet_qgis.core.errors import InputError


def test_small_hand_computed_case_with_nodata_and_unlabelled():
    pred = np.array([1, 1, 0, 0, 1, 0, 255, 1], np.uint8)
    ref = np.array([1, 0, 0, 1, 1, 0, 1, 255], np.uint8)
    # scored: TP (0), FP (1), TN (2), FN (3), TP (4), TN (5); pixel 6 has no prediction, pixel 7 no label
    m = change_metrics(pred, ref)
    assert (m["TP"], m["FP"], m["TN"], m["FN"], m["n_labelled"]) == (2, 1, 2, 1, 6)
    assert m["n_unscored_nodata"] == 1
    # OA = 4/6; pe = (3*3 + 3*3)/36 = 0.5; kappa = (2/3 - 1/2) / (1/2) = 1/3
    assert m["OA"] == pytest.approx(4 / 6) and m["kappa"] == pytest.approx(1 / 3)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["F1"] == pytest.approx(2 / 3)


def test_unbalanced_hand_computed_kappa():
    # TP 40, FP 10, FN 20, TN 130 (n = 200)
    pred = np.r_[np.ones(40), np.ones(10), np.zeros(20), np.zeros(130)].astype(np.uint8)
    ref = np.r_[np.ones(40), np.zeros(10), np.ones(20), np.zeros(130)].astype(np.uint8)
    m = change_metrics(pred.reshape(10, 20), ref.reshape(10, 20))
    assert (m["TP"], m["FP"], m["FN"], m["TN"]) == (40, 10, 20, 130)
    # OA 0.85; pe = (50*60 + 150*140) / 200^2 = 0.6; kappa = 0.25 / 0.4 = 0.625
    assert m["OA"] == pytest.approx(0.85) and m["kappa"] == pytest.approx(0.625)
    # precision 0.8, recall 2/3, F1 = 2 * 0.8 * (2/3) / (0.8 + 2/3) = 0.72727...
    assert m["precision"] == pytest.approx(0.8) and m["recall"] == pytest.approx(2 / 3)
    assert m["F1"] == pytest.approx(16 / 22)
    assert m["false_alarm_rate"] == pytest.approx(10 / 140) and m["missed_alarm_rate"] == pytest.approx(20 / 60)
    np.testing.assert_array_equal(confusion(pred == 1, ref == 1, np.ones(200, bool)), [[130, 10], [20, 40]])


def test_bay_area_encoding_and_wrong_encoding_is_refused():
    ref = np.array([1, 2, 0, 2, 1])  # 1 changed, 2 unchanged, 0 unknown
    pred = np.array([1, 0, 1, 1, 0], np.uint8)
    m = change_metrics(pred, ref, changed=(1,), unchanged=(2,), ignore=(0,))
    assert (m["TP"], m["FP"], m["TN"], m["FN"], m["n_labelled"]) == (1, 1, 1, 1, 4)
    with pytest.raises(InputError, match=r"code\(s\) 2 .*Bay Area"):
        change_metrics(pred, ref)  # 0/1 defaults would silently score "unknown" as unchanged
    with pytest.raises(InputError, match="both changed and unchanged"):
        reference_labels(ref, changed=(1,), unchanged=(1, 2))


def test_nan_reference_and_bool_prediction():
    ref = np.array([1.0, 0.0, np.nan, 0.0])
    m = change_metrics(np.array([True, False, True, True]), ref)
    assert (m["TP"], m["FP"], m["TN"], m["FN"]) == (1, 1, 1, 0)


def test_degenerate_cases():
    assert np.isnan(metrics_from_confusion(np.array([[5, 0], [0, 0]]))["kappa"])
    m = metrics_from_confusion(np.array([[5, 0], [3, 0]]))  # nothing predicted changed
    assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["F1"] == 0.0 and m["kappa"] == 0.0
    with pytest.raises(InputError, match="No labelled pixel"):
        change_metrics(np.array([1, 0], np.uint8), np.array([255, 255], np.uint8))


def test_reference_from_two_masks():
    change = np.array([[255, 0, 0], [0, 255, 0]], np.uint8)
    unchanged = np.array([[0, 255, 0], [0, 255, 255]], np.uint8)
    ref = reference_from_masks(change, unchanged)
    np.testing.assert_array_equal(ref, [[1, 0, 255], [255, 255, 0]])  # (1, 1) is in both: contradictory
    assert ref.dtype == np.uint8
    with pytest.raises(InputError, match="same grid"):
        reference_from_masks(change, unchanged[:, :2])


def test_auc_hand_computed_and_ties():
    # classic example: positives 0.35, 0.8; negatives 0.1, 0.4 -> 3 of 4 pairs ordered -> 0.75
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    # ties: positive 1 vs negative 1 is a tie (1/2), positive 2 beats it (1) -> 1.5 / 2
    assert roc_auc(np.array([1.0, 1.0, 2.0]), np.array([0, 1, 1])) == pytest.approx(0.75)
    # NaN scores and unlabelled pixels are left out; perfect ranking -> 1
    score = np.array([0.0, np.nan, 5.0, 9.0, 1.0])
    ref = np.array([0, 1, 255, 1, 0], np.uint8)
    assert roc_auc(score, ref) == 1.0
    with pytest.raises(InputError, match="only one class"):
        roc_auc(np.array([1.0, 2.0]), np.array([1, 1]))


def test_roc_curve_area_equals_rank_auc():
    rng = np.random.default_rng(5)
    ref = (rng.random(500) < 0.3).astype(np.uint8)
    score = np.round(rng.normal(size=500) + ref * 1.2, 1)  # rounding makes many ties
    fpr, tpr, thr = roc_curve(score, ref)
    assert fpr[0] == tpr[0] == 0.0 and fpr[-1] == tpr[-1] == 1.0 and np.isinf(thr[0])
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(roc_auc(score, ref), abs=1e-12)
    # at a threshold, tpr is the share of changed pixels with score >= threshold
    k = len(thr) // 2
    assert tpr[k] == pytest.approx(np.mean(score[ref == 1] >= thr[k]))


def test_roc_curve_of_an_unsigned_integer_score():
    """An 8-bit score map (a stretched intensity) ranks as its values: the scores are not negated in uint8."""
    score = np.array([0, 1, 2, 3, 3], np.uint8)
    ref = np.array([0, 0, 1, 1, 0], np.uint8)
    fpr, tpr, thr = roc_curve(score, ref)
    np.testing.assert_array_equal(thr, [np.inf, 3.0, 2.0, 1.0, 0.0])
    np.testing.assert_array_equal(tpr, [0.0, 0.5, 1.0, 1.0, 1.0])
    np.testing.assert_array_equal(fpr, [0.0, 1 / 3, 1 / 3, 2 / 3, 1.0])
    assert roc_auc(score, ref) == pytest.approx(4.5 / 6)  # 2 beats 0, 1; 3 beats 0, 1 and ties 3


def test_score_and_reference_on_different_grids():
    with pytest.raises(InputError) as info:
        roc_auc(np.zeros((2, 3)), np.zeros((3, 2), np.uint8))
    assert str(info.value) == (
        "The score map has shape (2, 3) but the reference (3, 2); they must cover the same grid."
    )
    with pytest.raises(InputError) as info:
        change_metrics(np.zeros((2, 3), np.uint8), np.zeros((3, 2), np.uint8))
    assert str(info.value) == (
        "The change map has shape (2, 3) but the reference (3, 2); they must cover the same grid."
    )


def test_auc_with_the_bay_area_encoding_and_its_one_class_message():
    """changed 1, unchanged 2, ignore 0 (Bay Area): the ignored code is passed on to the reference check."""
    score = np.array([0.9, 0.2, 0.5, 0.7])
    ref = np.array([1, 2, 0, 2], np.uint8)
    assert roc_auc(score, ref, changed=(1,), unchanged=(2,), ignore=(0,)) == 1.0
    fpr, tpr, _ = roc_curve(score, ref, changed=(1,), unchanged=(2,), ignore=(0,))
    np.testing.assert_array_equal(tpr, [0.0, 1.0, 1.0, 1.0])
    np.testing.assert_array_equal(fpr, [0.0, 0.0, 0.5, 1.0])
    with pytest.raises(InputError) as info:
        roc_auc(np.array([1.0, np.nan]), np.array([1, 0]))  # the unchanged pixel has no valid score
    assert str(info.value) == (
        "AUC needs both changed and unchanged labelled pixels with a valid score; the "
        "reference has only one class there. Check the reference encoding."
    )


def test_masks_of_different_sizes_are_named_width_by_height():
    with pytest.raises(InputError) as info:
        reference_from_masks(np.zeros((2, 3)), np.zeros((4, 5)))
    assert str(info.value) == (
        "The changed mask is 3 x 2 pixels but the unchanged mask is 5 x 4. Both masks must cover the same grid."
    )


def test_rates_at_their_edges_and_the_reference_counts():
    """Each ratio on a confusion matrix where its numerator equals the rest, and where its denominator is 0."""
    m = metrics_from_confusion(np.array([[2, 2], [2, 2]]))
    assert (m["precision"], m["recall"], m["false_alarm_rate"], m["missed_alarm_rate"]) == (0.5, 0.5, 0.5, 0.5)
    assert (m["OA"], m["kappa"], m["F1"]) == (0.5, 0.0, 0.5)
    m = metrics_from_confusion(np.array([[3, 1], [0, 0]]))  # no changed pixel in the reference
    assert (m["recall"], m["missed_alarm_rate"], m["precision"], m["F1"]) == (0.0, 0.0, 0.0, 0.0)
    assert (m["n_changed_ref"], m["n_unchanged_ref"], m["false_alarm_rate"]) == (0, 4, 0.25)
    m = metrics_from_confusion(np.array([[0, 0], [1, 3]]))  # no unchanged pixel in the reference
    assert (m["false_alarm_rate"], m["missed_alarm_rate"], m["n_changed_ref"], m["n_unchanged_ref"]) == (
        0.0,
        0.25,
        4,
        0,
    )
    m = metrics_from_confusion(np.array([[5, 1], [2, 7]]))
    assert (m["n_changed_ref"], m["n_unchanged_ref"], m["n_labelled"]) == (9, 6, 15)
    with pytest.raises(InputError) as info:
        metrics_from_confusion(np.zeros((2, 2), int))
    assert str(info.value) == (
        "No labelled pixel to score: the reference has no changed/unchanged pixel where the "
        "change map is valid. Check the reference encoding and that both cover the same area."
    )


def test_confusion_reads_any_nonzero_value_as_changed():
    cm = confusion(np.array([2, 0, 3, 0, 1]), np.array([2, 5, 0, 0, 4]), np.array([1, 1, 1, 1, 0], bool))
    np.testing.assert_array_equal(cm, [[1, 1], [1, 1]])


def test_reference_code_lists_are_checked():
    ref = np.array([0, 1])

    def message(**codes):
        with pytest.raises(InputError) as info:
            reference_labels(ref, **codes)
        return str(info.value)

    need = "Give at least one CHANGED code and one UNCHANGED code for the reference."
    assert message(changed=(), unchanged=(0,)) == need
    assert message(changed=(1,), unchanged=()) == need
    assert message(changed=(1, 2), unchanged=(2, 0)) == (
        "Reference code 2 is listed as both changed and unchanged. List each code once."
    )


def test_unlisted_codes_are_named_five_at_most():
    def message(ref, **codes):
        with pytest.raises(InputError) as info:
            reference_labels(np.array(ref), **codes)
        return str(info.value)

    tail = "or ignored. Set the reference encoding (e.g. Bay Area / Santa Barbara: changed 1, unchanged 2, ignore 0)."
    assert message([0, 1, 9, 3, 4, 5, 6, 7], changed=(1, 9), unchanged=(2, 0)) == (
        "The reference contains code(s) 3, 4, 5, 6, 7 that are not listed as changed (1, 9), unchanged (0, 2) " + tail
    )
    assert message([0, 1, 3, 4, 5, 6, 7, 8.5]) == (
        "The reference contains code(s) 3, 4, 5, 6, 7 ... that are not listed as changed (1), unchanged (0) " + tail
    )
