"""Scoring a change map file against a reference raster file (no torch needed)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ..io import raster_io
from ..options import NODATA  # noqa: F401 (one home: core/options.py)
from .metrics import change_metrics, roc_auc


@dataclass
class EvaluationInputs:
    """A change map (binary 1/0 or an intensity) and reference codes on the same grid."""

    prediction: np.ndarray  # uint8 1/0/255 when binary, else float32 score with NaN
    score: np.ndarray  # float32, NaN where the map has no value
    reference: np.ndarray  # float reference codes, NaN where the reference has no value
    is_binary: bool


def read_evaluation_inputs(change: str, reference: str) -> EvaluationInputs:
    """Read band 1 of both rasters; refuse different grids; tell a binary map from an intensity."""
    info_c, info_r = raster_io.raster_info(change), raster_io.raster_info(reference)
    if (info_c.rows, info_c.cols) != (info_r.rows, info_r.cols):
        raise InputError(
            f"The change map is {info_c.cols}x{info_c.rows} pixels but the reference is {info_r.cols}x{info_r.rows}; "
            "they must cover the same grid."
        )
    if info_c.has_georeference and info_r.has_georeference:  # a reference without georeference: size only
        raster_io.check_same_grid_2d(info_c, info_r, ("The change map", "the reference"))
    pred, pvalid, _ = raster_io.read_raster(change, [1])
    ref, rvalid, _ = raster_io.read_raster(reference, [1])
    pred, ref = pred[0], ref[0]
    values = pred[pvalid]
    is_binary = bool(values.size > 0 and np.all(np.isin(values, (0, 1))))
    score = np.where(pvalid, pred, np.nan).astype(np.float32)
    prediction = np.where(pvalid, pred, NODATA).astype(np.uint8) if is_binary else score
    return EvaluationInputs(prediction, score, np.where(rvalid, ref, np.nan), is_binary)


def evaluate_files(
    change: str,
    reference: str,
    *,
    changed: Sequence[float] = (1,),
    unchanged: Sequence[float] = (0,),
    ignore: Sequence[float] = (),
) -> dict[str, Any]:
    """OA, kappa, F1, precision, recall (binary maps) and the AUC of a change map against a reference raster."""
    inputs = read_evaluation_inputs(change, reference)
    kw = {"changed": changed, "unchanged": unchanged, "ignore": ignore}
    out: dict[str, Any] = change_metrics(inputs.prediction, inputs.reference, **kw) if inputs.is_binary else {}
    out["AUC"] = float(roc_auc(inputs.score, inputs.reference, **kw))
    out["input_kind"] = "binary" if inputs.is_binary else "intensity"
    return out
