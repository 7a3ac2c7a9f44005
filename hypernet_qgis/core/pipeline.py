"""File-to-file jobs shared by the command line and the QGIS algorithms.

Each job reads rasters with GDAL, checks them, runs the engine and writes its outputs whole (temporary file,
then rename), so a failed or cancelled run leaves no partial output. Errors meant for the user are InputError.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from . import raster_io, streaming
from .errors import InputError
from .evaluation import evaluate_files  # noqa: F401  (the evaluation job, re-exported with the other jobs)
from .progress import Feedback, NullFeedback, SubFeedback, check_cancelled
from .fusion import DEFAULT_EVIDENCE, check_evidence, classic_evidence, fuse, resolve_threshold
from .scaling import standardize
from .thresholds import NODATA, binary_change

if TYPE_CHECKING:  # the HyperNet jobs import torch when they run; the classic and evaluation jobs never do
    from .training import TrainConfig, TrainResult

#: Smallest image side HyperNet is run on: below this the 3x3/5x5/7x7 windows see mostly padding.
MIN_SIDE = 8
#: Default feature distance for the change intensity (see BENCHMARKS.md for why).
DEFAULT_DISTANCE = "mse"


@dataclass
class ImagePair:
    """Two co-registered dates, standardised per date, with their shared valid-pixel mask."""

    x1: np.ndarray
    x2: np.ndarray
    x1s: np.ndarray
    x2s: np.ndarray
    valid: np.ndarray
    info1: raster_io.RasterInfo
    info2: raster_io.RasterInfo
    bands: list[int] | None
    scaling: dict[str, Any]


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


def load_pair(t1: str, t2: str, bands: Sequence[int] | None = None, min_bands: int = 1) -> ImagePair:
    """Read, check and standardise a pair. Raises InputError naming what differs or is wrong."""
    info1, info2 = raster_io.raster_info(t1), raster_io.raster_info(t2)
    raster_io.check_same_grid(info1, info2)
    x1, v1, info1 = raster_io.read_raster(t1, bands)
    x2, v2, info2 = raster_io.read_raster(t2, bands)
    nb = x1.shape[0]
    if nb < min_bands:
        raise InputError(
            f"{_name(t1)} has {nb} band{'s' if nb != 1 else ''} (after the band selection); this method needs at "
            f"least {min_bands}. Use a multi- or hyperspectral image, or a band list with more bands."
        )
    if min(x1.shape[1:]) < MIN_SIDE:
        raise InputError(
            f"The images are {x1.shape[2]}x{x1.shape[1]} pixels; HyperNet needs at least {MIN_SIDE}x{MIN_SIDE} "
            "(its 3x3, 5x5 and 7x7 windows would see mostly padding). Use a larger area."
        )
    valid = v1 & v2
    if not valid.any():
        raise InputError(
            "No pixel is valid in both dates: every pixel is nodata or NaN in T1 or in T2. "
            "Check the layers' nodata values and that the two images overlap."
        )
    x1s, s1 = standardize(x1, valid)
    x2s, s2 = standardize(x2, valid)
    if not (np.any(s1["std"]) or np.any(s2["std"])) or not (np.any(x1s) or np.any(x2s)):
        raise InputError("Every band is constant over the valid pixels of both dates; there is nothing to compare.")
    return ImagePair(x1, x2, x1s, x2s, valid, info1, info2, list(bands) if bands else None, {"t1": s1, "t2": s2})


def _name(path: str) -> str:
    import os

    return os.path.basename(str(path))


def _training_mask(path: str | None, pair: ImagePair) -> np.ndarray | None:
    if not path:
        return None
    mask = raster_io.read_mask(path, pair.info1)
    if not (mask & pair.valid).any():
        raise InputError(f"The unchanged mask {_name(path)} marks no valid pixel (it must be non-zero where unchanged).")
    return mask


def train_pair(
    pair: ImagePair, config: TrainConfig, unchanged_mask: str | None = None, feedback: Feedback | None = None
) -> TrainResult:
    """Train HyperNet on a loaded pair; mask g from the user's unchanged mask or the automatic pre-detection."""
    from .model_file import software_versions
    from .training import train_hypernet

    result = train_hypernet(pair.x1s, pair.x2s, pair.valid, config, _training_mask(unchanged_mask, pair), feedback)
    result.extra.update(
        {
            "band_count": int(pair.x1.shape[0]),
            "band_selection": pair.bands,
            "wavelengths_nm": _selected_wavelengths(pair),
            "scaling": {"method": "per-date per-band standardisation", **pair.scaling},
            "mask_g": "user mask" if unchanged_mask else f"lowest {config.training_fraction:.0%} of standardised CVA",
            "inputs": {"t1": str(pair.info1.path), "t2": str(pair.info2.path)},
            "software": software_versions(),
        }
    )
    return result


def _selected_wavelengths(pair: ImagePair) -> list[float] | None:
    return list(pair.info1.wavelengths_nm) if pair.info1.wavelengths_nm else None


def train_files(
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
    from .model_file import save_model
    from .training import TrainConfig

    feedback = feedback or NullFeedback()
    config = config or TrainConfig()
    config.validate()
    raster_io.refuse_overwriting_inputs([model_out], [t1, t2] + ([unchanged_mask] if unchanged_mask else []))
    pair = load_pair(t1, t2, bands, min_bands=2)
    result = train_pair(pair, config, unchanged_mask, feedback)
    check_cancelled(feedback)
    save_model(model_out, result.model, result.metadata())
    return result


def detect_files(
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
    by its median, and splits the mean with a two-Gaussian mixture (``fusion.py``); "hypernet" uses HyperNet's
    distance alone (Otsu on its root). ``threshold="auto"`` picks the mode's threshold.
    ``batchnorm``: "per-date" normalises each date's features with its own whole-image statistics (default),
    "running" uses the running statistics of training (the paper's eval mode).
    """
    from .detection import DISTANCES, change_intensity
    from .model_file import load_model
    from .training import TrainConfig

    start = time.perf_counter()
    feedback = feedback or NullFeedback()
    config = config or TrainConfig()
    config.validate()
    check_evidence(evidence)
    if threshold == "fixed" and threshold_value is None:
        raise InputError("THRESHOLD_METHOD=fixed needs a THRESHOLD value (a number).")
    outputs = [change_out] + ([intensity_out] if intensity_out else [])
    raster_io.refuse_overwriting_inputs(outputs, [t1, t2] + [p for p in (model, unchanged_mask) if p])
    loaded, metadata = None, {}
    if model:
        loaded, metadata = load_model(model)
        if bands is None and metadata.get("band_selection"):
            bands = metadata["band_selection"]
            feedback.info(f"Using the model's band selection: {bands}.")
    if streaming.whole_pair_mb(raster_io.raster_info(t1), bands) > config.memory_budget_mb:
        if evidence != "hypernet":
            feedback.info("The pair is larger than the memory budget: the change intensity is HyperNet's alone "
                          "(the fusion with IR-MAD and CVA needs both dates in memory).")
        threshold = resolve_threshold(threshold, "hypernet")
        return _detect_streamed(t1, t2, change_out, intensity_out, loaded, metadata, threshold, threshold_value,
                                bands, unchanged_mask, distance, batchnorm, config, feedback, start)
    pair = load_pair(t1, t2, bands, min_bands=2)
    train_result = None
    if loaded is not None:
        expected = int(metadata.get("band_count", -1))
        if expected != pair.x1.shape[0]:
            raise InputError(
                f"The model {_name(model)} was trained on {expected} bands but the images have {pair.x1.shape[0]} "
                "(after the band selection). Use the same sensor and BANDS as in training, or train a new model."
            )
        net = loaded
        distance = distance or metadata.get("distance", DEFAULT_DISTANCE)
    else:
        train_result = train_pair(pair, config, unchanged_mask, SubFeedback(feedback, 0.0, 0.85))
        net = train_result.model
        distance = distance or DEFAULT_DISTANCE
    if distance not in DISTANCES:
        raise InputError(f"Unknown distance {distance!r}; use one of {', '.join(DISTANCES)}.")
    check_cancelled(feedback)
    feedback.info(f"Computing the change intensity ({distance} of the fused features).")
    intensity = change_intensity(
        net, pair.x1s, pair.x2s, pair.valid, distance, config.device, SubFeedback(feedback, 0.85, 0.97),
        memory_budget_mb=config.memory_budget_mb, batchnorm=batchnorm,
    )
    threshold = resolve_threshold(threshold, evidence)
    if evidence == "fused":
        feedback.info("Averaging with IR-MAD and CVA (each divided by its median); threshold: "
                      f"{threshold if threshold != 'fixed' else threshold_value}.")
        intensity = fuse(intensity, classic_evidence(pair.x1, pair.x2, pair.valid), pair.valid)
        binary, thr = binary_change(intensity, pair.valid, threshold, threshold_value)
    else:
        binary, thr = threshold_feature_distance(intensity, pair.valid, threshold, threshold_value)
    check_cancelled(feedback)
    _write_outputs(change_out, intensity_out, binary, intensity, pair.info1)
    changed = int((binary == 1).sum())
    valid_count = int(pair.valid.sum())
    feedback.set_progress(1.0)
    feedback.info(
        f"Threshold {thr:.6g} ({threshold}); {changed} of {valid_count} valid pixels changed "
        f"({100.0 * changed / max(valid_count, 1):.2f}%)."
    )
    return DetectResult(
        change_out, intensity_out, changed, valid_count, thr, threshold, time.perf_counter() - start,
        intensity, binary, train_result, pair, {"distance": distance, "batchnorm": batchnorm, "evidence": evidence},
    )


def _detect_streamed(t1, t2, change_out, intensity_out, loaded, metadata, threshold, threshold_value, bands,
                     unchanged_mask, distance, batchnorm, config, feedback, start) -> DetectResult:
    """detect_files for a pair whose whole arrays exceed the memory budget: read, train and detect by windows."""
    info1, info2 = raster_io.raster_info(t1), raster_io.raster_info(t2)
    raster_io.check_same_grid(info1, info2)
    band_count = len(bands) if bands else info1.bands
    if loaded is not None and int(metadata.get("band_count", -1)) != band_count:
        raise InputError(
            f"The model was trained on {metadata.get('band_count')} bands but the images have {band_count} "
            "(after the band selection). Use the same sensor and BANDS as in training, or train a new model."
        )
    distance = distance or (metadata.get("distance") if loaded is not None else None) or DEFAULT_DISTANCE
    feedback.info(f"The pair needs more than the {config.memory_budget_mb} MB budget in memory: "
                  "reading, training and detecting by windows.")
    out = streaming.detect_files_streamed(
        t1, t2, change_out, intensity_out=intensity_out, threshold=threshold, threshold_value=threshold_value,
        bands=bands, distance=distance, config=config, feedback=feedback, model=loaded,
        unchanged_mask=unchanged_mask, batchnorm=batchnorm,
    )
    return DetectResult(change_out, intensity_out, out["changed_pixels"], out["valid_pixels"], out["threshold"],
                        threshold, time.perf_counter() - start, out["intensity"], out["binary"], out["train"], None,
                        {"distance": distance, "batchnorm": batchnorm, "streamed": True})


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


def _write_outputs(
    change_out: str, intensity_out: str | None, binary: np.ndarray, intensity: np.ndarray, like: raster_io.RasterInfo
) -> None:
    """Write the intensity first, then the change map; remove the intensity if the change map fails."""
    import os

    if intensity_out:
        raster_io.write_raster(intensity_out, np.nan_to_num(intensity, nan=-9999.0), like, nodata=-9999.0,
                               dtype="float32")
    try:
        raster_io.write_raster(change_out, binary, like, nodata=NODATA, dtype="uint8")
    except BaseException:
        if intensity_out and os.path.exists(intensity_out):
            os.remove(intensity_out)
        raise


def baseline_files(
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
    from .baselines import BASELINES, DEFAULT_THRESHOLD_VALUES, DEFAULT_THRESHOLDS

    start = time.perf_counter()
    feedback = feedback or NullFeedback()
    key = {"pcakmeans": "pca_kmeans"}.get(method, method)
    if key not in BASELINES:
        raise InputError(f"Unknown method {method!r}; use one of cva, sam, irmad, pcakmeans.")
    if threshold in (None, "auto"):
        threshold = DEFAULT_THRESHOLDS.get(key, "otsu")
        threshold_value = DEFAULT_THRESHOLD_VALUES.get(key)
    raster_io.refuse_overwriting_inputs([change_out] + ([intensity_out] if intensity_out else []), [t1, t2])
    pair = load_pair(t1, t2, bands, min_bands=1 if method == "cva" else 2)
    feedback.info(f"Running {method} on {pair.x1.shape[0]} bands.")
    intensity = BASELINES[key](pair.x1, pair.x2, pair.valid)
    check_cancelled(feedback)
    binary, thr = binary_change(intensity, pair.valid, threshold, threshold_value)
    _write_outputs(change_out, intensity_out, binary, intensity, pair.info1)
    changed, valid_count = int((binary == 1).sum()), int(pair.valid.sum())
    feedback.set_progress(1.0)
    return DetectResult(change_out, intensity_out, changed, valid_count, thr, threshold,
                        time.perf_counter() - start, intensity, binary, None, pair, {"method": method})
