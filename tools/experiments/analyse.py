"""Score cached runs (harness.py) under post-processing variants; prints per-seed kappa, mean, sd, AUC, oracle."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import get_pair, kappa_auc, key, load_features, oracle_kappa  # noqa: E402

from hypernet_qgis.core.classic.thresholds import binary_change  # noqa: E402

PAIRS = ["salinasA_pair", "salinasA_pair_hard", "taizhou"]
BEST = {"salinasA_pair": 0.819, "salinasA_pair_hard": 0.541, "taizhou": 0.934}


def medn(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    return x / np.nanmedian(x[valid])


def root_mse(f1, f2):
    return np.sqrt(((f1 - f2) ** 2).mean(0))


def threshold(inten, valid, how="otsu"):
    if how == "otsu":
        return binary_change(inten, valid, "otsu")[0]
    if how == "kmeans":
        return binary_change(inten, valid, "kmeans")[0]
    if how == "otsu-log":
        return binary_change(np.log(np.maximum(inten, 1e-9)), valid, "otsu")[0]
    if how.startswith("otsu-logq"):
        q = float(how[len("otsu-logq"):]) / 100
        lo = np.nanquantile(inten[valid], q)
        return binary_change(np.log(np.maximum(inten, max(lo, 1e-9))), valid, "otsu")[0]
    raise ValueError(how)


def hn_intensity(name, seeds, opts, members=1):
    """Normalised root-MSE (divided by its median), averaged over ``members`` runs: seeds s*members + k."""
    pair, _ = get_pair(name)
    out = []
    for s in seeds:
        acc, secs = 0.0, 0.0
        for k in range(members):
            f1, f2, t = load_features(name, s * members + k, opts)
            acc = acc + medn(root_mse(f1, f2), pair.valid)
            secs += t
        out.append((acc / members, secs))
    return out


def report(label, name, maps, how="otsu"):
    pair, ref = get_pair(name)
    ks, aucs, ors = [], [], []
    for m in maps:
        m = np.where(pair.valid, m, np.nan).astype(np.float32)
        k, a = kappa_auc(threshold2(m, pair.valid, how), m, ref)
        ks.append(k)
        aucs.append(a)
        ors.append(oracle_kappa(m, ref))
    ks = np.array(ks)
    print(f"{name:19s} {label:40s} kappa {ks.mean():.3f} sd {ks.std():.3f} [{' '.join(f'{k:.3f}' for k in ks)}] "
          f"AUC {np.mean(aucs):.4f} oracle {np.mean(ors):.3f}  (vs best {ks.mean() - BEST[name]:+.3f})", flush=True)
    return ks


def have(name, seeds, opts):
    return all(key(name, s, opts).exists() for s in seeds)


def gmm_threshold(values: np.ndarray, iters: int = 200) -> float:
    """2-component 1-D Gaussian mixture (EM, started from the Otsu split); the point between the means where
    the posteriors are equal."""
    from hypernet_qgis.core.classic.thresholds import otsu_threshold
    v = values[np.isfinite(values)].astype(np.float64)
    t = otsu_threshold(v)
    lo, hi = v[v <= t], v[v > t]
    w = np.array([lo.size, hi.size], float) / v.size
    mu = np.array([lo.mean(), hi.mean()])
    sd = np.array([lo.std() + 1e-9, hi.std() + 1e-9])
    for _ in range(iters):
        ll = -0.5 * ((v[:, None] - mu) / sd) ** 2 - np.log(sd) + np.log(w)
        ll -= ll.max(1, keepdims=True)
        r = np.exp(ll); r /= r.sum(1, keepdims=True)
        nk = r.sum(0)
        w_new = nk / v.size
        mu_new = (r * v[:, None]).sum(0) / nk
        sd_new = np.sqrt((r * (v[:, None] - mu_new) ** 2).sum(0) / nk) + 1e-9
        done = np.allclose(mu_new, mu, rtol=1e-6, atol=1e-9)
        w, mu, sd = w_new, mu_new, sd_new
        if done:
            break
    i0, i1 = np.argsort(mu)
    grid = np.linspace(mu[i0], mu[i1], 2001)
    def logp(i):
        return -0.5 * ((grid - mu[i]) / sd[i]) ** 2 - np.log(sd[i]) + np.log(w[i])
    diff = logp(i1) - logp(i0)
    k = np.nonzero(diff > 0)[0]
    return float(grid[k[0]]) if k.size else float(mu[i1])


def threshold2(inten, valid, how):
    """More thresholds: gmm-sqrt (the mixture on the values themselves; the name is historical), gmm-log,
    gmm-root, gmm-w<q> (capped at quantile q), otsu-w<q>, mad<k> (median + k robust sd of the log)."""
    from hypernet_qgis.core.classic.thresholds import binary_change as bc
    v = valid & np.isfinite(inten)
    if how in ("gmm-log", "gmm-sqrt"):
        f = np.log if how.endswith("log") else (lambda x: x)
        x = f(np.maximum(inten, 1e-9))
        t = gmm_threshold(x[v][:: max(1, v.sum() // 60000)])
        return bc(x, valid, "fixed", t)[0]
    if how.startswith("otsu-w"):
        q = float(how[6:]) / 100
        cap = np.nanquantile(inten[v], q)
        return bc(np.minimum(inten, cap), valid, "otsu")[0]
    if how.startswith("gmm-w"):
        q = float(how[5:]) / 100
        cap = np.nanquantile(inten[v], q)
        x = np.minimum(inten, cap)
        t = gmm_threshold(x[v][:: max(1, v.sum() // 60000)])
        return bc(x, valid, "fixed", t)[0]
    if how == "gmm-root":
        x = np.sqrt(np.maximum(inten, 0))
        t = gmm_threshold(x[v][:: max(1, v.sum() // 60000)])
        return bc(x, valid, "fixed", t)[0]
    if how.startswith("mad"):
        k = float(how[3:].split("-")[0])
        x = np.log(np.maximum(inten, 1e-9))
        med = np.median(x[v]); mad = 1.4826 * np.median(np.abs(x[v] - med))
        return bc(x, valid, "fixed", med + k * mad)[0]
    return threshold(inten, valid, how)
