"""Accuracy of a change map against reference labels: confusion matrix, OA, kappa, F1, AUC, ROC.

Reference encodings differ between data sets, so the caller says which codes mean what:

- ``0/1`` (bench pairs): changed=(1,), unchanged=(0,)
- Bay Area / Santa Barbara: 1 changed, 2 unchanged, 0 unknown -> changed=(1,), unchanged=(2,), ignore=(0,)
- Taizhou-style two masks: build a 1/0/255 array with :func:`reference_from_masks`.

Pixels whose code is in ``ignore``, or is 255 (the usual "unknown" code) without being listed as changed or
unchanged, or is NaN, are unlabelled and not scored. Any OTHER code raises InputError, because a wrong
encoding (e.g. scoring Bay Area with the 0/1 defaults) would otherwise give plausible but meaningless numbers.
Prediction maps are 1 = changed, 0 = unchanged, anything else (255 = nodata) is not scored.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InputError

__all__ = [
    "UNKNOWN",
    "ENCODINGS",
    "reference_labels",
    "reference_from_masks",
    "confusion",
    "confusion_matrix",
    "change_metrics",
    "metrics_from_confusion",
    "roc_auc",
    "auc",
    "roc_curve",
]

UNKNOWN = 255

ENCODINGS: dict[str, dict[str, tuple[int, ...]]] = {
    "binary-01": {"changed": (1,), "unchanged": (0,), "ignore": (255,)},
    "bayarea-120": {"changed": (1,), "unchanged": (2,), "ignore": (0,)},
}


def reference_labels(
    reference: np.ndarray,
    changed: Sequence[float] = (1,),
    unchanged: Sequence[float] = (0,),
    ignore: Sequence[float] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """(ref_changed bool, labelled bool) from a coded reference array; see the module docstring."""
    ref = np.asarray(reference)
    changed_set, unchanged_set = {float(v) for v in changed}, {float(v) for v in unchanged}
    if not changed_set or not unchanged_set:
        raise InputError("Give at least one CHANGED code and one UNCHANGED code for the reference.")
    both = changed_set & unchanged_set
    if both:
        raise InputError(
            f"Reference code {sorted(both)[0]:g} is listed as both changed and unchanged. List each code once."
        )
    is_changed = np.isin(ref, list(changed_set))
    is_unchanged = np.isin(ref, list(unchanged_set))
    labelled = is_changed | is_unchanged
    known = labelled | np.isin(ref, [float(v) for v in ignore] + [float(UNKNOWN)])
    if ref.dtype.kind == "f":
        known |= np.isnan(ref)
    if not known.all():
        odd = np.unique(ref[~known])
        shown = ", ".join(f"{v:g}" for v in odd[:5]) + (" ..." if odd.size > 5 else "")
        raise InputError(
            f"The reference contains code(s) {shown} that are not listed as changed "
            f"({', '.join(f'{v:g}' for v in sorted(changed_set))}), unchanged "
            f"({', '.join(f'{v:g}' for v in sorted(unchanged_set))}) or ignored. Set the reference encoding "
            "(e.g. Bay Area / Santa Barbara: changed 1, unchanged 2, ignore 0)."
        )
    return is_changed & labelled, labelled


def reference_from_masks(changed_mask: np.ndarray, unchanged_mask: np.ndarray) -> np.ndarray:
    """uint8 reference 1 = changed, 0 = unchanged, 255 = unlabelled from two masks (nonzero = set).

    For Taizhou-style labels (change.bmp 255 = changed, unchanged.bmp 255 = unchanged). A pixel set in both
    masks is contradictory and becomes 255 (not scored).
    """
    c, u = np.asarray(changed_mask) != 0, np.asarray(unchanged_mask) != 0
    if c.shape != u.shape:
        raise InputError(
            f"The changed mask is {c.shape[1]} x {c.shape[0]} pixels but the unchanged mask is "
            f"{u.shape[1]} x {u.shape[0]}. Both masks must cover the same grid."
        )
    out = np.full(c.shape, UNKNOWN, dtype=np.uint8)
    out[c & ~u] = 1
    out[u & ~c] = 0
    return out


def confusion(pred: np.ndarray, ref_changed: np.ndarray, labelled: np.ndarray) -> np.ndarray:
    """2 x 2 int64 counts [[TN, FP], [FN, TP]] over the labelled pixels (rows = reference, cols = prediction)."""
    p = np.asarray(pred, dtype=bool)[labelled]
    r = np.asarray(ref_changed, dtype=bool)[labelled]
    tp = int(np.count_nonzero(p & r))
    fp = int(np.count_nonzero(p & ~r))
    fn = int(np.count_nonzero(~p & r))
    tn = int(p.size - tp - fp - fn)
    return np.array([[tn, fp], [fn, tp]], dtype=np.int64)


confusion_matrix = confusion


def metrics_from_confusion(cm: np.ndarray) -> dict:
    """OA, Cohen's kappa, F1, precision, recall, false/missed alarm rates and the counts, from [[TN, FP], [FN, TP]].

    Precision/recall/F1 are 0 when their denominator is 0; kappa is NaN when chance agreement is 1
    (every labelled pixel and every prediction in one class).
    """
    (tn, fp), (fn, tp) = (int(v) for v in cm[0]), (int(v) for v in cm[1])
    n = tn + fp + fn + tp
    if n == 0:
        raise InputError(
            "No labelled pixel to score: the reference has no changed/unchanged pixel where the "
            "change map is valid. Check the reference encoding and that both cover the same area."
        )
    oa = (tp + tn) / n
    pe = ((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)) / (n * n)
    kappa = (oa - pe) / (1.0 - pe) if pe < 1.0 else float("nan")
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "OA": float(oa),
        "kappa": float(kappa),
        "F1": float(f1),
        "precision": float(precision),
        "recall": float(recall),
        "false_alarm_rate": float(fp / (fp + tn)) if fp + tn else 0.0,
        "missed_alarm_rate": float(fn / (fn + tp)) if fn + tp else 0.0,
        "TP": tp,
        "FP": fp,
        "TN": tn,
        "FN": fn,
        "n_labelled": n,
        "n_changed_ref": tp + fn,
        "n_unchanged_ref": tn + fp,
    }


def change_metrics(
    pred: np.ndarray,
    reference: np.ndarray,
    changed: Sequence[float] = (1,),
    unchanged: Sequence[float] = (0,),
    ignore: Sequence[float] = (),
) -> dict:
    """Scores of a binary change map (1 changed / 0 unchanged / other = nodata) on the labelled pixels.

    Returns OA, kappa, F1, precision, recall, false_alarm_rate, missed_alarm_rate, TP/FP/TN/FN, n_labelled,
    n_changed_ref, n_unchanged_ref and n_unscored_nodata (labelled pixels the map has no value for).
    """
    pred = np.asarray(pred)
    reference = np.asarray(reference)
    if pred.shape != reference.shape:
        raise InputError(
            f"The change map has shape {pred.shape} but the reference {reference.shape}; they must cover the same grid."
        )
    ref_changed, labelled = reference_labels(reference, changed, unchanged, ignore)
    if pred.dtype == bool:
        p_valid = np.ones(pred.shape, dtype=bool)
        p_changed = pred
    else:
        p_changed = pred == 1
        p_valid = p_changed | (pred == 0)
    scored = labelled & p_valid
    out = metrics_from_confusion(confusion(p_changed, ref_changed, scored))
    out["n_unscored_nodata"] = int(np.count_nonzero(labelled & ~p_valid))
    return out


def _scored_scores(
    score: np.ndarray, reference: np.ndarray, changed, unchanged, ignore
) -> tuple[np.ndarray, np.ndarray]:
    score = np.asarray(score, dtype=np.float64)
    if score.shape != np.shape(reference):
        raise InputError(
            f"The score map has shape {score.shape} but the reference {np.shape(reference)}; "
            "they must cover the same grid."
        )
    ref_changed, labelled = reference_labels(reference, changed, unchanged, ignore)
    use = labelled & np.isfinite(score)
    s, y = score[use], ref_changed[use]
    if not y.any() or y.all():
        raise InputError(
            "AUC needs both changed and unchanged labelled pixels with a valid score; the reference "
            "has only one class there. Check the reference encoding."
        )
    return s, y


def roc_auc(
    score: np.ndarray,
    reference: np.ndarray,
    changed: Sequence[float] = (1,),
    unchanged: Sequence[float] = (0,),
    ignore: Sequence[float] = (),
) -> float:
    """Area under the ROC curve of a change score (higher = more change), from ranks (Mann-Whitney U).

    Tied scores get their average rank, i.e. a tie between a changed and an unchanged pixel counts 1/2.
    Pixels with a NaN/inf score are not scored.
    """
    s, y = _scored_scores(score, reference, changed, unchanged, ignore)
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(s.size, dtype=np.float64)
    # average ranks (1-based) over runs of equal values
    starts = np.r_[0, np.nonzero(sorted_s[1:] != sorted_s[:-1])[0] + 1]
    ends = np.r_[starts[1:], s.size]
    avg = 0.5 * (starts + 1 + ends)  # mean of ranks starts+1 .. ends
    ranks[order] = np.repeat(avg, ends - starts)
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


auc = roc_auc


def roc_curve(
    score: np.ndarray,
    reference: np.ndarray,
    changed: Sequence[float] = (1,),
    unchanged: Sequence[float] = (0,),
    ignore: Sequence[float] = (),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds): one point per distinct score, flagging ``score >= threshold``, from (0, 0) to (1, 1).

    The first threshold is +inf (nothing flagged). The trapezoid area under (fpr, tpr) equals :func:`roc_auc`.
    """
    s, y = _scored_scores(score, reference, changed, unchanged, ignore)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_run = np.r_[np.nonzero(s[1:] != s[:-1])[0], s.size - 1]
    tps = np.cumsum(y)[last_of_run]
    fps = (last_of_run + 1) - tps
    tpr = np.r_[0.0, tps / y.sum()]
    fpr = np.r_[0.0, fps / (y.size - y.sum())]
    thresholds = np.r_[np.inf, s[last_of_run]]
    return fpr, tpr, thresholds
