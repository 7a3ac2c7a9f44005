"""Classic unsupervised change detectors, used as baselines and for choosing HyperNet's training pixels.

Every detector takes the two dates as float arrays ``(bands, rows, cols)`` (raw values; NaN allowed on invalid
pixels) and the shared ``valid`` mask, and returns a float32 change intensity ``(rows, cols)`` -- higher means
more change -- with NaN on invalid pixels:

- ``cva``: change vector analysis, Euclidean norm of the difference of the per-date z-scored images.
- ``sam``: spectral angle (radians) between the raw spectra.
- ``irmad``: iteratively reweighted multivariate alteration detection (Nielsen 2007); the intensity is the
  square root of the chi-square statistic of the standardised MAD variates.
- ``pca_kmeans``: PCA-k-means (Celik 2009) on the CVA difference image; returns a binary map and a score.

``BASELINES`` maps method names to functions with the common ``(x1, x2, valid) -> intensity`` interface;
``DEFAULT_THRESHOLDS`` / ``DEFAULT_THRESHOLD_VALUES`` give each method's usual threshold.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .. import memory
from ..errors import InputError
from ..progress import Feedback, NullFeedback, check_cancelled
from .scaling import standardize

__all__ = [
    "cva",
    "sam",
    "irmad",
    "irmad_details",
    "pca_kmeans",
    "pca_kmeans_score",
    "chi2_sf",
    "BASELINES",
    "DEFAULT_THRESHOLDS",
    "DEFAULT_THRESHOLD_VALUES",
]


def _check_pair(x1: np.ndarray, x2: np.ndarray, valid: np.ndarray) -> None:
    if x1.ndim != 3 or x1.shape != x2.shape:
        raise ValueError(f"dates must be (bands, rows, cols) of equal shape, got {x1.shape} and {x2.shape}")
    if valid.shape != x1.shape[1:]:
        raise ValueError(f"valid mask {valid.shape} does not match images {x1.shape[1:]}")
    if not valid.any():
        raise InputError("No pixel is valid in both dates; check the nodata values and that the images overlap.")


def _with_nan(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    out = np.full(valid.shape, np.nan, dtype=np.float32)
    out[valid] = values
    return out


# ------------------------------------------------------------------------------------------------- CVA


def cva(x1: np.ndarray, x2: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Change vector analysis: ||z(x2) - z(x1)|| with each date z-scored per band over its own valid pixels.

    Idempotent on already standardised input, so it accepts raw or z-scored dates.
    """
    _check_pair(x1, x2, valid)
    z1, _ = standardize(x1, valid)
    z2, _ = standardize(x2, valid)
    acc = np.zeros(valid.shape, dtype=np.float64)
    for b in range(z1.shape[0]):
        d = z2[b].astype(np.float64) - z1[b]
        acc += d * d
    return _with_nan(np.sqrt(acc[valid]), valid)


# ------------------------------------------------------------------------------------------------- SAM


def sam(x1: np.ndarray, x2: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Spectral angle (radians, 0..pi) between the raw spectra of the two dates.

    Computed as 2 * atan2(|u - v|, |u + v|) on unit vectors (accurate for small angles, unlike arccos).
    Two all-zero spectra have angle 0; one all-zero spectrum against a non-zero one has angle pi/2.
    """
    _check_pair(x1, x2, valid)
    a = x1[:, valid].astype(np.float64)
    b = x2[:, valid].astype(np.float64)
    na, nb = np.linalg.norm(a, axis=0), np.linalg.norm(b, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        u, v = a / na, b / nb
        angle = 2.0 * np.arctan2(np.linalg.norm(u - v, axis=0), np.linalg.norm(u + v, axis=0))
    angle = np.where((na == 0) & (nb == 0), 0.0, angle)
    angle = np.where((na == 0) ^ (nb == 0), math.pi / 2, angle)
    return _with_nan(angle, valid)


# ---------------------------------------------------------------------------------------------- IR-MAD


def _erfc(x: np.ndarray) -> np.ndarray:
    """Complementary error function for x >= 0 (Chebyshev fit, relative error < 1.2e-7)."""
    t = 1.0 / (1.0 + 0.5 * x)
    poly = -1.26551223 + t * (
        1.00002368
        + t
        * (
            0.37409196
            + t
            * (
                0.09678418
                + t
                * (
                    -0.18628806
                    + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))
                )
            )
        )
    )
    return t * np.exp(-x * x + poly)


def chi2_sf(x: np.ndarray, dof: int) -> np.ndarray:
    """P(chi-square with ``dof`` degrees of freedom > x), for integer dof >= 1 (no SciPy needed).

    Uses Q(a + 1, y) = Q(a, y) + y^a e^-y / Gamma(a + 1) from Q(1, y) = e^-y or Q(1/2, y) = erfc(sqrt(y)),
    with y = x / 2, the terms summed in log space.
    """
    if dof < 1:
        raise ValueError("dof must be >= 1")
    y = np.maximum(np.asarray(x, dtype=np.float64), 0.0) / 2.0
    if dof % 2 == 0:
        q = np.exp(-y)
        a0 = 1.0
    else:
        q = _erfc(np.sqrt(y))
        a0 = 0.5
    n_terms = (dof - 2 * a0) / 2.0  # number of steps from a0 to dof/2
    with np.errstate(divide="ignore"):
        logy = np.log(y)
    for i in range(int(round(n_terms))):
        a = a0 + i
        term = np.exp(a * logy - y - math.lgamma(a + 1.0))
        q = q + np.where(y > 0, term, 0.0)
    return np.clip(q, 0.0, 1.0)


def _chunk_columns(p: int) -> int:
    """Columns per chunk of IR-MAD's float64 work on 2p rows: about 32 MB."""
    return max(1024, (32 * 2**20) // (16 * max(1, p)))


def _weighted_moments(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean (2p,) and covariance (2p, 2p) of the stacked pixels [x; y] (columns = pixels), by chunks."""
    p = x.shape[0]
    chunk = _chunk_columns(p)
    sw = float(w.sum())
    mean = np.concatenate([(x @ w) / sw, (y @ w) / sw]).astype(np.float64)
    cov = np.zeros((2 * p, 2 * p), dtype=np.float64)
    for s in range(0, x.shape[1], chunk):
        z = np.concatenate([x[:, s : s + chunk], y[:, s : s + chunk]]).astype(np.float64) - mean[:, None]
        z *= np.sqrt(w[s : s + chunk])
        cov += z @ z.T  # (one operand and its transpose: numpy's symmetric rank-k update, half the work)
    return mean, cov / sw


def _chi2(
    x: np.ndarray, y: np.ndarray, ca: np.ndarray, cb: np.ndarray, mean: np.ndarray, var: np.ndarray
) -> np.ndarray:
    """sum_i M_i^2 / var_i of the MAD variates M = ca^T (x - mean_x) - cb^T (y - mean_y), by chunks, in the
    transform's precision."""
    p = x.shape[0]
    chunk = _chunk_columns(p)
    out = np.empty(x.shape[1], dtype=ca.dtype)
    for s in range(0, x.shape[1], chunk):
        mad = ca.T @ (x[:, s : s + chunk] - mean[:p, None]) - cb.T @ (y[:, s : s + chunk] - mean[p:, None])
        out[s : s + chunk] = np.sum(mad * mad / var[:, None], axis=0)
    return out


def _row_strips(rows: int, strip_rows: int | None) -> list[tuple[int, int]]:
    step = rows if not strip_rows else max(1, int(strip_rows))
    return [(r, min(rows, r + step)) for r in range(0, rows, step)]


def _pixel_rows(x, r0: int, r1: int) -> np.ndarray:
    """Rows r0:r1 of a date as (rows, cols, bands): a window source's stored layout (``x.pixels``, no copy of the
    bands' order), or a view of an array."""
    if hasattr(x, "pixels"):
        return x.pixels(r0, r1)
    return np.moveaxis(np.asarray(x[:, r0:r1, :]), 0, -1)


def _irmad_sample(
    x1, x2, valid: np.ndarray, strips: list[tuple[int, int]], every: int, feedback: Feedback
) -> tuple[np.ndarray, np.ndarray]:
    """Every ``every``-th valid pixel (row-major order) of both dates as float32 columns (bands, pixels), read
    strip by strip from arrays or window sources (``x[:, r0:r1, :]`` or ``x.pixels(r0, r1)``); from sources that
    read single pixels (``x.pixels_at``: a windowed pair's scratch files) only those pixels are read."""
    if every > 1 and hasattr(x1, "pixels_at") and hasattr(x2, "pixels_at"):
        check_cancelled(feedback)
        at = np.flatnonzero(valid)[::every]
        return np.ascontiguousarray(x1.pixels_at(at).T), np.ascontiguousarray(x2.pixels_at(at).T)
    parts1, parts2 = [], []
    seen = 0
    for r0, r1 in strips:
        check_cancelled(feedback)
        v = valid[r0:r1]
        m = int(v.sum())
        if not m:
            continue
        a = _pixel_rows(x1, r0, r1)[v]
        b = _pixel_rows(x2, r0, r1)[v]
        if every > 1:
            take = (np.arange(seen, seen + m) % every) == 0
            a, b = a[take], b[take]
        parts1.append(a.astype(np.float32, copy=False).T)
        parts2.append(b.astype(np.float32, copy=False).T)
        seen += m
    if len(parts1) == 1:
        return np.ascontiguousarray(parts1[0]), np.ascontiguousarray(parts2[0])
    return np.concatenate(parts1, axis=1), np.concatenate(parts2, axis=1)


def _transform_on_stored_values(
    bands: int,
    keep: np.ndarray,
    ca: np.ndarray,
    cb: np.ndarray,
    mean: np.ndarray,
    centring: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The final MAD transform as it applies to the dates' stored values (all bands): M = (x - l1) A - (y - l2) B
    - offset, so that a strip needs one subtraction and one matrix product a date and no selection of bands.

    ``ca^T ((x_keep - loc1) / scale1 - mean_1)`` is ``(ca / scale1)^T (x_keep - loc1) - ca^T mean_1``: A is
    ``ca / scale1`` on the kept bands and 0 on the others (l1: loc1 there, 0 elsewhere). float32, from the
    float64 fit; the centring stays a subtraction (folding it into the offset would cancel in float32 on raw
    values far from 0)."""
    loc1, scale1, loc2, scale2 = centring
    p = ca.shape[1]
    a_all, b_all = np.zeros((bands, p)), np.zeros((bands, p))
    l1, l2 = np.zeros(bands), np.zeros(bands)
    a_all[keep], b_all[keep] = ca / scale1, cb / scale2
    l1[keep], l2[keep] = loc1[:, 0], loc2[:, 0]
    offset = ca.T @ mean[:p] - cb.T @ mean[p:]
    return tuple(t.astype(np.float32) for t in (l1, a_all, l2, b_all, offset))  # type: ignore[return-value]


def _centred_pixels(x, r0: int, r1: int, loc: np.ndarray) -> np.ndarray:
    """Rows r0:r1 of a date minus ``loc`` (bands,), as a (pixels, bands) float32 matrix (in place in a window
    source's fresh read; an array's bands are read through a transposed view)."""
    if hasattr(x, "pixels"):
        m = x.pixels(r0, r1).reshape(-1, int(x.shape[0]))
        m -= loc
        return m
    return np.asarray(x[:, r0:r1, :], dtype=np.float32).reshape(int(x.shape[0]), -1).T - loc


def _chi2_of_rows(x1, x2, r0: int, r1: int, transform: tuple[np.ndarray, ...], var: np.ndarray) -> np.ndarray:
    """chi2 of every pixel of rows r0:r1 (row-major, invalid pixels included), float32."""
    l1, a, l2, b, offset = transform
    mad = _centred_pixels(x1, r0, r1, l1) @ a
    mad -= _centred_pixels(x2, r0, r1, l2) @ b
    mad -= offset
    mad *= mad
    mad /= var
    return mad.sum(axis=1)


def irmad_details(
    x1,
    x2,
    valid: np.ndarray,
    max_iter: int = 50,
    tol: float = 1e-6,
    ridge: float = 1e-9,
    *,
    strip_rows: int | None = None,
    sample_pixels: int | None = None,
    feedback: Feedback | None = None,
    probability: bool = True,
) -> dict:
    """IR-MAD (Nielsen 2007) with everything it computed: chi2 map, correlations, iterations, weights.

    Each iteration: weighted canonical correlation analysis of the two dates (weights = probability of no
    change from the previous iteration, all 1 at first), MAD variates M_i = U_i - V_i with variance
    2 (1 - rho_i), chi2 = sum_i M_i^2 / var(M_i), new weights = P(chi2_p > chi2). Stops when the canonical
    correlations change by less than ``tol`` or after ``max_iter`` iterations. Bands constant in either date
    are left out; ``ridge`` (relative to the mean variance) keeps near-singular covariances invertible.

    ``x1``/``x2`` are arrays or window sources (``x[:, r0:r1, :]``, e.g. a windowed pair's scratch files): the
    dates are read by strips of ``strip_rows`` rows (by default all rows at once, or strips of
    ``memory.STRIP_VALUES`` values when the scene is sampled). The iterations run on at
    most ``sample_pixels`` valid pixels (default ``memory.irmad_sample_pixels(bands)``: all of them up to about
    37 000 pixels of 224 bands; beyond, every k-th in row-major order); the final transform then gives every
    pixel its chi2 in a second pass. IR-MAD is invariant to per-band affine maps, so raw and standardised dates
    give one result. ``probability``: also map every pixel's no-change probability P(chi2_p > chi2) (112 terms a
    pixel at 224 bands; :func:`irmad` does not need it).
    """
    feedback = feedback or NullFeedback()
    _check_pair(x1, x2, valid)
    n = int(valid.sum())
    every = max(1, math.ceil(n / (sample_pixels or memory.irmad_sample_pixels(int(x1.shape[0])))))
    if strip_rows is None and every > 1:  # a sample of a large scene: never a whole-date copy
        strip_rows = max(1, memory.STRIP_VALUES // (int(x1.shape[0]) * valid.shape[1]))
    strips = _row_strips(valid.shape[0], strip_rows)
    a, b = _irmad_sample(x1, x2, valid, strips, every, feedback)
    keep = (a.std(axis=1) > 0) & (b.std(axis=1) > 0)
    if keep.sum() < 1:
        raise InputError("IR-MAD needs at least one band that is not constant in both dates.")
    a, b = a[keep], b[keep]
    # centre and scale each date (MAD is invariant to this; it only helps the numerics)
    loc1, scale1 = a.mean(axis=1, keepdims=True), a.std(axis=1, keepdims=True)
    loc2, scale2 = b.mean(axis=1, keepdims=True), b.std(axis=1, keepdims=True)
    a -= loc1  # (in place: a and b are the sample's own copies)
    a /= scale1
    b -= loc2
    b /= scale2
    p, ns = a.shape
    w = np.ones(ns, dtype=np.float64)
    rho_prev = None
    iterations = 0
    converged = False
    for iterations in range(1, max_iter + 1):  # noqa: B007 (the count is reported after the loop)
        check_cancelled(feedback)
        mean, cov = _weighted_moments(a, b, w)
        sxx, syy, sxy = cov[:p, :p], cov[p:, p:], cov[:p, p:]
        sxx = sxx + ridge * np.trace(sxx) / p * np.eye(p)
        syy = syy + ridge * np.trace(syy) / p * np.eye(p)
        lx, ly = np.linalg.cholesky(sxx), np.linalg.cholesky(syy)
        k = np.linalg.solve(lx, np.linalg.solve(ly, sxy.T).T)  # Lx^-1 Sxy Ly^-T
        u, rho, vt = np.linalg.svd(k)
        rho = np.clip(rho, 0.0, 1.0)
        ca = np.linalg.solve(lx.T, u)  # canonical vectors: a_i^T Sxx a_i = 1
        cb = np.linalg.solve(ly.T, vt.T)
        # MAD variates on the weighted-mean-centred data, smallest correlation first
        order = np.argsort(rho)
        rho, ca, cb = rho[order], ca[:, order], cb[:, order]
        var = np.maximum(2.0 * (1.0 - rho), 1e-12)
        chi2 = _chi2(a, b, ca, cb, mean, var)
        w = chi2_sf(chi2, p)
        if rho_prev is not None and np.max(np.abs(rho - rho_prev)) < tol:
            converged = True
            break
        rho_prev = rho
    if w.sum() <= 0:
        raise InputError("IR-MAD failed: every pixel looks changed. The dates may not overlap or be misregistered.")
    del a, b
    if every == 1:  # the sample is every valid pixel, in the map's order
        chi2_map = _with_nan(chi2, valid)
    else:  # the final transform on every pixel, strip by strip
        chi2_map = np.full(valid.shape, np.nan, dtype=np.float32)
        # in float32 (twice the speed of float64 on every pixel; the transform came from float64 iterations)
        transform = _transform_on_stored_values(int(x1.shape[0]), keep, ca, cb, mean, (loc1, scale1, loc2, scale2))
        var32 = var.astype(np.float32)
        for r0, r1 in strips:
            check_cancelled(feedback)
            v = valid[r0:r1]
            if v.any():
                with np.errstate(over="ignore", invalid="ignore"):  # (nodata values of invalid pixels, dropped)
                    chi2_map[r0:r1][v] = _chi2_of_rows(x1, x2, r0, r1, transform, var32)[v.ravel()]
    details = {
        "chi2": chi2_map,
        "rho": rho.tolist(),
        "iterations": iterations,
        "converged": converged,
        "bands_used": (np.nonzero(keep)[0] + 1).tolist(),
        "sampled_every": every,
    }
    if probability:
        details["no_change_probability"] = _with_nan(chi2_sf(chi2_map[valid], p), valid)
    return details


def irmad(x1, x2, valid: np.ndarray, *, strip_rows: int | None = None, feedback: Feedback | None = None) -> np.ndarray:
    """IR-MAD change intensity: sqrt of the chi-square statistic of the MAD variates (NaN invalid).

    The square root (the length of the standardised MAD vector, CVA's scale) ranks pixels exactly as the
    chi-square does (same AUC) but is far less long-tailed, so Otsu / k-means find the changed mode:
    Taizhou kappa 0.934 with k-means, as in FINDINGS.md (0.23 on the raw chi-square).
    ``irmad_details(...)["chi2"]`` gives the statistic itself; ``strip_rows``: see irmad_details.
    """
    return np.sqrt(irmad_details(x1, x2, valid, strip_rows=strip_rows, feedback=feedback, probability=False)["chi2"])


# ----------------------------------------------------------------------------------------- PCA-k-means


def _project_neighbourhoods(
    d: np.ndarray, valid: np.ndarray, h: int, mean: np.ndarray, basis: np.ndarray, chunk_rows: int = 256
) -> np.ndarray:
    """Features of the valid pixels: each pixel's h x h window (rows r - h//2 .. r + (h-1)//2, mirrored at the
    borders) minus ``mean``, projected on ``basis`` (h*h, s). Row chunks keep memory at O(pixels * s)."""
    lo, hi = h // 2, (h - 1) // 2
    padded = np.pad(d, ((lo, hi), (lo, hi)), mode="symmetric")
    win = np.lib.stride_tricks.sliding_window_view(padded, (h, h))  # a view: (rows, cols, h, h)
    parts = []
    for r in range(0, d.shape[0], chunk_rows):
        block = win[r : r + chunk_rows].reshape(-1, h * h)
        parts.append((block[valid[r : r + chunk_rows].ravel()] - mean) @ basis)
    return np.concatenate(parts)


def pca_kmeans(
    x1: np.ndarray, x2: np.ndarray, valid: np.ndarray, h: int = 4, variance: float = 0.9, max_iter: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """PCA-k-means (Celik 2009) -> (binary uint8 1/0/255, score float32 with NaN invalid).

    Difference image: the CVA magnitude (invalid pixels 0). The principal components are learned from the
    non-overlapping h x h blocks that hold no invalid pixel; each pixel's feature vector is its h x h
    neighbourhood projected on the leading components that explain ``variance`` of the total. Two-means
    clustering (started from the means of the pixels below the median and above the 95th percentile of the
    difference, so it is deterministic); the cluster with the larger mean difference is "changed".
    ``score`` = distance to the unchanged centre minus distance to the changed centre, so score > 0 exactly
    where the binary map says changed.
    """
    _check_pair(x1, x2, valid)
    if h < 2:
        raise ValueError("block size h must be >= 2")
    rows, cols = valid.shape
    d = np.nan_to_num(cva(x1, x2, valid), nan=0.0).astype(np.float64)
    # PCA basis from non-overlapping blocks
    br, bc = rows // h, cols // h
    if br == 0 or bc == 0:
        raise InputError(f"The image ({cols} x {rows}) is smaller than one {h} x {h} block; use a larger area.")
    blocks = d[: br * h, : bc * h].reshape(br, h, bc, h).transpose(0, 2, 1, 3).reshape(-1, h * h)
    vblocks = valid[: br * h, : bc * h].reshape(br, h, bc, h).transpose(0, 2, 1, 3).reshape(-1, h * h).all(axis=1)
    if vblocks.sum() >= 2:
        blocks = blocks[vblocks]
    mean = blocks.mean(axis=0)
    cov = np.cov(blocks - mean, rowvar=False, bias=True)
    evals, evecs = np.linalg.eigh(cov)
    evals, evecs = evals[::-1], evecs[:, ::-1]
    total = evals.sum()
    if total > 0:
        s = int(np.searchsorted(np.cumsum(evals) / total, variance) + 1)
    else:
        s = 1
    s = max(1, min(s, h * h))
    feats = _project_neighbourhoods(d, valid, h, mean, evecs[:, :s])
    dv = d[valid]
    # deterministic 2-means
    lo_sel = dv <= np.median(dv)
    hi_sel = dv >= np.quantile(dv, 0.95)
    if not hi_sel.any() or hi_sel.all():
        hi_sel = dv >= dv.max()
    c = np.stack([feats[lo_sel].mean(axis=0), feats[hi_sel].mean(axis=0)])
    labels: np.ndarray | None = None
    for _ in range(max_iter):
        dist = ((feats[:, None, :] - c[None]) ** 2).sum(axis=2)
        new = np.argmin(dist, axis=1)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        for k in (0, 1):
            if (labels == k).any():
                c[k] = feats[labels == k].mean(axis=0)
    if labels is not None and (labels == 0).any() and (labels == 1).any():
        changed_k = int(dv[labels == 1].mean() >= dv[labels == 0].mean())
    else:
        changed_k = 1  # one cluster took every pixel: keep the high-difference start as "changed" (none)
    dist = np.sqrt(((feats[:, None, :] - c[None]) ** 2).sum(axis=2))
    score = dist[:, 1 - changed_k] - dist[:, changed_k]
    binary = np.full(valid.shape, 255, dtype=np.uint8)
    binary[valid] = (score > 0).astype(np.uint8)
    return binary, _with_nan(score, valid)


def pca_kmeans_score(x1: np.ndarray, x2: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """PCA-k-means as an intensity (the score); threshold it at 0 (fixed) to get the k-means decision."""
    return pca_kmeans(x1, x2, valid)[1]


BASELINES: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "cva": cva,
    "sam": sam,
    "irmad": irmad,
    "pca_kmeans": pca_kmeans_score,
}

# The usual threshold per method; "fixed" uses DEFAULT_THRESHOLD_VALUES.
DEFAULT_THRESHOLDS: dict[str, str] = {"cva": "otsu", "sam": "otsu", "irmad": "kmeans", "pca_kmeans": "fixed"}
DEFAULT_THRESHOLD_VALUES: dict[str, float] = {"pca_kmeans": 0.0}
