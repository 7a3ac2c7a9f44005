"""Command line: ``python -m hypernet_qgis {train,detect,evaluate,baseline,inspect}``.

Exit codes: 0 success, 2 bad input (one-line message on stderr), 130 cancelled (Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
from collections.abc import Sequence

from .core import options
from .core.errors import Cancelled, InputError

EPILOG = """examples:
  python -m hypernet_qgis detect t1.tif t2.tif --output change.tif --intensity intensity.tif
  python -m hypernet_qgis train t1.tif t2.tif --output pair.hypernet --epochs 60 --seed 1
  python -m hypernet_qgis detect t1.tif t2.tif --model pair.hypernet --output change.tif
  python -m hypernet_qgis baseline irmad t1.tif t2.tif --output change_irmad.tif
  python -m hypernet_qgis evaluate change.tif reference.tif --changed 1 --unchanged 0
  python -m hypernet_qgis detect t1.tif t2.tif -o change.tif --polygons change.gpkg --min-area 900 --sieve
  python -m hypernet_qgis series d1.tif d2.tif d3.tif --output-dir series/ --dates 2019-05-01,2020-05-01,2021-05-01
  python -m hypernet_qgis series d1.tif d2.tif d3.tif --output-dir series/ --training per-pair --polygons

Any raster GDAL reads works (GeoTIFF, ENVI: give the data file, VRT, ...). When the dates are on different grids,
T2 is warped onto T1's grid over the common area, and the dates of a series onto the first date's grid
(--no-align refuses them instead).
Outputs are tiled, compressed GeoTIFFs with the input's georeferencing; the change map is uint8
(1 change, 0 no change, 255 nodata).
"""


def _band_list(text: str) -> list[int]:
    """'1,2,5-8' -> [1, 2, 5, 6, 7, 8] (1-based band numbers): options.parse_band_list, the syntax QGIS uses."""
    from .core.errors import InputError
    from .core.options import parse_band_list

    try:
        bands = parse_band_list(text, "--bands")
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc).rstrip(".")) from None
    if bands is None:
        raise argparse.ArgumentTypeError(f"bad band list {text!r}; write e.g. 1,2,5-8")
    return bands


def _finite(text: str) -> float:
    """A finite number (nan, inf and 1e400 are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


#: --threshold's names (a number means a fixed threshold).
_THRESHOLD_NAMES = ("auto",) + tuple(m for m in options.THRESHOLD_METHODS if m != "fixed")


def _threshold(text: str) -> str:
    if text in _THRESHOLD_NAMES:
        return text
    try:
        _finite(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"use {', '.join(_THRESHOLD_NAMES)} or a finite number, not {text!r}"
        ) from None
    return text


def _int_in(lo: int, hi: int):
    """argparse type: a whole number from lo to hi."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{text} is outside {lo}..{hi}")
        return value

    return parse


def _float_in(lo: float, hi: float, low_open: bool = False):
    """argparse type: a finite number in [lo, hi] (or (lo, hi] when ``low_open``)."""

    def parse(text: str) -> float:
        value = _finite(text)
        if value < lo or value > hi or (low_open and value == lo):
            raise argparse.ArgumentTypeError(f"{text} is outside {'(' if low_open else '['}{lo:g}, {hi:g}]")
        return value

    return parse


def _values(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad value list {text!r}; write e.g. 1 or 1,2") from None
    if not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"bad value list {text!r}; values must be finite numbers")
    return values


def _add_training_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training")
    g.add_argument(
        "--epochs",
        type=_int_in(1, 1_000_000),
        default=None,
        help="training epochs (default: 60; 200 with --schedule paper)",
    )
    g.add_argument(
        "--seed",
        type=_int_in(0, options.MAX_SEED),
        default=0,
        help="random seed; the same seed gives the same result on the CPU",
    )
    g.add_argument("--device", default="auto", choices=list(options.DEVICES), help="auto uses CUDA when available")
    g.add_argument(
        "--schedule",
        default="default",
        choices=list(options.SCHEDULES),
        help="default: random crops per step (fast); paper: whole image per step as published",
    )
    g.add_argument(
        "--learning-rate",
        type=_float_in(0.0, 1e6, low_open=True),
        default=options.DEFAULT_LEARNING_RATE,
        help=f"SGD learning rate (default {options.DEFAULT_LEARNING_RATE}, the paper's)",
    )
    g.add_argument(
        "--gamma", type=_float_in(0.0, 1e6), default=options.DEFAULT_GAMMA, help="focal cosine loss gamma (default 1)"
    )
    g.add_argument("--width", type=_int_in(1, 4096), default=None, help="branch width (default: from the band count)")
    g.add_argument("--bands", type=_band_list, default=None, help="band subset, 1-based, e.g. 1-100,120-200")
    g.add_argument(
        "--unchanged-mask",
        default=None,
        help="raster of known-unchanged pixels (non-zero) to train on instead of the automatic choice",
    )
    g.add_argument(
        "--memory-budget-mb",
        type=_int_in(1, 2**40),
        default=options.DEFAULT_MEMORY_BUDGET_MB,
        help="peak memory the run should stay within",
    )


class OneLineParser(argparse.ArgumentParser):
    """argparse with its errors as one line (``error: ...``, exit 2) instead of the whole usage block."""

    def error(self, message: str):  # type: ignore[override]
        sys.stderr.write(f"error: {self.prog}: {message}. See {self.prog} --help.\n")
        sys.exit(2)


def _add_polygon_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("change polygons")
    g.add_argument("--polygons", default=None, help="also write the changed regions as polygons (GeoPackage .gpkg)")
    g.add_argument(
        "--min-area",
        type=float,
        default=0.0,
        help="minimum mapping unit in map units² (e.g. m²): smaller regions are dropped (default 0)",
    )
    g.add_argument(
        "--connectivity",
        type=int,
        choices=[4, 8],
        default=8,
        help="pixels touching by edges (4) or by edges and corners (8, default) form one region",
    )
    g.add_argument(
        "--sieve",
        action="store_true",
        help="also set the regions smaller than --min-area to 0 (no change) in the change map",
    )
    g.add_argument("--dates", default=None, help="date pair written into each polygon, e.g. 2019-05-01,2020-05-01")


def _add_align_args(
    p: argparse.ArgumentParser, image: str = "T2", target: str = "T1's grid over the common area"
) -> None:
    g = p.add_argument_group("images on different grids")
    g.add_argument(
        "--align",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=f"warp {image} onto {target} when the grids differ (default); --no-align refuses them",
    )
    g.add_argument(
        "--resampling",
        default="bilinear",
        choices=["nearest", "bilinear", "cubic", "average"],
        help=f"resampling of {image} when it is warped (default bilinear; masks always use nearest)",
    )
    g = p.add_argument_group("bad bands and wavelengths")
    g.add_argument(
        "--keep-bad-bands",
        action="store_true",
        help="use the bands the files mark bad (ENVI bbl, GDAL bbl metadata); left out by default",
    )
    g.add_argument(
        "--drop-water",
        action="store_true",
        help="leave out the water-absorption bands (1350-1450, 1800-1950, > 2450 nm); needs wavelengths",
    )


def _check_polygon_args(args: argparse.Namespace, inputs: list) -> None:
    """Bad polygon options fail before the detection runs."""
    from .core.io import raster_io
    from .core.io.polygons import check_polygon_options, parse_dates

    check_polygon_options(args.polygons, args.min_area, args.connectivity)
    parse_dates(args.dates)
    if args.polygons:
        raster_io.refuse_overwriting_inputs([args.polygons], inputs + [args.output, args.intensity])
    elif args.sieve or args.min_area:
        raise InputError("--min-area and --sieve apply to the change polygons; add --polygons P.gpkg.")


def _finish(args: argparse.Namespace, res, fb, memory_budget_mb: float = options.DEFAULT_MEMORY_BUDGET_MB) -> dict:
    """Polygons and changed area after a detection; the JSON fields they add."""
    from .core.io.polygons import finish_detection, parse_dates

    poly = finish_detection(
        res,
        polygons_out=args.polygons,
        min_area=args.min_area,
        connectivity=args.connectivity,
        sieve=args.sieve,
        dates=parse_dates(args.dates),
        memory_budget_mb=memory_budget_mb,
        feedback=fb,
    )
    area = res.extra["area"]
    out = {"changed_hectares": None if area["changed_hectares"] is None else round(area["changed_hectares"], 6)}
    if poly is not None:
        out.update({"polygons": poly.path, "polygon_count": poly.kept, "dropped_regions": poly.dropped})
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m hypernet_qgis",
        description="HyperNet self-supervised hyperspectral change detection (Hu, Wu, Zhang, IEEE TGRS 2022).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = OneLineParser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="no progress on stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "detect", parents=[common], help="detect change between two dates (trains on the pair unless --model is given)"
    )
    p.add_argument("t1", help="first-date raster")
    p.add_argument("t2", help="second-date raster (same grid as T1)")
    p.add_argument("--output", "-o", required=True, help="binary change map to write (GeoTIFF)")
    p.add_argument("--intensity", default=None, help="also write the change intensity (float32 GeoTIFF)")
    p.add_argument("--model", default=None, help="a model file from 'train'; without it the pair is trained first")
    p.add_argument(
        "--threshold",
        type=_threshold,
        default="auto",
        help="auto (default: mrf for the fused intensity, otsu for --evidence hypernet), otsu, "
        "kmeans, mixture, mrf (the mixture regularised by each pixel's 5x5 neighbours), or a "
        "number",
    )
    p.add_argument(
        "--evidence",
        default="fused",
        choices=["fused", "hypernet"],
        help="fused (default): HyperNet's distance averaged with IR-MAD and CVA, each divided by its "
        "median; hypernet: HyperNet's distance alone",
    )
    p.add_argument(
        "--distance", default=None, choices=["mse", "cosine", "rx"], help="feature distance (default mse, the paper's)"
    )
    p.add_argument(
        "--batchnorm",
        default="per-date",
        choices=["per-date", "running"],
        help="BatchNorm statistics at detection: each date's own (default) or training's running ones",
    )
    p.add_argument("--report", default=None, help="write an HTML report of the run")
    p.add_argument("--save-model", default=None, help="also save the model trained on the pair (not with --model)")
    _add_training_args(p)
    _add_polygon_args(p)
    _add_align_args(p)

    p = sub.add_parser("train", parents=[common], help="train a HyperNet model on a pair and save it")
    p.add_argument("t1")
    p.add_argument("t2")
    p.add_argument("--output", "-o", required=True, help="model file to write")
    p.add_argument("--report", default=None, help="write an HTML training report")
    _add_training_args(p)
    _add_align_args(p)

    p = sub.add_parser("baseline", parents=[common], help="classic change detection: cva, sam, irmad, pcakmeans")
    p.add_argument("method", choices=["cva", "sam", "irmad", "pcakmeans"])
    p.add_argument("t1")
    p.add_argument("t2")
    p.add_argument("--output", "-o", required=True, help="binary change map to write")
    p.add_argument("--intensity", default=None, help="also write the change intensity")
    p.add_argument("--threshold", type=_threshold, default=None, help="otsu, kmeans or a number (method default)")
    p.add_argument("--bands", type=_band_list, default=None, help="band subset, 1-based")
    _add_polygon_args(p)
    _add_align_args(p)

    p = sub.add_parser(
        "series",
        parents=[common],
        help="change along a series of dates: a map per consecutive pair, first date and number of changes",
    )
    p.add_argument("images", nargs="+", help="the images (two or more, on one grid)")
    p.add_argument("--output-dir", required=True, help="folder for change_*.tif, first_change.tif, change_count.tif")
    p.add_argument(
        "--dates",
        default=None,
        help="one date per image, e.g. 2019-05-01,2020-05-01,2021-05-01 (default: from the metadata, "
        "else the order given); the images are ordered by date",
    )
    p.add_argument(
        "--method",
        default="hypernet",
        choices=["hypernet", "cva", "sam", "irmad", "pcakmeans"],
        help="hypernet (trained on the series, or --model for every pair) or a classic method",
    )
    p.add_argument(
        "--training",
        default=options.DEFAULT_SERIES_TRAINING,
        choices=list(options.SERIES_TRAININGS),
        help="hypernet: shared (default) trains one model on all consecutive pairs, once, so every "
        "pair's map comes from the same features (saved as series_model.hypernet); per-pair "
        "trains a model on each pair (N-1 trainings)",
    )
    p.add_argument("--model", default=None, help="a HyperNet model file applied to every pair")
    p.add_argument("--threshold", type=_threshold, default=None, help="otsu, kmeans or a number (method default)")
    p.add_argument("--polygons", action="store_true", help="also write change_polygons.gpkg with the date pairs")
    p.add_argument("--min-area", type=float, default=0.0, help="minimum region area for the polygons (map units²)")
    p.add_argument("--connectivity", type=int, choices=[4, 8], default=8, help="region connectivity (default 8)")
    _add_training_args(p)
    _add_align_args(p, "a date", "the first date's grid (nodata where it does not reach)")

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


def _config(args: argparse.Namespace) -> options.TrainConfig:
    return options.TrainConfig(
        epochs=args.epochs,
        seed=args.seed,
        device=args.device,
        schedule=args.schedule,
        learning_rate=args.learning_rate,
        gamma=args.gamma,
        width=args.width,
        memory_budget_mb=args.memory_budget_mb,
    )


def _split_threshold(value: str | None) -> tuple[str | None, float | None]:
    if value is None or value in _THRESHOLD_NAMES:
        return value, None
    return "fixed", float(value)


def job_paths(args: argparse.Namespace) -> tuple[dict[str, str | None], list[str | None]]:
    """(label -> output path, inputs) of a subcommand, for core.paths.check_job_paths."""
    report = {"The report (--report)": getattr(args, "report", None)}
    if args.command == "detect":
        return (
            {
                "The change map (--output)": args.output,
                "The intensity (--intensity)": args.intensity,
                "The model file (--save-model)": args.save_model,
                **report,
            },
            [args.t1, args.t2, args.model, args.unchanged_mask],
        )
    if args.command == "train":
        return {"The model file (--output)": args.output, **report}, [args.t1, args.t2, args.unchanged_mask]
    if args.command == "baseline":
        return (
            {"The change map (--output)": args.output, "The intensity (--intensity)": args.intensity},
            [args.t1, args.t2],
        )
    if args.command == "evaluate":
        return report, [args.change, args.reference]
    return report, [args.model]


def _reading(args: argparse.Namespace) -> dict:
    """How the pair jobs read their inputs: bands, bad and water bands, alignment."""
    return {
        "bands": args.bands,
        "align": args.align,
        "resampling": args.resampling,
        "drop_bad_bands": not args.keep_bad_bands,
        "drop_water": args.drop_water,
    }


def _detect(args: argparse.Namespace, fb) -> dict:
    from .core import pipeline

    method, value = _split_threshold(args.threshold)
    _check_polygon_args(args, [args.t1, args.t2, args.model, args.unchanged_mask, args.report])
    if args.model and args.save_model:
        raise InputError(
            "--save-model saves a model trained on the pair, but --model is given (nothing is "
            "trained). Leave one of them out."
        )
    res = pipeline.detect_files(
        args.t1,
        args.t2,
        args.output,
        intensity_out=args.intensity,
        model=args.model,
        threshold=method,
        threshold_value=value,
        unchanged_mask=args.unchanged_mask,
        distance=args.distance,
        batchnorm=args.batchnorm,
        evidence=args.evidence,
        config=_config(args),
        feedback=fb,
        **_reading(args),
    )
    args.written += [p for p in (args.output, args.intensity) if p]
    extra = _finish(args, res, fb, args.memory_budget_mb)
    if args.save_model and res.train is not None:
        from .core.hypernet.model_file import save_model

        save_model(args.save_model, res.train.model, res.train.metadata())
        args.written.append(args.save_model)
        extra["model"] = args.save_model
    if args.report:
        from .core.report.report import write_detection_report

        write_detection_report(args.report, res)
    return {
        "output": res.change_path,
        "intensity": res.intensity_path,
        "threshold": res.threshold,
        "changed_pixels": res.changed_pixels,
        "changed_fraction": float(res.changed_fraction),
        **extra,
    }


def _train(args: argparse.Namespace, fb) -> dict:
    from .core import pipeline

    res = pipeline.train_files(
        args.t1,
        args.t2,
        args.output,
        unchanged_mask=args.unchanged_mask,
        config=_config(args),
        feedback=fb,
        **_reading(args),
    )
    args.written.append(args.output)
    if args.report:
        from .core.report.report import write_training_report

        write_training_report(args.report, res)
    return {
        "model": args.output,
        "final_loss": res.loss_history[-1],
        "seconds": round(res.seconds, 2),
        "device": res.device_name,
    }


def _baseline(args: argparse.Namespace, fb) -> dict:
    from .core import pipeline

    method, value = _split_threshold(args.threshold)
    _check_polygon_args(args, [args.t1, args.t2])
    res = pipeline.baseline_files(
        args.method,
        args.t1,
        args.t2,
        args.output,
        intensity_out=args.intensity,
        threshold=method,
        threshold_value=value,
        feedback=fb,
        **_reading(args),
    )
    extra = _finish(args, res, fb)
    return {
        "output": res.change_path,
        "threshold": res.threshold,
        "changed_pixels": res.changed_pixels,
        "changed_fraction": float(res.changed_fraction),
        **extra,
    }


def _series(args: argparse.Namespace, fb) -> dict:
    from .core.series import series_files

    method, value = _split_threshold(args.threshold)
    kwargs: dict = _reading(args)
    if method is not None:
        kwargs.update(threshold=method, threshold_value=value)
    if args.method == "hypernet":
        kwargs.update(model=args.model, unchanged_mask=args.unchanged_mask, config=_config(args))
    elif args.model:
        raise InputError("--model applies to --method hypernet only.")
    dates = [d.strip() for d in args.dates.split(",")] if args.dates else None
    res = series_files(
        args.images,
        args.output_dir,
        dates=dates,
        method=args.method,
        training=args.training,
        polygons=args.polygons,
        min_area=args.min_area,
        connectivity=args.connectivity,
        feedback=fb,
        **kwargs,
    )
    return {
        "dates": res.dates,
        "images": res.images,
        "pair_maps": res.pair_maps,
        "first_change": res.first_change,
        "change_count": res.change_count,
        "polygons": res.polygons,
        "changed_pixels": res.changed_pixels,
        "training": res.training,
        "model": res.model,
        "aligned": res.aligned,
    }


def _evaluate(args: argparse.Namespace, fb) -> dict:
    from .core import pipeline

    metrics = pipeline.evaluate_files(
        args.change, args.reference, changed=args.changed, unchanged=args.unchanged, ignore=args.ignore
    )
    if args.report:
        from .core.report.report import write_evaluation_report

        write_evaluation_report(args.report, args.change, args.reference, args.changed, args.unchanged, args.ignore)
    return metrics


def _inspect(args: argparse.Namespace, fb) -> dict:
    from .core.hypernet.model_metadata import read_metadata  # torch-free: inspect runs without torch

    meta = read_metadata(args.model)
    if args.report:
        from .core.report.report import model_report

        model_report(args.report, meta, source=args.model)
    return meta


#: One function a subcommand: runs the job, returns what is printed as JSON.
COMMANDS = {
    "detect": _detect,
    "train": _train,
    "baseline": _baseline,
    "series": _series,
    "evaluate": _evaluate,
    "inspect": _inspect,
}


def run(args: argparse.Namespace) -> int:
    """Run one subcommand; every output path is checked against the inputs before any work starts."""
    from .core.io.paths import check_job_paths
    from .core.progress import StderrFeedback

    outputs, inputs = job_paths(args)
    check_job_paths(outputs, inputs)
    args.written = []  # outputs already written, for the messages of a later failure or Ctrl-C
    result = COMMANDS[args.command](args, StderrFeedback(quiet=args.quiet))
    if args.command in ("evaluate", "inspect"):  # (indented: read by people)
        print(json.dumps(result, indent=1, default=float))
    else:
        print(json.dumps(result))
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, timeout, a cancelled job): unwinds like Ctrl-C, so temporary files are removed."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def _written_note(args: argparse.Namespace) -> str:
    written = getattr(args, "written", [])
    if not written:
        return "no output was written."
    return f"{', '.join(written)} {'was' if len(written) == 1 else 'were'} written before; nothing else was."


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    with _sigterm_as_interrupt():
        try:
            return run(args)
        except InputError as exc:
            note = f" ({_written_note(args)})" if getattr(args, "written", None) else ""
            print(f"error: {exc}{note}", file=sys.stderr)
            return 2
        except Cancelled as exc:
            print(f"cancelled: {exc}", file=sys.stderr)
            return 130
        except Terminated:
            print(f"terminated: {_written_note(args)}", file=sys.stderr)
            return 128 + signal.SIGTERM
        except KeyboardInterrupt:
            print(f"cancelled: interrupted; {_written_note(args)}", file=sys.stderr)
            return 130
        except ModuleNotFoundError as exc:
            if exc.name in ("torch", "spectral", "osgeo"):
                print(
                    f"error: the Python package {exc.name!r} is missing for {sys.executable}; install it "
                    "(README: make install).",
                    file=sys.stderr,
                )
                return 2
            raise


class _sigterm_as_interrupt:  # noqa: N801  (used as a context manager)
    """Turn SIGTERM into a Terminated exception in the main thread while the CLI runs."""

    def __enter__(self) -> None:
        self.previous = None
        try:
            self.previous = signal.signal(signal.SIGTERM, _on_sigterm)
        except ValueError:  # not the main thread
            pass

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
