"""Change intensity from HyperNet features, and the binary change map."""

from __future__ import annotations

import numpy as np
import torch

from .. import memory
from ..classic.thresholds import CHANGED, NODATA, UNCHANGED, binary_change, choose_threshold  # noqa: F401 (re-exported)
from ..errors import InputError
from ..options import DEFAULT_MEMORY_BUDGET_MB, DISTANCES, THRESHOLD_METHODS  # noqa: F401 (one home: core/options.py)
from ..progress import Feedback, NullFeedback, SubFeedback, check_cancelled
from .calibration import BATCHNORM_MODES, features_with_own_statistics
from .device import describe_device, resolve_device
from .layerwise import DateFeatures, Scratch, date_features
from .network import HyperNet
from .perf import streaming_allocator
from .tiling import tiles


@torch.no_grad()
def fused_features(model: HyperNet, x: np.ndarray, device: torch.device) -> torch.Tensor:
    """Eval-mode fused features (D, rows, cols) of one standardised image (bands, rows, cols)."""
    model.eval()
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).unsqueeze(0).to(device)
    return model.to(device)(t)[0]


def feature_distance(f1: torch.Tensor, f2: torch.Tensor, distance: str) -> torch.Tensor:
    """Per-pixel distance (rows, cols) between two feature maps (D, rows, cols); rx is done in change_intensity."""
    if distance == "mse":
        return (f1 - f2).pow(2).mean(0)
    if distance == "cosine":
        return 1.0 - torch.nn.functional.cosine_similarity(f1, f2, dim=0, eps=1e-6)
    raise InputError(f"Unknown distance {distance!r}; use one of {', '.join(DISTANCES)}.")


def rx_score(diff: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """RX anomaly score of a difference image (D, rows, cols): Mahalanobis distance to the valid pixels' mean."""
    stats = RxStats(diff.shape[0])
    for r0, r1 in _row_chunks(diff.shape[1], diff.shape[0] * diff.shape[2]):
        stats.add(diff[:, r0:r1], valid[r0:r1])
    out = np.full(valid.shape, np.nan, dtype=np.float32)
    for r0, r1 in _row_chunks(diff.shape[1], diff.shape[0] * diff.shape[2]):
        out[r0:r1] = stats.score(diff[:, r0:r1], valid[r0:r1])
    return out


def _row_chunks(rows: int, values_per_row: int, chunk_values: int = 1 << 22) -> list[tuple[int, int]]:
    """Row ranges holding about ``chunk_values`` values each (bounds the float64 temporaries of rx)."""
    step = max(1, chunk_values // max(1, values_per_row))
    return [(r, min(rows, r + step)) for r in range(0, rows, step)]


class RxStats:
    """Streaming mean and covariance of D-dimensional vectors (float64, Chan et al. pairwise merge), then RX scores.

    ``add`` chunks of (D, rows, cols) with their valid masks (pass 1); ``score`` a chunk (pass 2):
    (d - mean)^T C^-1 (d - mean) with C the sample covariance (n - 1) plus a 1e-6 relative ridge.
    Chunks may be NumPy arrays or torch tensors (on any device); float64 temporaries are bounded by ``CHUNK``
    pixels at a time.
    """

    CHUNK = 1 << 15

    def __init__(self, dim: int) -> None:
        self.n = 0
        self.mean = np.zeros(dim)
        self.scatter = np.zeros((dim, dim))
        self._precision: np.ndarray | None = None

    @staticmethod
    def _flat(d: np.ndarray | torch.Tensor) -> torch.Tensor:
        d = torch.from_numpy(np.asarray(d)) if not isinstance(d, torch.Tensor) else d
        return d.reshape(d.shape[0], -1)

    def add(self, d: np.ndarray | torch.Tensor, valid: np.ndarray) -> None:
        """Pass 1: merge the valid pixels of a chunk (D, rows, cols) into the running mean and scatter."""
        flat = self._flat(d)
        keep = torch.from_numpy(np.ascontiguousarray(valid).reshape(-1)).to(flat.device)
        for i in range(0, flat.shape[1], self.CHUNK):
            x = flat[:, i : i + self.CHUNK][:, keep[i : i + self.CHUNK]].double()
            m = int(x.shape[1])
            if not m:
                continue
            mean_b = x.mean(1)
            c = x - mean_b[:, None]
            scatter_b = (c @ c.T).cpu().numpy()
            delta = mean_b.cpu().numpy() - self.mean
            n = self.n + m
            self.scatter += scatter_b + np.outer(delta, delta) * (self.n * m / n)
            self.mean += delta * (m / n)
            self.n = n
        self._precision = None

    def precision(self) -> np.ndarray:
        """Inverse of the ridged sample covariance."""
        if self._precision is None:
            if self.n == 0:
                raise InputError("The change intensity has no valid pixel; the inputs are all nodata.")
            cov = self.scatter / max(1, self.n - 1)
            cov = cov + np.eye(cov.shape[0]) * 1e-6 * max(np.trace(cov) / cov.shape[0], 1e-12)
            self._precision = np.linalg.inv(cov)
        return self._precision

    def score(self, d: np.ndarray | torch.Tensor, valid: np.ndarray) -> np.ndarray:
        """Pass 2: RX score (float32 rows, cols) of a chunk (D, rows, cols); NaN where not valid."""
        flat = self._flat(d)
        prec = torch.from_numpy(self.precision()).to(flat.device)
        mean = torch.from_numpy(self.mean).to(flat.device)[:, None]
        parts = []
        for i in range(0, flat.shape[1], self.CHUNK):
            c = flat[:, i : i + self.CHUNK].double() - mean
            parts.append((c * (prec @ c)).sum(0).float().cpu())
        out = torch.cat(parts).numpy().reshape(valid.shape)
        out[~valid] = np.nan
        return out


def _value_bytes(model: HyperNet) -> int:
    return next(model.parameters()).element_size()


def detection_plan(
    model: HyperNet, rows: int, cols: int, memory_budget_mb: float, device: torch.device, tile: int | None = None
) -> memory.DetectionPlan:
    """How detection of a ``rows`` x ``cols`` pair runs within the budget (``memory.detection_plan``)."""
    return memory.detection_plan(
        model.bands, model.width, rows, cols, memory_budget_mb, model.halo(), device, tile, _value_bytes(model)
    )


def detection_tile(model: HyperNet, rows: int, cols: int, memory_budget_mb: float, device: torch.device) -> int:
    """Tile side for detection: the whole image when it fits the budget, else the largest tile that does."""
    return detection_plan(model, rows, cols, memory_budget_mb, device).tile


def change_intensity(
    model: HyperNet,
    x1s: np.ndarray,
    x2s: np.ndarray,
    valid: np.ndarray,
    distance: str = "mse",
    device: str = "auto",
    feedback: Feedback | None = None,
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
    tile: int | None = None,
    batchnorm: str = "per-date",
    scratch_dir: str | None = None,
) -> np.ndarray:
    """Per-pixel change intensity (float32, NaN where invalid) between the two dates' HyperNet features.

    The whole image is run in one forward pass per date when it fits ``memory_budget_mb``; otherwise the
    features are computed exactly by haloed tiles in linear passes, each layer once per date (``layerwise.py``;
    the intermediate maps in memory or disk scratch as ``memory.detection_plan`` decides), and reduced to the
    per-pixel distance tile by tile, so peak memory is set by the budget, not by the scene (``tile`` forces a tile
    side). ``rx`` reads the features twice: pass 1 accumulates the mean and covariance of the feature difference,
    pass 2 scores. ``x1s``/``x2s`` may be any array-like with window slicing (memory maps, ``streaming`` readers).
    ``batchnorm="per-date"`` (default) normalises each date's features with that date's own whole-image
    BatchNorm statistics, as training does (``calibration.py``); ``"running"`` is the paper's eval mode.
    ``scratch_dir``: where disk scratch maps go (default: the system's temporary folder).
    """
    if distance not in DISTANCES:
        raise InputError(f"Unknown distance {distance!r}; use one of {', '.join(DISTANCES)}.")
    if tuple(x1s.shape) != tuple(x2s.shape) or tuple(valid.shape) != tuple(x1s.shape[1:]):
        raise InputError(f"The two dates and the valid mask differ in shape: {x1s.shape}, {x2s.shape}, {valid.shape}.")
    if batchnorm not in BATCHNORM_MODES:
        raise InputError(f"Unknown BatchNorm mode {batchnorm!r}; use one of {', '.join(BATCHNORM_MODES)}.")
    feedback = feedback or NullFeedback()
    check_cancelled(feedback)
    dev = resolve_device(device)
    feedback.info(f"Detecting on {describe_device(dev, device)}.")
    model.eval()
    rows, cols = x1s.shape[1:]
    plan = detection_plan(model, rows, cols, memory_budget_mb, dev, tile)
    if plan.whole:
        feedback.info("Detection runs the whole image in one pass per date.")
        f1 = _whole_image_features(model, x1s, batchnorm, dev)
        feedback.set_progress(0.5)
        check_cancelled(feedback)
        f2 = _whole_image_features(model, x2s, batchnorm, dev)
        if distance == "rx":
            out = rx_score((f1 - f2).cpu().numpy(), valid)
        else:
            out = feature_distance(f1, f2, distance).float().cpu().numpy()
            out[~valid] = np.nan
        feedback.set_progress(1.0)
        return out.astype(np.float32)
    count = len(tiles(rows, cols, plan.tile))
    where = "memory" if plan.scratch_in_memory else "disk scratch files"
    feedback.info(
        f"Detection runs by {count} tiles of {plan.tile}x{plan.tile} pixels (halo {model.halo()}), each "
        f"layer once per date with its maps in {where}, to stay within the {memory_budget_mb:g} MB "
        "memory budget."
    )
    with streaming_allocator():  # the tiles' blocks go back to the system at once: bounded peak
        dtype = torch.empty(0, dtype=next(model.parameters()).dtype).numpy().dtype
        with Scratch(rows, cols, dtype, plan.scratch_in_memory, scratch_dir) as scratch:
            per_date = batchnorm == "per-date"
            d1 = date_features(model, x1s, plan.tile, dev, scratch, "t1_", per_date, SubFeedback(feedback, 0.0, 0.45))
            d2 = date_features(model, x2s, plan.tile, dev, scratch, "t2_", per_date, SubFeedback(feedback, 0.45, 0.9))
            return _tiled_intensity(d1, d2, valid, distance, plan.tile, SubFeedback(feedback, 0.9, 1.0))


def _whole_image_features(model: HyperNet, x, batchnorm: str, dev: torch.device) -> torch.Tensor:
    """One date's fused features in one pass: its own BatchNorm statistics ("per-date") or the running ones."""
    x = np.asarray(x)  # a window reader reads the whole image here (the plan found that it fits)
    if batchnorm == "per-date":
        return features_with_own_statistics(model, x, dev)
    return fused_features(model, x, dev)


def _tiled_intensity(
    d1: DateFeatures, d2: DateFeatures, valid: np.ndarray, distance: str, tile: int, feedback: Feedback
) -> np.ndarray:
    """The tiled path of change_intensity: both dates' features read tile by tile and reduced to the distance."""
    rows, cols = valid.shape
    parts = tiles(rows, cols, tile)
    passes = 2 if distance == "rx" else 1
    out = np.full((rows, cols), np.nan, dtype=np.float32)
    stats = RxStats(2 * d1.model.width) if distance == "rx" else None
    for p in range(passes):
        for i, t in enumerate(parts):
            check_cancelled(feedback)
            r0, r1, c0, c1 = t
            f1, f2 = d1.features(t), d2.features(t)
            v = valid[r0:r1, c0:c1]
            if stats is None:
                d = feature_distance(f1, f2, distance).float().cpu().numpy()
                d[~v] = np.nan
                out[r0:r1, c0:c1] = d
            elif p == 0:
                stats.add(f1 - f2, v)
            else:
                out[r0:r1, c0:c1] = stats.score(f1 - f2, v)
            del f1, f2
            feedback.set_progress((p + (i + 1) / len(parts)) / passes)
    feedback.set_progress(1.0)
    return out
