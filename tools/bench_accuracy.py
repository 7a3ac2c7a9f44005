"""Accuracy benchmark (``make bench``): HyperNet with default settings and every classic baseline on the
benchmark pairs of ../shared/data, 5 seeds for HyperNet (each run scored as the default fused intensity and as
HyperNet alone). Writes bench-results/accuracy.json and the table in BENCHMARKS.md (between the ACCURACY markers).

Also the experiment harness behind the default choices: ``--variant NAME=key:value,...`` runs HyperNet with
other settings (distance, threshold, fraction, width, epochs, schedule) on the same pairs and seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hypernet_qgis.core.classic.baselines import BASELINES, DEFAULT_THRESHOLD_VALUES, DEFAULT_THRESHOLDS  # noqa: E402
from hypernet_qgis.core.classic.metrics import change_metrics, reference_from_masks, roc_auc  # noqa: E402
from hypernet_qgis.core.fusion import classic_evidence, fuse, resolve_threshold  # noqa: E402
from hypernet_qgis.core.hypernet.detection import binary_change, change_intensity  # noqa: E402
from hypernet_qgis.core.hypernet.training import TrainConfig, model_widths, train_hypernet  # noqa: E402
from hypernet_qgis.core.io import raster_io  # noqa: E402
from hypernet_qgis.core.pipeline import (  # noqa: E402
    DEFAULT_DISTANCE,
    ImagePair,
    load_pair,
    threshold_feature_distance,
)

SHARED = REPO.parent / "shared" / "data"
#: The default settings, and the paper's schedule (whole image per step, 200 epochs) at the same branch width so
#: that only the schedule differs ("width:cap" = the default schedule's automatic width).
DEFAULT_NAME = "HyperNet + IR-MAD + CVA, MRF map (default)"
DEFAULT_VARIANTS = [
    (DEFAULT_NAME, {}),
    ("HyperNet + IR-MAD + CVA, paper schedule", {"schedule": "paper", "width": "cap"}),
]
#: Each HyperNet run is scored twice from the same trained model: with the default evidence (fused with IR-MAD
#: and CVA, core/fusion.py) under the variant's name, and alone (``evidence=hypernet``) under this suffix.
ALONE = ", HyperNet alone"


def alone_name(vname: str) -> str:
    """Row name of a variant's HyperNet-alone score."""
    return "HyperNet alone (--evidence hypernet)" if vname == DEFAULT_NAME else vname + ALONE


EXPLORE = bool(os.environ.get("HYPERNET_EXPLORE"))


def pairs() -> dict[str, tuple[str, str, np.ndarray]]:
    """name -> (t1 path, t2 path, reference 1 changed / 0 unchanged / 255 unlabelled)."""
    out = {}
    for name in ("salinasA_pair", "salinasA_pair_hard"):
        d = SHARED / "bench" / name
        if d.is_dir():
            gt, _, _ = raster_io.read_raster(str(d / "gt.tif"))
            out[name] = (str(d / "t1.tif"), str(d / "t2.tif"), gt[0].astype(np.uint8))
    d = SHARED / "taizhou"
    if d.is_dir():
        changed, _, _ = raster_io.read_raster(str(d / "change.bmp"), [1])
        unchanged, _, _ = raster_io.read_raster(str(d / "unchanged.bmp"), [1])
        out["taizhou"] = (str(d / "2000TM"), str(d / "2003TM"), reference_from_masks(changed[0] > 0, unchanged[0] > 0))
    return out


def score(binary: np.ndarray, intensity: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    m = change_metrics(binary, ref, changed=(1,), unchanged=(0,), ignore=(255,))
    return {
        "OA": m["OA"],
        "kappa": m["kappa"],
        "F1": m["F1"],
        "AUC": float(roc_auc(intensity, ref, changed=(1,), unchanged=(0,), ignore=(255,))),
    }


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_hypernet(pair: ImagePair, ref: np.ndarray, seed: int, opts: dict) -> dict:
    width = opts.get("width")
    if width == "cap":
        width = model_widths(pair.x1.shape[0], TrainConfig())[0]
    cfg = TrainConfig(
        seed=seed,
        device="cpu",
        schedule=opts.get("schedule", "default"),
        epochs=int(opts["epochs"]) if "epochs" in opts else None,
        width=int(width) if width else None,
        training_fraction=float(opts.get("fraction", TrainConfig.training_fraction)),
    )
    start = time.perf_counter()
    res = train_hypernet(pair.x1s, pair.x2s, pair.valid, cfg)
    intensity = change_intensity(
        res.model, pair.x1s, pair.x2s, pair.valid, opts.get("distance", DEFAULT_DISTANCE), "cpu"
    )
    binary, _ = threshold_feature_distance(intensity, pair.valid, resolve_threshold(opts.get("threshold"), "hypernet"))
    alone = score(binary, intensity, ref)
    alone["seconds"] = time.perf_counter() - start
    fused = fuse(intensity, classic_evidence(pair), pair.valid)
    binary, _ = binary_change(fused, pair.valid, resolve_threshold(opts.get("threshold"), "fused"))
    out = score(binary, fused, ref)
    out["seconds"] = time.perf_counter() - start
    out["alone"] = alone
    if EXPLORE:  # the same trained model under other distances and thresholds (no retraining)
        out["explore"] = explore(res.model, pair, ref)
        print("    " + " ".join(f"{k}={v:.3f}" for k, v in out["explore"].items()), flush=True)
    return out


def explore(model, pair: ImagePair, ref: np.ndarray) -> dict:
    import torch

    from hypernet_qgis.core.hypernet.detection import fused_features, rx_score

    dev = torch.device("cpu")
    f1 = fused_features(model, pair.x1s, dev).numpy()
    f2 = fused_features(model, pair.x2s, dev).numpy()
    v = pair.valid
    mu = np.concatenate([f1[:, v], f2[:, v]], 1).mean(1)[:, None, None]
    sd = np.concatenate([f1[:, v], f2[:, v]], 1).std(1)[:, None, None] + 1e-6
    z1, z2 = (f1 - mu) / sd, (f2 - mu) / sd
    cos = 1 - (f1 * f2).sum(0) / (np.linalg.norm(f1, axis=0) * np.linalg.norm(f2, axis=0) + 1e-6)
    maps = {"mse": ((f1 - f2) ** 2).mean(0), "cos": cos, "zmse": ((z1 - z2) ** 2).mean(0), "rx": rx_score(f1 - f2, v)}
    out = {}
    for name, inten in maps.items():
        inten = np.where(v, inten, np.nan).astype(np.float32)
        out[f"{name}/auc"] = float(roc_auc(inten, ref, changed=(1,), unchanged=(0,), ignore=(255,)))
        for thr in ("otsu", "otsu-sqrt", "otsu-log"):
            src = {
                "otsu": inten,
                "otsu-sqrt": np.sqrt(np.maximum(inten, 0)),
                "otsu-log": np.log(np.maximum(inten, 1e-12)),
            }[thr]
            b, _ = binary_change(src, v, "otsu")
            out[f"{name}/{thr}"] = score(b, inten, ref)["kappa"]
    return out


def run_baseline(method: str, pair: ImagePair, ref: np.ndarray) -> dict:
    start = time.perf_counter()
    intensity = BASELINES[method](pair.x1, pair.x2, pair.valid)
    binary, _ = binary_change(intensity, pair.valid, DEFAULT_THRESHOLDS[method], DEFAULT_THRESHOLD_VALUES.get(method))
    out = score(binary, intensity, ref)
    out["seconds"] = time.perf_counter() - start
    return out


def job(kind: str, name: str, method: str, opts: dict, seed: int) -> dict:
    """One benchmark run in this (fresh) process; adds the process's peak RSS."""
    t1, t2, ref = pairs()[name]
    pair = load_pair(t1, t2)
    out = run_baseline(method, pair, ref) if kind == "baseline" else run_hypernet(pair, ref, seed, opts)
    out["peak_rss_mb"] = peak_rss_mb()
    if "alone" in out:
        out["alone"]["peak_rss_mb"] = out["peak_rss_mb"]
    return out


def in_fresh_process(*args) -> dict:
    """Run job(*args) in a new interpreter so that each run's peak memory is its own."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(job, *args).result()


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, spec = text.partition("=")
    opts = dict(kv.split(":", 1) for kv in spec.split(",") if kv)
    return name, opts


def summarise(rows: list[dict]) -> dict:
    keys = ("OA", "kappa", "F1", "AUC", "seconds", "peak_rss_mb")
    return {k: (float(np.mean([r[k] for r in rows])), float(np.std([r[k] for r in rows]))) for k in keys}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--variant", action="append", default=[], help="NAME=key:value,... (HyperNet settings)")
    ap.add_argument("--pairs", default=None, help="comma-separated subset of pairs")
    ap.add_argument("--no-baselines", action="store_true")
    ap.add_argument("--quick", action="store_true", help="only the default schedule (skip the slow paper schedule)")
    ap.add_argument("--output", default=str(REPO / "bench-results" / "accuracy.json"))
    ap.add_argument("--write-markdown", action="store_true", help="update the table in BENCHMARKS.md")
    args = ap.parse_args()
    available = pairs()
    if not available:
        print("../shared/data is not present: nothing to benchmark.", file=sys.stderr)
        return 0
    wanted = args.pairs.split(",") if args.pairs else list(available)
    variants = [parse_variant(v) for v in args.variant] or DEFAULT_VARIANTS[: 1 if args.quick else None]
    results: dict = {}
    for name in wanted:
        results[name] = {}
        if not args.no_baselines:
            for method in BASELINES:
                r = in_fresh_process("baseline", name, method, {}, 0)
                results[name][method] = {"runs": [r], "mean_sd": summarise([r])}
                print(
                    f"{name:20s} {method:22s} kappa {r['kappa']:.3f} AUC {r['AUC']:.3f} {r['seconds']:.1f}s", flush=True
                )
        for vname, opts in variants:
            runs = []
            for seed in range(args.seeds):
                r = in_fresh_process("hypernet", name, "", opts, seed)
                runs.append(r)
                print(
                    f"{name:20s} {vname:22s} seed {seed} kappa {r['kappa']:.3f} AUC {r['AUC']:.3f} "
                    f"{r['seconds']:.1f}s (alone: kappa {r['alone']['kappa']:.3f} AUC {r['alone']['AUC']:.3f})",
                    flush=True,
                )
            alone = [r.pop("alone") for r in runs]
            results[name][vname] = {"runs": runs, "mean_sd": summarise(runs), "options": opts}
            results[name][alone_name(vname)] = {"runs": alone, "mean_sd": summarise(alone), "options": opts}
    results["_meta"] = {"peak_rss_mb": peak_rss_mb(), "command": " ".join(sys.argv), "cpus": os.cpu_count()}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=1))
    if args.write_markdown:
        write_markdown(results)
    return 0


def write_markdown(results: dict) -> None:
    lines = ["| pair | method | OA | kappa | F1 | AUC | seconds | peak RSS (MB) |", "|---|---|---|---|---|---|---|---|"]
    for name, methods in results.items():
        if name.startswith("_"):
            continue
        for method, r in methods.items():
            ms = r["mean_sd"]
            n = len(r["runs"])
            fmt = (lambda k: f"{ms[k][0]:.3f} ± {ms[k][1]:.3f}") if n > 1 else (lambda k: f"{ms[k][0]:.3f}")  # noqa: B023
            lines.append(
                f"| {name} | {method}{f' ({n} seeds)' if n > 1 else ''} | {fmt('OA')} | {fmt('kappa')} | "
                f"{fmt('F1')} | {fmt('AUC')} | {ms['seconds'][0]:.1f} | {ms['peak_rss_mb'][0]:.0f} |"
            )
    lines.append("")
    lines.append(
        f"Command: `{results['_meta']['command']}` ({results['_meta']['cpus']} CPUs, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'default')}). Seconds include training."
    )
    table = "\n".join(lines)
    path = REPO / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n\n<!-- ACCURACY -->\n<!-- /ACCURACY -->\n"
    start, end = "<!-- ACCURACY -->", "<!-- /ACCURACY -->"
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    path.write_text(f"{head}{start}\n{table}\n{end}{tail}")


if __name__ == "__main__":
    sys.exit(main())
