"""The default change intensity: HyperNet's feature distance averaged with classic evidence (IR-MAD and CVA).

Why (BENCHMARKS.md, issue 10): on the benchmark pairs HyperNet's own ranking of change is limited (its best
possible threshold gives kappa 0.80 on salinasA_pair, 0.77-0.80 on salinasA_pair_hard, 0.87 on Taizhou), and it
varies with the seed; IR-MAD and CVA rank change differently (IR-MAD near perfectly on the AVIRIS pairs, but
with a tail that defeats Otsu and k-means). Their average ranks change better than any of them alone and
varies much less with the seed (kappa sd <= 0.01).

The recipe, each step scale-free so that no weight is tuned:

1. three root distances: HyperNet's root mean squared feature difference (``sqrt(mse)``), IR-MAD's
   ``sqrt(chi2)`` and CVA's norm of the z-scored difference;
2. each divided by its median over the valid pixels (the typical, mostly unchanged, distance), so that
   ``2`` reads "twice the usual difference" in every detector;
3. their mean is the fused intensity;
4. a two-component Gaussian mixture is fitted to it (``thresholds.fit_mixture``): the classes have different
   spreads and shares, which Otsu ignores;
5. the change map is that mixture's, regularised by a Potts Markov random field over each pixel's 5x5
   neighbourhood (``thresholds.mrf_change``, threshold method "mrf"): uncertain pixels follow their neighbours,
   pixels with strong evidence keep their label. ``--threshold mixture`` gives the pixel-wise split alone.

``evidence="hypernet"`` keeps HyperNet alone (the intensity is then the MSE, thresholded by Otsu on its root).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import memory
from .errors import InputError
from .options import DEFAULT_EVIDENCE, EVIDENCE_MODES  # noqa: F401 (one home: core/options.py)
from .progress import Feedback

#: The classic detectors whose (median-normalised) intensities are averaged with HyperNet's.
CLASSIC_EVIDENCE = ("irmad", "cva")
#: Threshold used when the caller asks for "auto": the mixture regularised by its neighbours (mrf) for the fused
#: intensity, Otsu on the root for HyperNet alone (whose mixture, with or without the MRF, varies with the seed:
#: kappa 0.44-0.81 on salinasA_pair, BENCHMARKS.md).
AUTO_THRESHOLD = {"fused": "mrf", "hypernet": "otsu"}


def check_evidence(evidence: str) -> str:
    """The evidence mode, or InputError naming the valid ones."""
    if evidence not in EVIDENCE_MODES:
        raise InputError(f"Unknown evidence {evidence!r}; use one of {', '.join(EVIDENCE_MODES)}.")
    return evidence


def ratio_to_median(score: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``score`` divided by its median over the valid finite pixels (float32, NaN where not valid)."""
    ok = valid & np.isfinite(score)
    if not ok.any():
        raise InputError("The change intensity has no valid pixel; the inputs are all nodata.")
    med = float(np.median(score[ok]))
    if not med > 0:  # more than half the pixels have zero distance: fall back to the mean of the positive ones
        pos = score[ok][score[ok] > 0]
        med = float(pos.mean()) if pos.size else 1.0
    out = np.where(ok, score / med, np.nan)
    return out.astype(np.float32)


def classic_evidence(
    pair: Any, memory_budget_mb: float | None = None, feedback: Feedback | None = None
) -> dict[str, np.ndarray]:
    """The classic intensities of ``CLASSIC_EVIDENCE`` for a pair (``core.pair.ImagePair``), on either route.

    IR-MAD's ``sqrt(chi2)`` on the standardised dates (IR-MAD is invariant to per-band affine maps), read by
    strips within ``memory_budget_mb`` (the scratch files of a windowed pair, or the arrays); CVA is the pair's
    pre-detection score (the norm of the standardised difference, already computed for mask g).
    """
    from .classic.baselines import irmad

    strip_rows = None
    if memory_budget_mb:
        strip_rows = memory.irmad_strip_rows(memory_budget_mb, pair.band_count, pair.valid.shape[1])
    return {
        "irmad": irmad(pair.x1s, pair.x2s, pair.valid, strip_rows=strip_rows, feedback=feedback),
        "cva": pair.pre_detection_score(),
    }


def fuse(hypernet_mse: np.ndarray, classic: dict[str, np.ndarray], valid: np.ndarray) -> np.ndarray:
    """Mean of the median-normalised root distances: HyperNet's ``sqrt(mse)`` and each classic intensity."""
    maps = [ratio_to_median(np.sqrt(np.maximum(hypernet_mse, 0.0)), valid)]
    maps += [ratio_to_median(classic[name], valid) for name in CLASSIC_EVIDENCE]
    out = np.mean(np.stack(maps), axis=0)
    out[~valid] = np.nan
    return out.astype(np.float32)


def resolve_threshold(threshold: str | None, evidence: str) -> str:
    """The threshold method to use: ``auto`` (or None) becomes the evidence mode's default."""
    if threshold in (None, "auto"):
        return AUTO_THRESHOLD[evidence]
    return threshold
