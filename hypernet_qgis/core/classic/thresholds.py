"""Thresholds that split a change-intensity map into changed / unchanged.

Convention everywhere: a pixel is CHANGED when its intensity is strictly greater than the threshold.
Only finite values are used (NaN marks invalid pixels).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..options import CHANGED, NODATA, THRESHOLD_METHODS, UNCHANGED  # noqa: F401 (one home: core/options.py)

__all__ = ["otsu_threshold", "kmeans_threshold", "mixture_threshold", "compute_threshold", "choose_threshold",
           "binary_change", "METHODS", "CHANGED", "UNCHANGED", "NODATA", "threshold_feature_distance"]

METHODS = THRESHOLD_METHODS
def _finite_sorted(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise InputError("There is no valid intensity value to threshold (every pixel is invalid).")
    return np.sort(v)


def otsu_threshold(values: np.ndarray, bins: int | None = None) -> float:
    """Otsu's threshold: the split that maximises the between-class variance w0 * w1 * (mu0 - mu1)^2.

    ``bins=None`` (default) is exact: every split between two distinct sorted values is tried and the
    threshold is the midpoint of the gap at the best split. With ``bins`` the classic histogram version is
    used (threshold = the upper edge of the last bin of the lower class). A constant input returns its value
    (so nothing is flagged as changed).
    """
    v = _finite_sorted(values)
    if v[0] == v[-1]:
        return float(v[0])
    if bins is not None:
        counts, edges = np.histogram(v, bins=int(bins))
        centres = 0.5 * (edges[:-1] + edges[1:])
        w0 = np.cumsum(counts)[:-1].astype(np.float64)
        s0 = np.cumsum(counts * centres)[:-1]
        total, stotal = float(counts.sum()), float((counts * centres).sum())
        w1 = total - w0
        ok = (w0 > 0) & (w1 > 0)
        between = np.zeros_like(w0)
        between[ok] = w0[ok] * w1[ok] * (s0[ok] / w0[ok] - (stotal - s0[ok]) / w1[ok]) ** 2
        return float(edges[int(np.argmax(between)) + 1])
    n = v.size
    csum = np.cumsum(v)
    # candidate splits: after index k-1 (k values in the lower class), only where v[k-1] < v[k]
    k = np.nonzero(v[1:] > v[:-1])[0] + 1
    w0 = k.astype(np.float64)
    w1 = n - w0
    mu0 = csum[k - 1] / w0
    mu1 = (csum[-1] - csum[k - 1]) / w1
    between = w0 * w1 * (mu0 - mu1) ** 2
    best = k[int(np.argmax(between))]
    return float(0.5 * (v[best - 1] + v[best]))


def kmeans_threshold(values: np.ndarray, max_iter: int = 100) -> float:
    """Two-cluster 1-D k-means (Lloyd), centres started at the 10th and 90th percentiles (deterministic).

    Returns the midpoint of the two final centres. A constant input returns its value.
    Why not Otsu: Otsu's split IS the global optimum of 2-means, and on long-tailed change scores (IR-MAD,
    network distances) that optimum often cuts off a handful of extreme pixels. Lloyd's iteration started
    inside the bulk of the data settles on the split between the bulk and the changed mode instead
    (IR-MAD on salinasA_pair: kappa 0.65 vs 0.003 with Otsu or with min/max starts).
    """
    v = _finite_sorted(values)
    if v[0] == v[-1]:
        return float(v[0])
    csum = np.cumsum(v)
    n = v.size
    c0, c1 = (float(q) for q in np.quantile(v, [0.1, 0.9]))
    if c0 == c1:  # more than 80% of the values are equal: start from the extremes
        c0, c1 = float(v[0]), float(v[-1])
    split = -1
    for _ in range(max_iter):
        t = 0.5 * (c0 + c1)
        new_split = int(np.searchsorted(v, t, side="right"))  # v[:new_split] <= t
        if new_split == split or new_split in (0, n):
            break
        split = new_split
        c0 = float(csum[split - 1] / split)
        c1 = float((csum[-1] - csum[split - 1]) / (n - split))
    return float(0.5 * (c0 + c1))


#: Values the mixture is fitted to: this many evenly spaced order statistics of the intensity (deterministic).
MIXTURE_SAMPLE = 65536


def mixture_threshold(values: np.ndarray, max_iter: int = 200) -> float:
    """Threshold between the two components of a 1-D two-Gaussian mixture fitted by EM (started at Otsu's split).

    Returns the point between the two means where the weighted densities are equal (the Bayes split of the
    fitted mixture). Unlike Otsu, each class has its own variance and share, so a changed class with a long,
    spread-out tail (IR-MAD on 204 bands) does not pull the split into that tail (BENCHMARKS.md, issue 10).
    The fit uses ``MIXTURE_SAMPLE`` evenly spaced order statistics. A constant input returns its value.
    """
    v = _finite_sorted(values)
    if v[0] == v[-1]:
        return float(v[0])
    if v.size > MIXTURE_SAMPLE:
        v = v[np.linspace(0, v.size - 1, MIXTURE_SAMPLE).round().astype(np.int64)]
    t = otsu_threshold(v)
    lo, hi = v[v <= t], v[v > t]
    if lo.size == 0 or hi.size == 0:
        return float(t)
    scale = max(float(v[-1] - v[0]), 1e-300)
    w = np.array([lo.size, hi.size], dtype=np.float64) / v.size
    mu = np.array([lo.mean(), hi.mean()])
    sd = np.array([lo.std(), hi.std()]) + 1e-9 * scale
    for _ in range(max_iter):
        ll = -0.5 * ((v[:, None] - mu) / sd) ** 2 - np.log(sd) + np.log(np.maximum(w, 1e-300))
        ll -= ll.max(axis=1, keepdims=True)
        r = np.exp(ll)
        r /= r.sum(axis=1, keepdims=True)
        nk = np.maximum(r.sum(axis=0), 1e-12)
        mu_new = (r * v[:, None]).sum(axis=0) / nk
        sd_new = np.sqrt((r * (v[:, None] - mu_new) ** 2).sum(axis=0) / nk) + 1e-9 * scale
        done = bool(np.allclose(mu_new, mu, rtol=1e-6, atol=1e-12 * scale))
        w, mu, sd = nk / v.size, mu_new, sd_new
        if done:
            break
    i0, i1 = np.argsort(mu)
    grid = np.linspace(mu[i0], mu[i1], 2001)

    def log_density(i: int) -> np.ndarray:
        return -0.5 * ((grid - mu[i]) / sd[i]) ** 2 - np.log(sd[i]) + np.log(max(w[i], 1e-300))

    above = np.nonzero(log_density(i1) > log_density(i0))[0]
    return float(grid[above[0]]) if above.size else float(mu[i1])


def compute_threshold(values: np.ndarray, method: str = "otsu", value: float | None = None) -> float:
    """Threshold by name: 'otsu', 'kmeans', 'mixture' or 'fixed' (then ``value`` is required)."""
    method = method.lower()
    if method == "otsu":
        return otsu_threshold(values)
    if method in ("kmeans", "k-means"):
        return kmeans_threshold(values)
    if method == "mixture":
        return mixture_threshold(values)
    if method == "fixed":
        if value is None or not np.isfinite(value):
            raise InputError("A fixed threshold needs a finite THRESHOLD_VALUE. Give a number, or use otsu/kmeans.")
        return float(value)
    raise InputError(f"Unknown threshold method {method!r}. Use one of: {', '.join(METHODS)}.")


def choose_threshold(intensity: np.ndarray, valid: np.ndarray, method: str = "otsu", value: float | None = None) -> float:
    """The threshold on the valid pixels' intensity: Otsu, 2-cluster k-means, or a fixed value."""
    values = intensity[valid & np.isfinite(intensity)]
    if values.size == 0:
        raise InputError("The change intensity has no valid pixel; the inputs are all nodata.")
    return compute_threshold(values, method, value)


def binary_change(
    intensity: np.ndarray, valid: np.ndarray, method: str = "otsu", value: float | None = None
) -> tuple[np.ndarray, float]:
    """Binary change map (uint8: 1 change, 0 no change, 255 nodata) and the threshold used (change = above)."""
    threshold = choose_threshold(intensity, valid, method, value)
    ok = valid & np.isfinite(intensity)
    out = np.full(intensity.shape, NODATA, dtype=np.uint8)
    out[ok] = np.where(intensity[ok] > threshold, CHANGED, UNCHANGED)
    return out, threshold


def threshold_feature_distance(
    intensity: np.ndarray, valid: np.ndarray, method: str = "otsu", value: float | None = None
) -> tuple[np.ndarray, float]:
    """Binary map of a HyperNet intensity; Otsu and k-means work on its square root.

    The intensities are squared distances (MSE, RX) or distances of unit vectors (cosine) with a long upper tail;
    Otsu's split of the raw values lands far out in that tail (FINDINGS.md 3: 0.2 % of Taizhou flagged). On the
    square root (for MSE, the RMS feature distance, as CVA uses the norm, not its square) the split falls
    between the unchanged mode and the changed pixels (BENCHMARKS.md). The threshold is returned, and a fixed
    THRESHOLD is taken, in intensity units: change = intensity > threshold.
    """
    if method == "fixed":
        return binary_change(intensity, valid, "fixed", value)
    _, root = binary_change(np.sqrt(np.maximum(intensity, 0.0)), valid, method)
    return binary_change(intensity, valid, "fixed", float(root) ** 2)
