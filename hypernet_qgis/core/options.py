"""The options of every job, their defaults and choices, in one torch-free place that both front ends use.

The QGIS algorithms and the CLI build these dataclasses and values from their parameters; the engine consumes
them. Nothing here imports torch, GDAL or QGIS.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError

#: Value of the change map (uint8) for pixels that are nodata in either date; 1 = change, 0 = no change.
CHANGED, UNCHANGED, NODATA = 1, 0, 255
#: Nodata value of the float32 change intensity files.
INTENSITY_NODATA = -9999.0
#: Smallest image side HyperNet runs on: below this its 3x3, 5x5 and 7x7 windows see mostly padding.
MIN_SIDE = 8
#: Working memory of a job unless the user says otherwise: fits an 8 GB laptop.
DEFAULT_MEMORY_BUDGET_MB = 4096
#: Smallest memory budget offered in QGIS (MB); the engine takes any positive budget (tests force tiling with tiny
#: ones).
MIN_MEMORY_BUDGET_MB = 64

DEVICES = ("auto", "cpu", "cuda")
SCHEDULES = ("default", "paper")
#: mixture: the boundary of a two-Gaussian mixture; mrf: that mixture's map regularised by its neighbours (a Potts
#: Markov random field, core/classic/thresholds.mrf_change); auto (Detect Change): mrf for the fused intensity, Otsu
#: on the root for HyperNet alone.
THRESHOLD_METHODS = ("otsu", "kmeans", "mixture", "mrf", "fixed")
#: mse: the paper's per-pixel mean squared feature difference; cosine: 1 - cosine similarity of the features;
#: rx: Mahalanobis (RX) distance of the feature difference from its own mean and covariance.
DISTANCES = ("mse", "cosine", "rx")
DEFAULT_DISTANCE = "mse"
#: How detection normalises the features: each date's own whole-image BatchNorm statistics, or the running
#: statistics of training (the paper's eval mode).
BATCHNORM_MODES = ("per-date", "running")
#: Classic detectors (CLI/QGIS names).
CLASSIC_METHODS = ("cva", "sam", "irmad", "pcakmeans")
#: How HyperNet trains along a series of dates: "shared" = one model on crops from all consecutive pairs (saved as
#: series_model.hypernet), "per-pair" = a model trained on each pair alone (the paper's setting for one pair).
SERIES_TRAININGS = ("shared", "per-pair")
#: Shared by default: one training instead of N-1 (a series of 5 dates trains once, not 4 times), and every pair's
#: change intensity comes from the same features, so the maps of the pairs are comparable; it also learns from
#: N-1 times as many unchanged pixels. Per pair adapts each model to its own pair, at N-1 times the training time.
DEFAULT_SERIES_TRAINING = "shared"

#: Share of the valid pixels, lowest pre-detection score first, used as training pixels (mask g).
DEFAULT_TRAINING_FRACTION = 0.5
DEFAULT_LEARNING_RATE = 0.05
DEFAULT_GAMMA = 1.0
#: Epochs of each schedule when the user gives none. Default schedule: 20 ranked change as well as 60 and did better
#: in the default fusion with IR-MAD and CVA, in a third of the time (BENCHMARKS.md, issue 10).
DEFAULT_EPOCHS = {"default": 20, "paper": 200}
#: What the change intensity of Detect Change is made of: "fused" = HyperNet's root feature distance averaged
#: with IR-MAD and CVA, each divided by its median (core/fusion.py); "hypernet" = HyperNet's distance alone.
EVIDENCE_MODES = ("fused", "hypernet")
DEFAULT_EVIDENCE = "fused"
#: Largest random seed the CLI and QGIS accept: QGIS's integer spin box holds at most 2**31 - 1 (a larger maximum
#: makes the Processing dialog refuse the parameter), and every torch and numpy generator takes it.
MAX_SEED = 2**31 - 1


@dataclass
class TrainConfig:
    """Training settings. The paper's optimiser is the default; ``schedule`` picks how steps are drawn.

    - ``paper``: every step is the whole image (both dates), ``epochs`` steps (200 in the paper).
    - ``default``: every step is a batch of random crops of both dates covering about ``pixels_per_step``
      pixels; fewer, cheaper steps (see BENCHMARKS.md for the accuracy and speed of each).
    """

    epochs: int | None = None
    learning_rate: float = DEFAULT_LEARNING_RATE
    momentum: float = 0.9
    weight_decay: float = 1e-4
    gamma: float = DEFAULT_GAMMA
    seed: int = 0
    device: str = "auto"
    width: int | None = None
    schedule: str = "default"
    training_fraction: float = DEFAULT_TRAINING_FRACTION
    crop_size: int = 64
    pixels_per_step: int = 65536
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB

    def resolved_epochs(self) -> int:
        if self.epochs is not None:
            return int(self.epochs)
        return DEFAULT_EPOCHS["paper" if self.schedule == "paper" else "default"]

    def validate(self) -> None:
        """InputError naming the setting and a valid range (before any data is read)."""
        import math

        if self.schedule not in SCHEDULES:
            raise InputError(f"Unknown schedule {self.schedule!r}; use 'default' or 'paper'.")
        if self.device not in DEVICES:
            raise InputError(f"Unknown device {self.device!r}; use one of {', '.join(DEVICES)}.")
        if self.epochs is not None and self.epochs < 1:
            raise InputError(f"EPOCHS must be at least 1 (got {self.epochs}).")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise InputError(f"LEARNING_RATE must be a positive number (got {self.learning_rate}).")
        if not (math.isfinite(self.gamma) and self.gamma >= 0):
            raise InputError(f"GAMMA must be a number >= 0 (got {self.gamma}).")
        if not 0 < self.training_fraction <= 1:
            raise InputError(f"The training fraction must be in (0, 1] (got {self.training_fraction}).")
        if self.width is not None and self.width < 1:
            raise InputError(f"The branch width must be positive (got {self.width}).")
        if not 0 <= int(self.seed) <= MAX_SEED:
            raise InputError(f"SEED must be between 0 and {MAX_SEED} (got {self.seed}).")
        if not (math.isfinite(self.memory_budget_mb) and self.memory_budget_mb > 0):
            raise InputError(f"The memory budget must be a positive number of MB (got {self.memory_budget_mb}).")


def parse_band_list(text: str | None, label: str = "BANDS") -> list[int] | None:
    """'1,2,5-8' -> [1, 2, 5, 6, 7, 8]; empty -> None (all bands). The one band-list syntax of both front ends.

    Band numbers start at 1; ranges run upwards (``5-3`` is refused) and a band may be named once only. Spaces
    and ``;`` are allowed as in ``1; 5 - 8``. InputError naming ``label`` on anything else.
    """
    if text is None or not str(text).strip():
        return None
    bands: list[int] = []
    for part in str(text).replace(" ", "").replace(";", ",").split(","):
        if not part:
            continue
        try:
            if "-" in part[1:]:
                lo, hi = (int(v) for v in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                bands.extend(range(lo, hi + 1))
            else:
                bands.append(int(part))
        except ValueError:
            raise InputError(
                f"{label} {text!r} is not a band list. Write band numbers from 1, e.g. 1-50,60,70-80, "
                "or leave it empty for all bands."
            ) from None
    if not bands:
        return None
    if min(bands) < 1:
        raise InputError(f"{label} {text!r} contains a band below 1; bands are numbered from 1.")
    if len(set(bands)) != len(bands):
        raise InputError(f"{label} {text!r} names a band twice; list each band once.")
    return bands
