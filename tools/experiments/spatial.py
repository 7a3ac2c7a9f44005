"""Issue 10, round 2: spatial regularisation and evidence weights of the fused intensity, scored from the cache.

    OMP_NUM_THREADS=1 python tools/experiments/spatial.py [epochs=20] [VARIANTS=comma,list] [PAIRS=...]

Every variant is scored per seed (kappa with its own threshold rule, AUC, oracle = best kappa of any threshold).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from analyse import BEST, PAIRS, get_pair, hn_intensity, medn  # noqa: E402
from harness import classic, kappa_auc, key, oracle_kappa  # noqa: E402

from hypernet_qgis.core.classic.thresholds import mixture_threshold, otsu_threshold  # noqa: E402


def shifts(x: np.ndarray, v: np.ndarray, r: int = 1):
    """The (2r+1)^2 shifted copies of x (edge-padded) and of v, as stacks (k, rows, cols)."""
    xp = np.pad(np.where(v, x, np.nan), r, mode="constant", constant_values=np.nan)
    rows, cols = x.shape
    k = 2 * r + 1
    return np.stack([xp[i:i + rows, j:j + cols] for i in range(k) for j in range(k)])


def median_filter(x, v, r=1):
    out = np.nanmedian(shifts(x, v, r), axis=0)
    return np.where(v, out, np.nan)


def mean_filter(x, v, r=1):
    out = np.nanmean(shifts(x, v, r), axis=0)
    return np.where(v, out, np.nan)


def gauss_filter(x, v, sigma=0.8, r=2):
    s = shifts(x, v, r)
    k = 2 * r + 1
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    w = np.exp(-(yy ** 2 + xx ** 2) / (2 * sigma ** 2)).ravel()[:, None, None]
    ok = np.isfinite(s)
    out = (np.where(ok, s, 0) * w).sum(0) / np.maximum((ok * w).sum(0), 1e-12)
    return np.where(v, out, np.nan)


def mixture_params(values):
    """EM fit as thresholds.mixture_threshold (weights, means, sds), on <= 65536 order statistics."""
    vv = np.sort(values[np.isfinite(values)].astype(np.float64))
    if vv.size > 65536:
        vv = vv[np.linspace(0, vv.size - 1, 65536).round().astype(int)]
    t = otsu_threshold(vv)
    lo, hi = vv[vv <= t], vv[vv > t]
    w = np.array([lo.size, hi.size], float) / vv.size
    mu = np.array([lo.mean(), hi.mean()])
    sd = np.array([lo.std(), hi.std()]) + 1e-9
    for _ in range(200):
        ll = -0.5 * ((vv[:, None] - mu) / sd) ** 2 - np.log(sd) + np.log(w)
        ll -= ll.max(1, keepdims=True)
        r = np.exp(ll); r /= r.sum(1, keepdims=True)
        nk = r.sum(0)
        mu_n = (r * vv[:, None]).sum(0) / nk
        sd_n = np.sqrt((r * (vv[:, None] - mu_n) ** 2).sum(0) / nk) + 1e-9
        done = np.allclose(mu_n, mu, rtol=1e-6)
        w, mu, sd = nk / vv.size, mu_n, sd_n
        if done:
            break
    o = np.argsort(mu)
    return w[o], mu[o], sd[o]


def icm(x, v, beta=1.0, iters=5, r=1):
    """Potts ICM on the mixture's log-likelihood ratio: change where llr + beta * (n_change - n_nochange) > 0."""
    w, mu, sd = mixture_params(x[v])
    t = mixture_threshold(x[v])
    def logp(i):
        return -0.5 * ((x - mu[i]) / sd[i]) ** 2 - np.log(sd[i]) + np.log(w[i])
    llr = logp(1) - logp(0)
    # values above the upper mean count as change; below the lower mean as no change (Gaussian tails cross)
    def at(z, i):
        return -0.5 * ((z - mu[i]) / sd[i]) ** 2 - np.log(sd[i]) + np.log(w[i])
    llr = np.where(x > mu[1], np.maximum(llr, at(mu[1], 1) - at(mu[1], 0)), llr)
    llr = np.where(x < mu[0], np.minimum(llr, at(mu[0], 1) - at(mu[0], 0)), llr)
    lab = np.where(v, (x > t).astype(np.float64), np.nan)
    for _ in range(iters):
        s = shifts(lab, v, r)
        nc = np.nansum(s, 0) - np.nan_to_num(lab)
        nn = np.isfinite(s).sum(0) - 1 - nc
        new = (llr + beta * (nc - nn)) > 0
        new = np.where(v, new.astype(np.float64), np.nan)
        if np.array_equal(np.nan_to_num(new, nan=-1), np.nan_to_num(lab, nan=-1)):
            break
        lab = new
    return lab


def majority(binary, v, r=1):
    s = shifts(binary.astype(np.float64), v, r)
    return np.where(v, (np.nanmean(s, 0) > 0.5).astype(np.float64), np.nan)


def mix_binary(x, v):
    t = mixture_threshold(x[v & np.isfinite(x)])
    return np.where(v, (x > t).astype(np.float64), np.nan)


def score_binary(b, inten, ref):
    b8 = np.where(np.isfinite(b), b, 255).astype(np.uint8)
    return kappa_auc(b8, inten, ref)


def variants2(hn, c, v):
    ir, cv = medn(c["irmad"], v), medn(c["cva"], v)
    f3 = (hn + ir + cv) / 3
    geo = np.cbrt(hn * ir * cv)
    out = {}
    for fname, f in (("f3", f3), ("geo", geo)):
        out[f"{fname}"] = (f, mix_binary(f, v))
        for beta in (0.5, 1.0, 1.5, 2.0, 3.0):
            out[f"{fname} icm b{beta}"] = (f, icm(f, v, beta))
        out[f"{fname} icm b1.0 it1"] = (f, icm(f, v, 1.0, iters=1))
        out[f"{fname} icm b1.0 it20"] = (f, icm(f, v, 1.0, iters=20))
    return out


def variants3(hn, c, v):
    ir, cv = medn(c["irmad"], v), medn(c["cva"], v)
    f3 = (hn + ir + cv) / 3
    out = {"f3 icm b1.0": (f3, icm(f3, v, 1.0))}
    for beta in (0.25, 0.4, 0.6):
        out[f"f3 icm 5x5 b{beta}"] = (f3, icm(f3, v, beta, r=2))
    lf = np.log(np.maximum(f3, 1e-6))
    for beta in (0.5, 1.0):
        out[f"log f3 icm b{beta}"] = (f3, icm(lf, v, beta))
    return out


def variants4(hn, c, v):
    ir, cv = medn(c["irmad"], v), medn(c["cva"], v)
    f3 = (hn + ir + cv) / 3
    out = {"f3 icm b1.25": (f3, icm(f3, v, 1.25))}
    for beta in (0.15, 0.2, 0.3):
        out[f"f3 icm 5x5 b{beta}"] = (f3, icm(f3, v, beta, r=2))
    return out


def variants5(hn, c, v):
    """HyperNet alone (root MSE / median): Otsu, mixture, and the MRF on the mixture (the windowed route)."""
    from hypernet_qgis.core.classic.thresholds import otsu_threshold as ot
    out = {"hn otsu": (hn, np.where(v, (hn > ot(hn[v])).astype(float), np.nan)), "hn mixture": (hn, mix_binary(hn, v))}
    out["hn mrf 5x5 b0.25"] = (hn, icm(hn, v, 0.25, r=2))
    return out


def variants(hn, c, v):
    """name -> (intensity for AUC/oracle, binary map)."""
    ir, cv = medn(c["irmad"], v), medn(c["cva"], v)
    sa = medn(c["sam"], v)
    f3 = (hn + ir + cv) / 3
    out = {}
    def add(name, inten, binary=None):
        out[name] = (inten, mix_binary(inten, v) if binary is None else binary)
    add("f3 (default)", f3)
    add("f3 median3", median_filter(f3, v, 1))
    add("f3 median5", median_filter(f3, v, 2))
    add("each median3", (median_filter(hn, v) + median_filter(ir, v) + median_filter(cv, v)) / 3)
    add("f3 log-mean3", np.exp(mean_filter(np.log(np.maximum(f3, 1e-6)), v, 1)))
    add("f3 gauss0.7", gauss_filter(f3, v, 0.7, 1))
    add("f3 mean3", mean_filter(f3, v, 1))
    b = mix_binary(f3, v)
    add("f3 majority3", f3, majority(b, v, 1))
    add("f3 majority5", f3, majority(b, v, 2))
    for beta in (0.25, 0.5, 1.0):
        add(f"f3 icm b{beta}", f3, icm(f3, v, beta))
    add("f3 median3 + icm b0.5", median_filter(f3, v, 1), icm(median_filter(f3, v, 1), v, 0.5))
    add("hn+irmad+cva+sam", (hn + ir + cv + sa) / 4)
    add("f3 geo", np.cbrt(hn * ir * cv))
    add("hn+irmad+cva log-mean", np.exp((np.log(hn) + np.log(ir) + np.log(cv)) / 3))
    add("2hn+irmad+cva", (2 * hn + ir + cv) / 4)
    add("hn+2irmad+cva", (hn + 2 * ir + cv) / 4)
    add("hn+irmad+2cva", (hn + ir + 2 * cv) / 4)
    return out


def main():
    spec = next((a for a in sys.argv[1:] if "=" in a and not a.isupper()), "epochs=20")
    opts = dict(kv.split("=", 1) for kv in spec.split(",") if kv)
    names = (os.environ.get("PAIRS") or ",".join(PAIRS)).split(",")
    keep = os.environ.get("VARIANTS")
    for n in names:
        pair, ref = get_pair(n)
        c = classic(n)
        seeds = [s for s in range(5) if key(n, s, opts).exists()]
        rows = {}
        for hn, _ in hn_intensity(n, seeds, opts, 1):
            hn = np.where(pair.valid, hn, np.nan)
            for name, (inten, b) in {'1': variants2, '3': variants3, '4': variants4, '5': variants5}.get(os.environ.get('GRID'), variants)(hn, c, pair.valid).items():
                if keep and name not in keep.split(","):
                    continue
                k, a = score_binary(b, inten, ref)
                rows.setdefault(name, []).append((k, a, oracle_kappa(np.where(pair.valid, inten, np.nan), ref)))
        for name, r in rows.items():
            r = np.array(r)
            ks = r[:, 0]
            print(f"{n:19s} {name:26s} kappa {ks.mean():.3f} sd {ks.std():.3f} [{' '.join(f'{k:.3f}' for k in ks)}] "
                  f"AUC {r[:, 1].mean():.4f} oracle {r[:, 2].mean():.3f} (vs best {ks.mean() - BEST[n]:+.3f})",
                  flush=True)


if __name__ == "__main__":
    main()
