"""Change intensity from HyperNet features, and the binary change map."""

from __future__ import annotations

import numpy as np
import torch

from . import tiling as _tiling
from .calibration import BATCHNORM_MODES, calibrate_batchnorm
from .device import resolve_device
from .errors import InputError
from .perf import device_budget_mb, streaming_allocator
from .network import HyperNet
from .progress import Feedback, NullFeedback, SubFeedback, check_cancelled
from .thresholds import CHANGED, NODATA, UNCHANGED, binary_change, choose_threshold  # noqa: F401 (re-exported)
from .options import DEFAULT_MEMORY_BUDGET_MB, DISTANCES, THRESHOLD_METHODS  # noqa: F401 (one home: core/options.py)


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
            x = flat[:, i: i + self.CHUNK][:, keep[i: i + self.CHUNK]].double()
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
            c = flat[:, i: i + self.CHUNK].double() - mean
            parts.append((c * (prec @ c)).sum(0).float().cpu())
        out = torch.cat(parts).numpy().reshape(valid.shape)
        out[~valid] = np.nan
        return out


class _MeanProgress:
    """Feedback for two interleaved jobs: reports the mean of their progress (monotonic if each is)."""

    def __init__(self, feedback: Feedback, lo: float, hi: float) -> None:
        self.feedback, self.lo, self.hi, self.parts = feedback, lo, hi, [0.0, 0.0]

    def part(self, i: int) -> Feedback:
        outer = self

        class _Part(NullFeedback):
            def set_progress(self, fraction: float) -> None:
                outer.parts[i] = fraction
                outer.feedback.set_progress(outer.lo + (outer.hi - outer.lo) * sum(outer.parts) / 2)

            def is_cancelled(self) -> bool:
                return outer.feedback.is_cancelled()

        return _Part()


def detection_tile(model: HyperNet, rows: int, cols: int, memory_budget_mb: float, device: torch.device) -> int:
    """Tile side for detection: the whole image when it fits the budget, else the largest tile that does.

    Two dates are in flight (one date's 2*width features are held while the other's are computed). On CUDA the
    budget is the GPU's free memory (``perf.device_budget_mb``); host memory then holds only per-tile
    distances.
    """
    memory_budget_mb = device_budget_mb(device, memory_budget_mb)
    halo = model.halo()
    per_pixel = 4 * (model.bands + (_tiling.MAPS_PER_PIXEL + 2) * model.width + 2 * model.width)
    if rows * cols * per_pixel <= memory_budget_mb * 2**20:
        return max(rows, cols)
    return _tiling.tile_for_budget(model.bands, model.width, memory_budget_mb, halo=halo, extra_maps=2 * model.width)


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
) -> np.ndarray:
    """Per-pixel change intensity (float32, NaN where invalid) between the two dates' HyperNet features.

    The whole image is run in one forward pass per date when it fits ``memory_budget_mb``; otherwise the
    features are computed exactly by haloed tiles (``tiling.py``) and each tile is reduced to its per-pixel
    distance at once, so peak memory is set by the budget, not by the scene (``tile`` forces a tile side).
    ``rx`` runs the tiles twice: pass 1 accumulates the mean and covariance of the feature difference, pass 2
    scores. ``x1s``/``x2s`` may be any array-like with window slicing (memory maps, ``streaming`` readers).
    ``batchnorm="per-date"`` (default) normalises each date's features with that date's own whole-image
    BatchNorm statistics, as training does (``calibration.py``); ``"running"`` is the paper's eval mode.
    """
    if distance not in DISTANCES:
        raise InputError(f"Unknown distance {distance!r}; use one of {', '.join(DISTANCES)}.")
    if tuple(x1s.shape) != tuple(x2s.shape) or tuple(valid.shape) != tuple(x1s.shape[1:]):
        raise InputError(f"The two dates and the valid mask differ in shape: {x1s.shape}, {x2s.shape}, {valid.shape}.")
    feedback = feedback or NullFeedback()
    check_cancelled(feedback)
    dev = resolve_device(device)
    model.eval()
    rows, cols = x1s.shape[1:]
    if tile is None:
        tile = detection_tile(model, rows, cols, memory_budget_mb, dev)
    tile = int(tile)
    if tile >= max(rows, cols):
        feedback.info("Detection runs the whole image in one pass per date.")
    else:
        count = len(_tiling.tiles(rows, cols, tile))
        feedback.info(f"Detection runs by {count} tiles of {tile}x{tile} pixels (halo {model.halo()}) per pass, "
                      f"to stay within the {memory_budget_mb:g} MB memory budget.")
    if batchnorm not in BATCHNORM_MODES:
        raise InputError(f"Unknown BatchNorm mode {batchnorm!r}; use one of {', '.join(BATCHNORM_MODES)}.")
    if tile >= max(rows, cols) and isinstance(x1s, np.ndarray) and isinstance(x2s, np.ndarray):
        model1, model2 = _date_models(model, x1s, x2s, batchnorm, dev, tile, feedback)
        f1 = fused_features(model1, x1s, dev)
        feedback.set_progress(0.5)
        check_cancelled(feedback)
        f2 = fused_features(model2, x2s, dev)
        if distance == "rx":
            out = rx_score((f1 - f2).cpu().numpy(), valid)
        else:
            out = feature_distance(f1, f2, distance).float().cpu().numpy()
            out[~valid] = np.nan
        feedback.set_progress(1.0)
        return out.astype(np.float32)

    with streaming_allocator():  # the tiled calibration passes too: their peak is one haloed tile
        calibrating = batchnorm == "per-date"
        start = CALIBRATION_SHARE if calibrating else 0.0
        model1, model2 = _date_models(model, x1s, x2s, batchnorm, dev, tile, SubFeedback(feedback, 0.0, start))
        return _tiled_intensity(model1, model2, x1s, x2s, valid, distance, dev, SubFeedback(feedback, start, 1.0),
                                tile)


#: Share of the tiled detection's progress taken by the per-date BatchNorm calibration (7 partial passes per
#: date, against 3 partial statistics passes and one feature pass per distance pass).
CALIBRATION_SHARE = 0.5


def _date_models(model: HyperNet, x1s, x2s, batchnorm: str, dev: torch.device, tile: int,
                 feedback: Feedback) -> tuple[HyperNet, HyperNet]:
    """The model each date is run through: the same model ("running"), or one calibrated per date."""
    if batchnorm == "running":
        return model, model
    if batchnorm != "per-date":
        raise InputError(f"Unknown BatchNorm mode {batchnorm!r}; use one of {', '.join(BATCHNORM_MODES)}.")
    return (calibrate_batchnorm(model, x1s, dev, tile, SubFeedback(feedback, 0.0, 0.5)),
            calibrate_batchnorm(model, x2s, dev, tile, SubFeedback(feedback, 0.5, 1.0)))


def _tiled_intensity(model1: HyperNet, model2: HyperNet, x1s, x2s, valid: np.ndarray, distance: str,
                     dev: torch.device, feedback: Feedback, tile: int) -> np.ndarray:
    """The tiled path of change_intensity: both dates' tiles in step, each reduced to its distance at once."""
    rows, cols = valid.shape
    passes = 2 if distance == "rx" else 1
    out = np.full((rows, cols), np.nan, dtype=np.float32)
    stats = RxStats(2 * model1.width) if distance == "rx" else None
    for p in range(passes):
        progress = _MeanProgress(feedback, p / passes, (p + 1) / passes)
        gen1 = _tiling.iter_fused_features(model1, x1s, tile, dev, progress.part(0), as_tensor=True)
        gen2 = _tiling.iter_fused_features(model2, x2s, tile, dev, progress.part(1), as_tensor=True)
        for (r0, c0, f1), (_, _, f2) in zip(gen1, gen2):
            r1, c1 = r0 + f1.shape[1], c0 + f1.shape[2]
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
    feedback.set_progress(1.0)
    return out
