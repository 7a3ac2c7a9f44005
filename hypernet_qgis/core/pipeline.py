"""File-to-file jobs shared by the command line and the QGIS algorithms: one function per job.

Each job checks its inputs before any work, opens the pair (``pair.open_pair``: in memory, or by windows from
scratch files when the pair exceeds the memory budget; the rest of the job is the same code either way), runs
the engine and writes its outputs as one set (temporary files, verified, then renamed), so a failed or cancelled
run leaves no partial output. Errors meant for the user are InputError.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from .classic.evaluation import evaluate_files  # noqa: F401  (the evaluation job, re-exported with the other jobs)
from .classic.thresholds import NODATA, binary_change, threshold_feature_distance  # noqa: F401 (re-exported)
from .errors import InputError
from .fusion import DEFAULT_EVIDENCE, check_evidence, classic_evidence, fuse, resolve_threshold
from .io import raster_io
from .memory import working_budget_mb
from .options import DEFAULT_DISTANCE, INTENSITY_NODATA, MIN_SIDE  # noqa: F401 (one home: core/options.py)
from .pair import ImagePair, load_pair, open_pair  # noqa: F401 (load_pair re-exported for tools and tests)
from .progress import Feedback, NullFeedback, SubFeedback, check_cancelled

if TYPE_CHECKING:  # the HyperNet jobs import torch when they run; the classic and evaluation jobs never do
    from .hypernet.network import HyperNet
    from .hypernet.training import TrainConfig, TrainResult


@dataclass
class DetectResult:
    """What a detection produced (paths, counts, threshold) and the arrays a report needs."""

    change_path: str
    intensity_path: str | None
    changed_pixels: int
    valid_pixels: int
    threshold: float
    threshold_method: str
    seconds: float
    intensity: np.ndarray = field(repr=False)
    binary: np.ndarray = field(repr=False)
    train: TrainResult | None = None
    pair: ImagePair | None = field(default=None, repr=False)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def changed_fraction(self) -> float:
        return self.changed_pixels / self.valid_pixels if self.valid_pixels else 0.0


def _name(path: str) -> str:
    import os

    return os.path.basename(str(path))


def _training_mask(path: str | None, pair: ImagePair) -> np.ndarray | None:
    if not path:
        return None
    mask = raster_io.read_mask(path, pair.info1)
    if not (mask & pair.valid).any():
        raise InputError(
            f"The unchanged mask {_name(path)} marks no valid pixel (it must be non-zero where unchanged)."
        )
    return mask


def pair_training_mask(pair: ImagePair, config: TrainConfig, unchanged_mask: str | None = None) -> np.ndarray:
    """Mask g of a loaded pair: the user's unchanged mask, else the lowest share of the pre-detection score."""
    from .hypernet.training import lowest_share

    mask = _training_mask(unchanged_mask, pair)
    if mask is None:
        config.validate()
        mask = lowest_share(pair.pre_detection_score(), pair.valid, config.training_fraction)
    return mask


def _model_metadata(pair: ImagePair, config: TrainConfig, unchanged_mask: str | None) -> dict[str, Any]:
    """What a model file records about the data it was trained on (bands, wavelengths, scaling, mask g)."""
    from .hypernet.model_file import software_versions

    return {
        "band_count": pair.band_count,
        "band_selection": pair.bands,
        "wavelengths_nm": pair.wavelengths_nm,
        "scaling": {"method": "per-date per-band standardisation", **pair.scaling},
        "mask_g": "user mask" if unchanged_mask else f"lowest {config.training_fraction:.0%} of standardised CVA",
        "inputs": {"t1": str(pair.info1.path), "t2": str(pair.info2.path)},
        "software": software_versions(),
    }


def train_pair(
    pair: ImagePair, config: TrainConfig, unchanged_mask: str | None = None, feedback: Feedback | None = None
) -> TrainResult:
    """Train HyperNet on a loaded pair; mask g from the user's unchanged mask or the automatic pre-detection."""
    from .hypernet.training import train_hypernet

    mask = pair_training_mask(pair, config, unchanged_mask)
    working = replace(config, memory_budget_mb=working_budget_mb(config.memory_budget_mb, pair.held_mb))
    result = train_hypernet(pair.x1s, pair.x2s, pair.valid, working, mask, feedback)
    result.config = config  # (the user's settings, as recorded in the model and the report)
    result.extra.update(_model_metadata(pair, config, unchanged_mask))
    return result


def train_pairs_files(
    pairs: Sequence[tuple[str, str]],
    model_out: str,
    *,
    bands: Sequence[int] | None = None,
    unchanged_mask: str | None = None,
    config: TrainConfig | None = None,
    feedback: Feedback | None = None,
    metadata: dict[str, Any] | None = None,
) -> TrainResult:
    """Train one model on several pairs of one grid (a series' consecutive pairs) and save it to ``model_out``.

    All pairs are open at once, each within an equal share of the memory budget (``memory.shared_pair_budget_mb``:
    a pair over its share is read by windows); mask g is chosen per pair; every step takes its crops from the
    pairs in turn (``training.train_hypernet_pairs``). ``metadata`` is added to the model file's (e.g. the dates).
    The model file records the first pair's scaling and inputs, and ``inputs["pairs"]`` lists every pair.
    """
    import contextlib

    from .hypernet.model_file import save_model
    from .hypernet.training import TrainConfig, TrainingPair, train_hypernet_pairs
    from .memory import shared_pair_budget_mb

    feedback = feedback or NullFeedback()
    config = config or TrainConfig()
    config.validate()
    inputs = [p for pair in pairs for p in pair] + ([unchanged_mask] if unchanged_mask else [])
    raster_io.refuse_overwriting_inputs([model_out], inputs)
    share = shared_pair_budget_mb(config.memory_budget_mb, len(pairs))
    with contextlib.ExitStack() as stack:
        opened: list[ImagePair] = []
        for i, (t1, t2) in enumerate(pairs):
            check_cancelled(feedback)
            pair = stack.enter_context(
                open_pair(t1, t2, bands, min_bands=2, memory_budget_mb=share, feedback=SubFeedback(feedback, 0.0, 0.0))
            )
            pair.x1 = pair.x2 = None  # the raw dates: only the classic detectors need them, not training
            opened.append(pair)
            feedback.set_progress(0.1 * (i + 1) / len(pairs))
        training = [TrainingPair(p.x1s, p.x2s, p.valid, pair_training_mask(p, config, unchanged_mask)) for p in opened]
        result = train_hypernet_pairs(training, config, SubFeedback(feedback, 0.1, 1.0))
        result.extra.update(_model_metadata(opened[0], config, unchanged_mask))
        result.extra["inputs"]["pairs"] = [[str(t1), str(t2)] for t1, t2 in pairs]
        result.extra.update(metadata or {})
    check_cancelled(feedback)
    save_model(model_out, result.model, result.metadata())
    return result


def _train_files(
    t1: str,
    t2: str,
    model_out: str,
    *,
    bands: Sequence[int] | None = None,
    unchanged_mask: str | None = None,
    config: TrainConfig | None = None,
    feedback: Feedback | None = None,
) -> TrainResult:
    """Train on a pair of rasters and save the model file."""
    from .hypernet.device import describe_engine
    from .hypernet.model_file import save_model
    from .hypernet.training import TrainConfig

    feedback = feedback or NullFeedback()
    feedback.info(describe_engine())
    config = config or TrainConfig()
    config.validate()
    raster_io.refuse_overwriting_inputs([model_out], [t1, t2] + ([unchanged_mask] if unchanged_mask else []))
    with open_pair(t1, t2, bands, min_bands=2, memory_budget_mb=config.memory_budget_mb, feedback=feedback) as pair:
        result = train_pair(pair, config, unchanged_mask, feedback)
    check_cancelled(feedback)
    save_model(model_out, result.model, result.metadata())
    return result


def _detect_files(
    t1: str,
    t2: str,
    change_out: str,
    *,
    intensity_out: str | None = None,
    model: str | None = None,
    threshold: str = "auto",
    threshold_value: float | None = None,
    bands: Sequence[int] | None = None,
    unchanged_mask: str | None = None,
    distance: str | None = None,
    batchnorm: str = "per-date",
    config: TrainConfig | None = None,
    feedback: Feedback | None = None,
    evidence: str = DEFAULT_EVIDENCE,
) -> DetectResult:
    """Detect change between two rasters: train on the pair (or load a model), intensity, threshold, write.

    ``evidence``: "fused" (default) averages HyperNet's root feature distance with IR-MAD and CVA, each divided
    by its median, and maps the mean with a two-Gaussian mixture regularised by each pixel's neighbours ("mrf",
    ``fusion.py``); "hypernet" uses HyperNet's distance alone (Otsu on its root). ``threshold="auto"`` picks the
    mode's threshold. Both routes fuse: on the windowed route IR-MAD reads the scratch files by strips.
    ``batchnorm``: "per-date" normalises each date's features with its own whole-image statistics (default),
    "running" uses the running statistics of training (the paper's eval mode).
    """
    from .hypernet.detection import DISTANCES, change_intensity
    from .hypernet.device import describe_engine
    from .hypernet.model_file import load_model
    from .hypernet.training import TrainConfig

    start = time.perf_counter()
    feedback = feedback or NullFeedback()
    feedback.info(describe_engine())
    config = config or TrainConfig()
    config.validate()
    check_evidence(evidence)
    if threshold == "fixed" and threshold_value is None:
        raise InputError("THRESHOLD_METHOD=fixed needs a THRESHOLD value (a number).")
    outputs = [change_out] + ([intensity_out] if intensity_out else [])
    raster_io.refuse_overwriting_inputs(outputs, [t1, t2] + [p for p in (model, unchanged_mask) if p])
    loaded: HyperNet | None = None
    metadata: dict[str, Any] = {}
    if model:
        loaded, metadata = load_model(model)
        if bands is None and metadata.get("band_selection"):
            bands = metadata["band_selection"]
            feedback.info(f"Using the model's band selection: {bands}.")
    stages: dict[str, float] = {}
    clock = time.perf_counter()
    with open_pair(
        t1, t2, bands, min_bands=2, memory_budget_mb=config.memory_budget_mb, feedback=SubFeedback(feedback, 0.0, 0.05)
    ) as pair:
        stages["read_standardise_s"] = time.perf_counter() - clock
        train_result = None
        if loaded is not None:
            expected = int(metadata.get("band_count", -1))
            if expected != pair.band_count:
                raise InputError(
                    f"The model {_name(str(model))} was trained on {expected} bands but the images have "
                    f"{pair.band_count} (after the band selection). Use the same sensor and BANDS as in training, "
                    "or train a new model."
                )
            net = loaded
            distance = distance or metadata.get("distance", DEFAULT_DISTANCE)
        else:
            clock = time.perf_counter()
            train_result = train_pair(pair, config, unchanged_mask, SubFeedback(feedback, 0.05, 0.85))
            stages["train_s"] = time.perf_counter() - clock
            net = train_result.model
            distance = distance or DEFAULT_DISTANCE
        if distance not in DISTANCES:
            raise InputError(f"Unknown distance {distance!r}; use one of {', '.join(DISTANCES)}.")
        check_cancelled(feedback)
        feedback.info(f"Computing the change intensity ({distance} of the fused features).")
        clock = time.perf_counter()
        intensity = change_intensity(
            net,
            pair.x1s,
            pair.x2s,
            pair.valid,
            distance,
            config.device,
            SubFeedback(feedback, 0.85, 0.97),
            memory_budget_mb=working_budget_mb(config.memory_budget_mb, pair.held_mb),
            batchnorm=batchnorm,
            scratch_dir=pair.windowed_source.scratch if pair.windowed_source is not None else None,
        )
        stages["detect_s"] = time.perf_counter() - clock
        threshold = resolve_threshold(threshold, evidence)
        if evidence == "fused":
            feedback.info(
                "Averaging with IR-MAD and CVA (each divided by its median); threshold: "
                f"{threshold if threshold != 'fixed' else threshold_value}"
                f"{' (IR-MAD reads the windowed pair by strips)' if pair.windowed else ''}."
            )
            clock = time.perf_counter()
            classic = classic_evidence(
                pair, working_budget_mb(config.memory_budget_mb, pair.held_mb), SubFeedback(feedback, 0.97, 0.99)
            )
            intensity = fuse(intensity, classic, pair.valid)
            stages["classic_s"] = time.perf_counter() - clock
    if evidence == "fused":
        binary, thr = binary_change(intensity, pair.valid, threshold, threshold_value)
    else:
        binary, thr = threshold_feature_distance(intensity, pair.valid, threshold, threshold_value)
    check_cancelled(feedback)
    clock = time.perf_counter()
    _write_outputs(change_out, intensity_out, binary, intensity, pair.info1)
    stages["write_s"] = time.perf_counter() - clock
    changed = int((binary == 1).sum())
    valid_count = int(pair.valid.sum())
    feedback.set_progress(1.0)
    how = " (the mixture's split, then each pixel weighed with its 5x5 neighbours)" if threshold == "mrf" else ""
    feedback.info(
        f"Threshold {thr:.6g} ({threshold}{how}); {changed} of {valid_count} valid pixels changed "
        f"({100.0 * changed / max(valid_count, 1):.2f}%)."
    )
    extra = {"distance": distance, "batchnorm": batchnorm, "evidence": evidence, "stages_s": stages}
    if pair.windowed:
        extra["streamed"] = True
    return DetectResult(
        change_out,
        intensity_out,
        changed,
        valid_count,
        thr,
        threshold,
        time.perf_counter() - start,
        intensity,
        binary,
        train_result,
        pair,
        extra,
    )


def _write_outputs(
    change_out: str, intensity_out: str | None, binary: np.ndarray, intensity: np.ndarray, like: raster_io.RasterInfo
) -> None:
    """Write the change map and the intensity as one set: both replaced, or (on any failure) both kept."""
    outputs = [raster_io.RasterOutput(change_out, binary, NODATA, "uint8")]
    if intensity_out:
        outputs.append(
            raster_io.RasterOutput(
                intensity_out, np.nan_to_num(intensity, nan=INTENSITY_NODATA), INTENSITY_NODATA, "float32"
            )
        )
    raster_io.write_rasters(outputs, like)


def _baseline_files(
    method: str,
    t1: str,
    t2: str,
    change_out: str,
    *,
    intensity_out: str | None = None,
    threshold: str | None = None,
    threshold_value: float | None = None,
    bands: Sequence[int] | None = None,
    feedback: Feedback | None = None,
) -> DetectResult:
    """Classic change detection (CVA, SAM, IR-MAD, PCA-k-means) between two rasters."""
    from .classic.baselines import BASELINES, DEFAULT_THRESHOLD_VALUES, DEFAULT_THRESHOLDS

    start = time.perf_counter()
    feedback = feedback or NullFeedback()
    key = {"pcakmeans": "pca_kmeans"}.get(method, method)
    if key not in BASELINES:
        raise InputError(f"Unknown method {method!r}; use one of cva, sam, irmad, pcakmeans.")
    if threshold in (None, "auto"):
        threshold = DEFAULT_THRESHOLDS.get(key, "otsu")
        threshold_value = DEFAULT_THRESHOLD_VALUES.get(key)
    raster_io.refuse_overwriting_inputs([change_out] + ([intensity_out] if intensity_out else []), [t1, t2])
    pair = load_pair(
        t1,
        t2,
        bands,
        min_bands=1 if method == "cva" else 2,
        what={"pcakmeans": "PCA-k-means", "irmad": "IR-MAD"}.get(method, method.upper()),
    )
    x1, x2 = pair.raw_dates()
    feedback.info(f"Running {method} on {x1.shape[0]} bands.")
    intensity = BASELINES[key](x1, x2, pair.valid)
    check_cancelled(feedback)
    binary, thr = binary_change(intensity, pair.valid, threshold, threshold_value)
    _write_outputs(change_out, intensity_out, binary, intensity, pair.info1)
    changed, valid_count = int((binary == 1).sum()), int(pair.valid.sum())
    feedback.set_progress(1.0)
    return DetectResult(
        change_out,
        intensity_out,
        changed,
        valid_count,
        thr,
        threshold,
        time.perf_counter() - start,
        intensity,
        binary,
        None,
        pair,
        {"method": method},
    )


# ----------------------------------------------------------------------------- pairs on different grids (#11)


def _on_one_grid(
    job,
    method: str | None,
    t1: str,
    t2: str,
    out: str,
    align: bool,
    resampling: str,
    kwargs: dict[str, Any],
    drop_bad_bands: bool = True,
    drop_water: bool = False,
):
    """Run ``job`` on the pair, T2 warped onto T1's grid over the common area first when the grids differ
    (core.io.align); ``align=False`` refuses differing grids as before. Results name the original files.
    The bands either date marks bad (ENVI bbl) and, with ``drop_water``, the water-absorption bands are left out
    (core.io.bands), unless a model brings its own band selection."""
    from .io.align import aligned_pair
    from .io.bands import choose_bands

    feedback = kwargs.get("feedback") or NullFeedback()
    mask = kwargs.get("unchanged_mask")
    raster_io.refuse_overwriting_inputs([out, kwargs.get("intensity_out")], [t1, t2, kwargs.get("model"), mask])
    if kwargs.get("model") and kwargs.get("bands") is None:  # the model's bands, by wavelength when known
        from .hypernet.model_file import load_model
        from .io.bands import bands_for_model

        kwargs["bands"] = bands_for_model(t1, load_model(kwargs["model"])[1], feedback)
    else:
        kwargs["bands"] = choose_bands(
            t1, t2, kwargs.get("bands"), drop_bad=drop_bad_bands, drop_water=drop_water, feedback=feedback
        )
    with aligned_pair(t1, t2, mask, enabled=align, resampling=resampling, feedback=feedback) as pair:
        if mask:
            kwargs["unchanged_mask"] = pair.mask
        args = (method, pair.t1, pair.t2, out) if method is not None else (pair.t1, pair.t2, out)
        result = job(*args, **kwargs)
        if pair.note:
            _name_the_given_files(result, method, str(t1), str(t2), pair.t1, pair.t2)
            result.extra["align"] = pair.note
    return result


def _name_the_given_files(result: Any, method: str | None, t1: str, t2: str, used1: str, used2: str) -> None:
    """After a job on an aligned pair (inside its temporary folder): the report's pictures are read now from the
    warped files ``used1``/``used2``, then the results name the files the user gave, not the temporary VRTs."""
    loaded = getattr(result, "pair", None)
    if loaded is not None:
        loaded.keep_report_dates()  # a windowed pair re-reads its pictures from the files: not after they go
        loaded.info1.path, loaded.info2.path = t1, t2
    train = result if method is None and hasattr(result, "model") else getattr(result, "train", None)
    if train is not None and isinstance(train.extra.get("inputs"), dict):
        from .report.report import training_pictures

        try:
            train.report_images = training_pictures(train, used1, used2)
        except Exception:  # noqa: BLE001  (only the report's pictures; the report says so by their absence)
            train.report_images = None
        train.extra["inputs"].update({"t1": t1, "t2": t2})


def train_files(
    t1: str,
    t2: str,
    model_out: str,
    *,
    align: bool = True,
    resampling: str = "bilinear",
    drop_bad_bands: bool = True,
    drop_water: bool = False,
    **kwargs: Any,
) -> TrainResult:
    """Train on a pair of rasters and save the model file (see _train_files; ``align``: core.io.align;
    ``drop_bad_bands``, ``drop_water``: core.io.bands)."""
    return _on_one_grid(_train_files, None, t1, t2, model_out, align, resampling, kwargs, drop_bad_bands, drop_water)


def detect_files(
    t1: str,
    t2: str,
    change_out: str,
    *,
    align: bool = True,
    resampling: str = "bilinear",
    drop_bad_bands: bool = True,
    drop_water: bool = False,
    **kwargs: Any,
) -> DetectResult:
    """Detect change between two rasters (see _detect_files for the options; ``align``: core.io.align;
    ``drop_bad_bands``, ``drop_water``: core.io.bands)."""
    return _on_one_grid(_detect_files, None, t1, t2, change_out, align, resampling, kwargs, drop_bad_bands, drop_water)


def baseline_files(
    method: str,
    t1: str,
    t2: str,
    change_out: str,
    *,
    align: bool = True,
    resampling: str = "bilinear",
    drop_bad_bands: bool = True,
    drop_water: bool = False,
    **kwargs: Any,
) -> DetectResult:
    """Classic change detection between two rasters (see _baseline_files; ``align``: core.io.align;
    ``drop_bad_bands``, ``drop_water``: core.io.bands)."""
    return _on_one_grid(
        _baseline_files, method, t1, t2, change_out, align, resampling, kwargs, drop_bad_bands, drop_water
    )
