"""Per-band standardisation (z-scores) of one date, or of both dates with pooled statistics.

Why each date on its own: two acquisitions of the same place differ by gains and offsets (sun, atmosphere,
sensor calibration) that are not change. On Taizhou the dates differ by 15-22 DN in five of six bands; any
method that does not normalise each date scores at or below chance there (shared FINDINGS.md, diagnostics 1-2).
Z-scoring each date per band removes a per-band gain and offset between the dates.

Conventions (the network needs finite input):
- statistics are computed over the ``valid`` pixels only;
- invalid pixels are set to 0 in the output (the band mean), so they never produce NaN/inf downstream --
  callers must still ignore them via ``valid``;
- a constant band (zero spread over the valid pixels) becomes all 0 instead of NaN, and is listed in
  ``stats["constant_bands"]`` (1-based).
Statistics are plain Python lists so they can go into JSON (model metadata, reports).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

__all__ = ["band_stats", "apply_stats", "standardize", "standardize_joint"]

# A band whose standard deviation is below this fraction of its mean magnitude is treated as constant
# (float32 rounding alone gives about 6e-8).
_CONSTANT_RTOL = 1e-6


def _check(x: np.ndarray, valid: np.ndarray) -> None:
    if x.ndim != 3:
        raise ValueError(f"expected (bands, rows, cols), got shape {x.shape}")
    if valid.shape != x.shape[1:]:
        raise ValueError(f"valid mask {valid.shape} does not match image {x.shape[1:]}")
    if not valid.any():
        raise InputError("No valid pixel to compute band statistics from. Check nodata values and masks.")


def band_stats(arrays: list[np.ndarray] | np.ndarray, valid: np.ndarray) -> dict:
    """Mean and (population) standard deviation per band over the valid pixels of one or more dates."""
    if isinstance(arrays, np.ndarray):
        arrays = [arrays]
    for x in arrays:
        _check(x, valid)
    bands = arrays[0].shape[0]
    mean, std, constant = [], [], []
    for b in range(bands):
        v = np.concatenate([x[b][valid].astype(np.float64) for x in arrays])
        m = float(v.mean())
        s = float(np.sqrt(np.mean((v - m) ** 2)))
        if not np.isfinite(m) or not np.isfinite(s):
            raise InputError(f"Band {b + 1} has non-finite values on valid pixels; check the input's nodata.")
        if s <= _CONSTANT_RTOL * abs(m) or s == 0.0:
            constant.append(b + 1)
        mean.append(m)
        std.append(s)
    return {
        "method": "zscore",
        "mean": mean,
        "std": std,
        "constant_bands": constant,
        "n_valid": int(valid.sum()),
    }


def apply_stats(x: np.ndarray, valid: np.ndarray, stats: dict) -> np.ndarray:
    """(x - mean) / std per band as float32; constant bands and invalid pixels become 0."""
    if x.shape[0] != len(stats["mean"]):
        raise ValueError(f"image has {x.shape[0]} bands but the statistics have {len(stats['mean'])}")
    if valid.shape != x.shape[1:]:
        raise ValueError(f"valid mask {valid.shape} does not match image {x.shape[1:]}")
    constant = set(stats.get("constant_bands", []))
    out = np.zeros(x.shape, dtype=np.float32)
    for b in range(x.shape[0]):
        if b + 1 in constant:
            continue
        z = (x[b].astype(np.float64) - stats["mean"][b]) / stats["std"][b]
        out[b] = np.where(valid, z, 0.0)
    return out


def standardize(x: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, dict]:
    """Per-band z-score of ONE date over its own valid pixels -> (float32 xs, stats).

    Invalid pixels are 0 in ``xs`` and constant bands are all 0 (see the module docstring).
    """
    stats = band_stats(x, valid)
    return apply_stats(x, valid, stats), stats


def standardize_joint(x1: np.ndarray, x2: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """Both dates z-scored with statistics pooled over both (keeps a global gain/offset difference).

    An option for comparisons; ``standardize`` per date is the default because it removes the
    radiometric differences between acquisitions.
    """
    if x1.shape != x2.shape:
        raise ValueError(f"dates differ in shape: {x1.shape} vs {x2.shape}")
    stats = band_stats([x1, x2], valid)
    stats["method"] = "zscore-joint"
    return apply_stats(x1, valid, stats), apply_stats(x2, valid, stats), stats
