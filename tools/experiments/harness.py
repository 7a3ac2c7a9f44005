"""Experiment harness for issue 10: train once per (pair, seed, training variant), cache both dates' fused
features, and score post-processing variants (distances, normalisations, ensembles, fusions, thresholds) for free.

    python tools/experiments/harness.py train --pairs taizhou --seeds 0-4 --variant epochs=20
    python tools/experiments/harness.py classic            # cache the classic intensities of every pair

The cache lives in bench-results/cache (git-ignored); analysis helpers are imported by analyse.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

from bench_accuracy import pairs  # noqa: E402

from hypernet_qgis.core.classic.metrics import change_metrics, roc_auc  # noqa: E402
from hypernet_qgis.core.pipeline import load_pair  # noqa: E402

CACHE = REPO / "bench-results" / "cache"


def key(pair: str, seed: int, opts: dict) -> Path:
    spec = ",".join(f"{k}={opts[k]}" for k in sorted(opts)) or "default"
    return CACHE / pair / f"{spec}__s{seed}.npz"


_PAIRS: dict = {}


def get_pair(name: str):
    if name not in _PAIRS:
        t1, t2, ref = pairs()[name]
        _PAIRS[name] = (load_pair(t1, t2), ref)
    return _PAIRS[name]


def classic(name: str) -> dict[str, np.ndarray]:
    """cva, sam, irmad intensities and IR-MAD's no-change probability, cached."""
    path = CACHE / name / "classic.npz"
    if path.exists():
        return dict(np.load(path))
    from hypernet_qgis.core.classic.baselines import cva, irmad_details, pca_kmeans_score, sam

    pair, _ = get_pair(name)
    d = irmad_details(pair.x1, pair.x2, pair.valid)
    out = {"cva": cva(pair.x1, pair.x2, pair.valid), "sam": sam(pair.x1, pair.x2, pair.valid),
           "irmad": np.sqrt(d["chi2"]), "irmad_w": d["no_change_probability"],
           "pca_kmeans": pca_kmeans_score(pair.x1, pair.x2, pair.valid)}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return out


def rank01(score: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Rank of each valid pixel's score in [0, 1] (NaN elsewhere)."""
    out = np.full(valid.shape, np.nan, dtype=np.float64)
    v = score[valid]
    r = np.empty(v.size)
    r[np.argsort(v, kind="stable")] = np.arange(v.size)
    out[valid] = r / max(1, v.size - 1)
    return out


def prepare_inputs(name: str, opts: dict):
    """Standardised dates for a variant: 'inputs' = z (per date, default) | zinv (per date, IR-MAD weighted)."""
    pair, _ = get_pair(name)
    mode = opts.get("inputs", "z")
    if mode == "z":
        return pair.x1s, pair.x2s
    if mode == "zinv":
        w = np.nan_to_num(classic(name)["irmad_w"])[pair.valid].astype(np.float64)
        outs = []
        for x in (pair.x1, pair.x2):
            v = x[:, pair.valid].astype(np.float64)
            m = (v @ w) / w.sum()
            s = np.sqrt(((v - m[:, None]) ** 2 @ w) / w.sum()) + 1e-12
            z = np.zeros(x.shape, dtype=np.float32)
            z[:, pair.valid] = ((v - m[:, None]) / s[:, None]).astype(np.float32)
            outs.append(z)
        return outs[0], outs[1]
    raise ValueError(mode)


def training_mask(name: str, opts: dict, x1s, x2s) -> np.ndarray:
    """mask g: 'mask' = cva (default, lowest fraction) | agree (lowest fraction of max(rank cva, rank irmad))
    | otsu (CVA below its Otsu threshold, times 'fraction' of those by rank)."""
    from hypernet_qgis.core.classic.baselines import cva
    from hypernet_qgis.core.classic.thresholds import otsu_threshold
    from hypernet_qgis.core.hypernet.training import lowest_share

    pair, _ = get_pair(name)
    frac = float(opts.get("fraction", 0.5))
    mode = opts.get("mask", "cva")
    c = cva(x1s, x2s, pair.valid)
    if mode == "cva":
        return lowest_share(c, pair.valid, frac)
    if mode == "agree":
        score = np.maximum(rank01(c, pair.valid), rank01(classic(name)["irmad"], pair.valid))
        return lowest_share(np.nan_to_num(score, nan=2.0), pair.valid, frac)
    if mode == "otsu":
        t = otsu_threshold(c[pair.valid])
        return pair.valid & (c <= t)
    raise ValueError(mode)


def train_one(name: str, seed: int, opts: dict) -> Path:
    import torch

    from hypernet_qgis.core.hypernet.detection import _whole_image_features
    from hypernet_qgis.core.hypernet.training import TrainConfig, train_hypernet

    path = key(name, seed, opts)
    if path.exists():
        return path
    pair, _ = get_pair(name)
    x1s, x2s = prepare_inputs(name, opts)
    g = training_mask(name, opts, x1s, x2s)
    cfg = TrainConfig(seed=seed, device="cpu", epochs=int(opts.get("epochs", 60)),
                      crop_size=int(opts.get("crop", 64)), schedule=opts.get("schedule", "default"),
                      learning_rate=float(opts.get("lr", 0.05)),
                      pixels_per_step=int(opts.get("pps", 65536)))
    if "width" in opts:
        cfg.width = int(opts["width"])
    t0 = time.perf_counter()
    res = train_hypernet(x1s, x2s, pair.valid, cfg, training_mask=g)
    train_s = time.perf_counter() - t0
    dev = torch.device("cpu")
    f1 = _whole_image_features(res.model, x1s, "per-date", dev).numpy()
    f2 = _whole_image_features(res.model, x2s, "per-date", dev).numpy()
    total_s = time.perf_counter() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, f1=f1.astype(np.float16), f2=f2.astype(np.float16), g=g, train_s=train_s, total_s=total_s,
             loss=np.array(res.loss_history))
    return path


# ------------------------------------------------------------------------------------------- scoring

def kappa_auc(binary: np.ndarray, intensity: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    m = change_metrics(binary, ref, changed=(1,), unchanged=(0,), ignore=(255,))
    return m["kappa"], float(roc_auc(intensity, ref, changed=(1,), unchanged=(0,), ignore=(255,)))


def oracle_kappa(intensity: np.ndarray, ref: np.ndarray) -> float:
    """Best kappa over all thresholds on the labelled pixels (an upper bound, not a method)."""
    lab = (ref == 0) | (ref == 1)
    s = intensity[lab]
    y = ref[lab] == 1
    ok = np.isfinite(s)
    s, y = s[ok], y[ok]
    order = np.argsort(-s)
    y = y[order]
    n = y.size
    tp = np.cumsum(y)
    fp = np.cumsum(~y)
    P = y.sum()
    N = n - P
    k = np.arange(1, n + 1)
    fn = P - tp
    tn = N - fp
    po = (tp + tn) / n
    pe = ((tp + fp) * P + (fn + tn) * N) / n**2
    kap = (po - pe) / np.maximum(1 - pe, 1e-12)
    return float(kap[::max(1, n // 5000)].max())


def load_features(name: str, seed: int, opts: dict):
    d = np.load(key(name, seed, opts))
    return d["f1"].astype(np.float32), d["f2"].astype(np.float32), float(d["total_s"])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["train", "classic"])
    ap.add_argument("--pairs", default="salinasA_pair,salinasA_pair_hard,taizhou")
    ap.add_argument("--seeds", default="0-4")
    ap.add_argument("--variant", action="append", default=[], help="k=v,k=v (training options)")
    args = ap.parse_args()
    names = args.pairs.split(",")
    if args.cmd == "classic":
        for n in names:
            classic(n)
        return 0
    lo, _, hi = args.seeds.partition("-")
    seeds = range(int(lo), int(hi or lo) + 1)
    variants = [dict(kv.split("=", 1) for kv in v.split(",") if kv) for v in args.variant] or [{}]
    for opts in variants:
        for n in names:
            for s in seeds:
                t = time.perf_counter()
                p = train_one(n, s, opts)
                print(f"{n} {opts} seed {s} -> {p.name} {time.perf_counter() - t:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
