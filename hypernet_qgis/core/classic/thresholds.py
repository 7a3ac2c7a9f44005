"""Thresholds that split a change-intensity map into changed / unchanged.

Convention everywhere: a pixel is CHANGED when its intensity is strictly greater than the threshold, except in the
"mrf" map (``mrf_change``), where a pixel's label also depends on its neighbours' and the threshold reported is the
mixture's split the map starts from. Only finite values are used (NaN marks invalid pixels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..options import CHANGED, NODATA, THRESHOLD_METHODS, UNCHANGED  # noqa: F401 (one home: core/options.py)

__all__ = [
    "otsu_threshold",
    "kmeans_threshold",
    "mixture_threshold",
    "fit_mixture",
    "Mixture",
    "mrf_change",
    "compute_threshold",
    "choose_threshold",
    "binary_change",
    "METHODS",
    "CHANGED",
    "UNCHANGED",
    "NODATA",
    "threshold_feature_distance",
]

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


@dataclass(frozen=True)
class Mixture:
    """A fitted 1-D two-Gaussian mixture: the unchanged class first (lower mean), then the changed class."""

    weights: tuple[float, float]
    means: tuple[float, float]
    sds: tuple[float, float]
    threshold: float  # the Bayes split between the means (change = above)

    def log_likelihood_ratio(self, x: np.ndarray) -> np.ndarray:
        """log p(x, changed) - log p(x, unchanged) of each (finite) value, made non-decreasing over the values
        given: two Gaussians of different spreads cross again in a tail, so above the threshold each value gets
        the largest ratio of any value between the threshold and itself, and below it the smallest (a larger
        intensity never counts as less change)."""
        x = np.asarray(x, dtype=np.float64)

        def log_density(i: int) -> np.ndarray:
            return (
                -0.5 * ((x - self.means[i]) / self.sds[i]) ** 2
                - np.log(self.sds[i])
                + np.log(max(self.weights[i], 1e-300))
            )

        llr = (log_density(1) - log_density(0)).ravel()
        order = np.argsort(x.ravel(), kind="stable")
        ranked = llr[order]
        above = x.ravel()[order] > self.threshold  # a suffix of the sorted values
        ranked[above] = np.maximum.accumulate(ranked[above])
        ranked[~above] = np.minimum.accumulate(ranked[~above][::-1])[::-1]
        llr[order] = ranked
        return llr.reshape(x.shape)


def fit_mixture(values: np.ndarray, max_iter: int = 200) -> Mixture | None:
    """Two-Gaussian mixture fitted by EM to ``MIXTURE_SAMPLE`` evenly spaced order statistics, started at Otsu's
    split; None for a constant input or one Otsu cannot split (then use ``mixture_threshold``'s fallbacks)."""
    v = _finite_sorted(values)
    if v[0] == v[-1]:
        return None
    if v.size > MIXTURE_SAMPLE:
        v = v[np.linspace(0, v.size - 1, MIXTURE_SAMPLE).round().astype(np.int64)]
    t = otsu_threshold(v)
    lo, hi = v[v <= t], v[v > t]
    if lo.size == 0 or hi.size == 0:
        return None
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
    i0, i1 = (int(i) for i in np.argsort(mu))
    grid = np.linspace(mu[i0], mu[i1], 2001)

    def log_density(i: int) -> np.ndarray:
        return -0.5 * ((grid - mu[i]) / sd[i]) ** 2 - np.log(sd[i]) + np.log(max(w[i], 1e-300))

    above = np.nonzero(log_density(i1) > log_density(i0))[0]
    threshold = float(grid[above[0]]) if above.size else float(mu[i1])
    return Mixture(
        (float(w[i0]), float(w[i1])), (float(mu[i0]), float(mu[i1])), (float(sd[i0]), float(sd[i1])), threshold
    )


def mixture_threshold(values: np.ndarray, max_iter: int = 200) -> float:
    """Threshold between the two components of a 1-D two-Gaussian mixture fitted by EM (started at Otsu's split).

    Returns the point between the two means where the weighted densities are equal (the Bayes split of the
    fitted mixture). Unlike Otsu, each class has its own variance and share, so a changed class with a long,
    spread-out tail (IR-MAD on 204 bands) does not pull the split into that tail (BENCHMARKS.md, issue 10).
    The fit uses ``MIXTURE_SAMPLE`` evenly spaced order statistics. A constant input returns its value.
    """
    mixture = fit_mixture(values, max_iter)
    if mixture is not None:
        return mixture.threshold
    v = _finite_sorted(values)
    return float(v[0]) if v[0] == v[-1] else otsu_threshold(v)


#: The spatial prior of the "mrf" map (BENCHMARKS.md, issue 10): a Potts model over the (2 * MRF_RADIUS + 1)^2
#: window, each neighbour that disagrees costing MRF_BETA in log-likelihood. Chosen on the three benchmark pairs
#: (5 seeds): 5x5 with beta 0.2-0.3 helped all three (Taizhou +0.03, the AVIRIS pairs +0.005-0.009); 3x3 with
#: beta 1 helped too (+0.028, +0.002-0.004).
MRF_RADIUS = 2
MRF_BETA = 0.25
#: ICM sweeps at most (it stops earlier when no pixel changes; it converged in under 10 on every benchmark pair).
MRF_MAX_ITERATIONS = 20


def _window_sum(a: np.ndarray, radius: int) -> np.ndarray:
    """Sum of ``a`` (int32, rows x cols) over the (2 radius + 1)^2 window of every pixel, zeros beyond the edge."""
    k = 2 * radius + 1
    c = np.pad(a, radius).cumsum(axis=0, dtype=np.int32).cumsum(axis=1, dtype=np.int32)
    c = np.pad(c, ((1, 0), (1, 0)))
    return c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]


def mrf_change(
    intensity: np.ndarray,
    valid: np.ndarray,
    beta: float = MRF_BETA,
    radius: int = MRF_RADIUS,
    max_iterations: int = MRF_MAX_ITERATIONS,
) -> tuple[np.ndarray, float]:
    """Binary change map of the two-Gaussian mixture regularised by a Potts Markov random field (ICM).

    Change and unchanged areas are spatially coherent (a changed field, building or implanted region covers
    many neighbouring pixels), so a pixel's label should depend on its neighbours' as well as on its own
    intensity. The mixture fitted to the valid intensities (``fit_mixture``) gives each pixel the log-likelihood
    ratio ``llr`` of change against no change; the map starts at the mixture's own split (``llr > 0``) and
    Iterated Conditional Modes then sets every pixel, all at once per sweep, to change where

        llr + beta * (changed neighbours - unchanged neighbours) > 0

    over the valid pixels of its (2 radius + 1)^2 window, until no pixel changes or ``max_iterations`` sweeps.
    A pixel whose evidence is far above the rest stays changed even when alone (its llr outweighs the window);
    uncertain pixels follow their neighbourhood, which removes speckle and fills holes in changed regions.
    Returns (uint8 map: 1 change, 0 no change, 255 nodata; the mixture threshold, where the sweeps started).
    A constant or unsplittable intensity gives the mixture threshold's map unchanged.
    """
    if beta < 0 or radius < 1:
        raise InputError(f"The MRF needs beta >= 0 and a radius >= 1, got {beta} and {radius}.")
    ok = valid & np.isfinite(intensity)
    values = intensity[ok]
    if values.size == 0:
        raise InputError("The change intensity has no valid pixel; the inputs are all nodata.")
    mixture = fit_mixture(values)
    if mixture is None:
        return binary_change(intensity, valid, "mixture")
    llr = np.zeros(intensity.shape, dtype=np.float64)
    llr[ok] = mixture.log_likelihood_ratio(values)
    neighbours = _window_sum(ok.astype(np.int32), radius) - ok  # valid pixels around each pixel
    changed = ok & (llr > 0)
    for _ in range(max_iterations):
        around = _window_sum(changed.astype(np.int32), radius) - changed  # changed neighbours
        new = ok & (llr + beta * (2.0 * around - neighbours) > 0)
        if np.array_equal(new, changed):
            break
        changed = new
    out = np.full(intensity.shape, NODATA, dtype=np.uint8)
    out[ok] = np.where(changed[ok], CHANGED, UNCHANGED)
    return out, mixture.threshold


def compute_threshold(values: np.ndarray, method: str = "otsu", value: float | None = None) -> float:
    """Threshold by name: 'otsu', 'kmeans', 'mixture' or 'fixed' (then ``value`` is required).

    'mrf' returns the mixture's threshold, where its map starts: the map itself is ``binary_change``'s (a pixel's
    label depends on its neighbours there, not on its intensity alone).
    """
    method = method.lower()
    if method == "otsu":
        return otsu_threshold(values)
    if method in ("kmeans", "k-means"):
        return kmeans_threshold(values)
    if method in ("mixture", "mrf"):
        return mixture_threshold(values)
    if method == "fixed":
        if value is None or not np.isfinite(value):
            raise InputError("A fixed threshold needs a finite THRESHOLD_VALUE. Give a number, or use otsu/kmeans.")
        return float(value)
    raise InputError(f"Unknown threshold method {method!r}. Use one of: {', '.join(METHODS)}.")


def choose_threshold(
    intensity: np.ndarray, valid: np.ndarray, method: str = "otsu", value: float | None = None
) -> float:
    """The threshold on the valid pixels' intensity: Otsu, 2-cluster k-means, or a fixed value."""
    values = intensity[valid & np.isfinite(intensity)]
    if values.size == 0:
        raise InputError("The change intensity has no valid pixel; the inputs are all nodata.")
    return compute_threshold(values, method, value)


def binary_change(
    intensity: np.ndarray, valid: np.ndarray, method: str = "otsu", value: float | None = None
) -> tuple[np.ndarray, float]:
    """Binary change map (uint8: 1 change, 0 no change, 255 nodata) and the threshold used (change = above).

    For 'mrf' the map is ``mrf_change``'s (the mixture regularised by its neighbours) and the threshold the
    mixture's, where it started: there, change is not exactly "intensity above the threshold".
    """
    if method.lower() == "mrf":
        return mrf_change(intensity, valid)
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
    if method == "mrf":
        binary, root = mrf_change(np.sqrt(np.maximum(intensity, 0.0)), valid)
        return binary, float(root) ** 2
    _, root = binary_change(np.sqrt(np.maximum(intensity, 0.0)), valid, method)
    return binary_change(intensity, valid, "fixed", float(root) ** 2)
