"""Command line: ``python -m hypernet_qgis {train,detect,evaluate,baseline,inspect}``.

Exit codes: 0 success, 2 bad input (one-line message on stderr), 130 cancelled (Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from .errors import Cancelled, InputError

EPILOG = """examples:
  python -m hypernet_qgis detect t1.tif t2.tif --output change.tif --intensity intensity.tif
  python -m hypernet_qgis train t1.tif t2.tif --output pair.hypernet --epochs 60 --seed 1
  python -m hypernet_qgis detect t1.tif t2.tif --model pair.hypernet --output change.tif
  python -m hypernet_qgis baseline irmad t1.tif t2.tif --output change_irmad.tif
  python -m hypernet_qgis evaluate change.tif reference.tif --changed 1 --unchanged 0

Any raster GDAL reads works (GeoTIFF, ENVI: give the data file, VRT, ...). Both dates must share size, grid and CRS.
Outputs are tiled, compressed GeoTIFFs with the input's georeferencing; the change map is uint8
(1 change, 0 no change, 255 nodata).
"""


def _band_list(text: str) -> list[int]:
    """'1,2,5-8' -> [1, 2, 5, 6, 7, 8] (1-based band numbers)."""
    bands: list[int] = []
    try:
        for part in text.replace(" ", "").split(","):
            if not part:
                continue
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-", 1))
                bands.extend(range(lo, hi + 1))
            else:
                bands.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad band list {text!r}; write e.g. 1,2,5-8") from None
    if not bands or min(bands) < 1:
        raise argparse.ArgumentTypeError(f"bad band list {text!r}; bands are numbered from 1")
    return bands


def _threshold(text: str) -> str:
    if text in ("auto", "otsu", "kmeans", "mixture"):
        return text
    try:
        float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"use auto, otsu, kmeans, mixture or a number, not {text!r}") from None
    return text


def _values(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad value list {text!r}; write e.g. 1 or 1,2") from None


def _add_training_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=None, help="training epochs (default: 60; 200 with --schedule paper)")
    g.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same result on the CPU")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto uses CUDA when available")
    g.add_argument("--schedule", default="default", choices=["default", "paper"],
                   help="default: random crops per step (fast); paper: whole image per step as published")
    g.add_argument("--learning-rate", type=float, default=0.05, help="SGD learning rate (default 0.05, the paper's)")
    g.add_argument("--gamma", type=float, default=1.0, help="focal cosine loss gamma (default 1)")
    g.add_argument("--width", type=int, default=None, help="branch width (default: from the band count)")
    g.add_argument("--bands", type=_band_list, default=None, help="band subset, 1-based, e.g. 1-100,120-200")
    g.add_argument("--unchanged-mask", default=None,
                   help="raster of known-unchanged pixels (non-zero) to train on instead of the automatic choice")
    g.add_argument("--memory-budget-mb", type=int, default=4096, help="peak memory the run should stay within")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hypernet_qgis",
        description="HyperNet self-supervised hyperspectral change detection (Hu, Wu, Zhang, IEEE TGRS 2022).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="no progress on stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("detect", parents=[common],
                       help="detect change between two dates (trains on the pair unless --model is given)")
    p.add_argument("t1", help="first-date raster")
    p.add_argument("t2", help="second-date raster (same grid as T1)")
    p.add_argument("--output", "-o", required=True, help="binary change map to write (GeoTIFF)")
    p.add_argument("--intensity", default=None, help="also write the change intensity (float32 GeoTIFF)")
    p.add_argument("--model", default=None, help="a model file from 'train'; without it the pair is trained first")
    p.add_argument("--threshold", type=_threshold, default="auto",
                   help="auto (default: mixture for the fused intensity, otsu for --evidence hypernet), otsu, "
                        "kmeans, mixture, or a number")
    p.add_argument("--evidence", default="fused", choices=["fused", "hypernet"],
                   help="fused (default): HyperNet's distance averaged with IR-MAD and CVA, each divided by its "
                        "median; hypernet: HyperNet's distance alone")
    p.add_argument("--distance", default=None, choices=["mse", "cosine", "rx"],
                   help="feature distance (default mse, the paper's)")
    p.add_argument("--batchnorm", default="per-date", choices=["per-date", "running"],
                   help="BatchNorm statistics at detection: each date's own (default) or training's running ones")
    p.add_argument("--report", default=None, help="write an HTML report of the run")
    _add_training_args(p)

    p = sub.add_parser("train", parents=[common], help="train a HyperNet model on a pair and save it")
    p.add_argument("t1")
    p.add_argument("t2")
    p.add_argument("--output", "-o", required=True, help="model file to write")
    p.add_argument("--report", default=None, help="write an HTML training report")
    _add_training_args(p)

    p = sub.add_parser("baseline", parents=[common], help="classic change detection: cva, sam, irmad, pcakmeans")
    p.add_argument("method", choices=["cva", "sam", "irmad", "pcakmeans"])
    p.add_argument("t1")
    p.add_argument("t2")
    p.add_argument("--output", "-o", required=True, help="binary change map to write")
    p.add_argument("--intensity", default=None, help="also write the change intensity")
    p.add_argument("--threshold", type=_threshold, default=None, help="otsu, kmeans or a number (method default)")
    p.add_argument("--bands", type=_band_list, default=None, help="band subset, 1-based")

    p = sub.add_parser("evaluate", parents=[common], help="score a change map against a reference; prints JSON")
    p.add_argument("change", help="binary change map (1/0) or an intensity map (AUC only)")
    p.add_argument("reference", help="reference raster")
    p.add_argument("--changed", type=_values, default=[1.0], help="reference values meaning changed (default 1)")
    p.add_argument("--unchanged", type=_values, default=[0.0], help="reference values meaning unchanged (default 0)")
    p.add_argument("--ignore", type=_values, default=[], help="reference values to ignore")
    p.add_argument("--report", default=None, help="write an HTML evaluation report")

    p = sub.add_parser("inspect", parents=[common], help="show a model file's metadata (and write an HTML report)")
    p.add_argument("model")
    p.add_argument("--report", default=None, help="write an HTML report of the model")
    return parser


def _config(args: argparse.Namespace):
    from .training import TrainConfig

    return TrainConfig(
        epochs=args.epochs, seed=args.seed, device=args.device, schedule=args.schedule,
        learning_rate=args.learning_rate, gamma=args.gamma, width=args.width,
        memory_budget_mb=args.memory_budget_mb,
    )


def _split_threshold(value: str | None) -> tuple[str | None, float | None]:
    if value is None or value in ("auto", "otsu", "kmeans", "mixture"):
        return value, None
    return "fixed", float(value)


def run(args: argparse.Namespace) -> int:
    from . import pipeline
    from .progress import StderrFeedback

    fb = StderrFeedback(quiet=args.quiet)
    if args.command == "detect":
        method, value = _split_threshold(args.threshold)
        res = pipeline.detect_files(
            args.t1, args.t2, args.output, intensity_out=args.intensity, model=args.model, threshold=method,
            threshold_value=value, bands=args.bands, unchanged_mask=args.unchanged_mask, distance=args.distance,
            batchnorm=args.batchnorm, evidence=args.evidence,
            config=_config(args), feedback=fb,
        )
        if args.report:
            from .report import write_detection_report

            write_detection_report(args.report, res)
        print(json.dumps({"output": res.change_path, "intensity": res.intensity_path, "threshold": res.threshold,
                          "changed_pixels": res.changed_pixels, "changed_fraction": round(res.changed_fraction, 6)}))
    elif args.command == "train":
        res = pipeline.train_files(args.t1, args.t2, args.output, bands=args.bands,
                                   unchanged_mask=args.unchanged_mask, config=_config(args), feedback=fb)
        if args.report:
            from .report import write_training_report

            write_training_report(args.report, res)
        print(json.dumps({"model": args.output, "final_loss": res.loss_history[-1], "seconds": round(res.seconds, 2)}))
    elif args.command == "baseline":
        method, value = _split_threshold(args.threshold)
        res = pipeline.baseline_files(args.method, args.t1, args.t2, args.output, intensity_out=args.intensity,
                                      threshold=method, threshold_value=value, bands=args.bands, feedback=fb)
        print(json.dumps({"output": res.change_path, "threshold": res.threshold,
                          "changed_pixels": res.changed_pixels, "changed_fraction": round(res.changed_fraction, 6)}))
    elif args.command == "evaluate":
        metrics = pipeline.evaluate_files(args.change, args.reference, changed=args.changed,
                                          unchanged=args.unchanged, ignore=args.ignore)
        if args.report:
            from .report import write_evaluation_report

            write_evaluation_report(args.report, args.change, args.reference, args.changed, args.unchanged,
                                    args.ignore)
        print(json.dumps(metrics, indent=1, default=float))
    elif args.command == "inspect":
        from .model_file import load_model

        meta = load_model(args.model)[1]
        if args.report:
            from .report import model_report

            model_report(args.report, meta, source=args.model)
        print(json.dumps(meta, indent=1))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Cancelled as exc:
        print(f"cancelled: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("cancelled: interrupted; no output was written.", file=sys.stderr)
        return 130
    except ModuleNotFoundError as exc:
        if exc.name in ("torch", "spectral", "osgeo"):
            print(f"error: the Python package {exc.name!r} is missing for {sys.executable}; install it "
                  "(README: make install).", file=sys.stderr)
            return 2
        raise
