"""Change intensity from HyperNet features, and the binary change map."""

from __future__ import annotations

import numpy as np
import torch

from .device import resolve_device
from .errors import InputError
from .network import HyperNet
from .progress import Feedback, NullFeedback, check_cancelled
from .thresholds import compute_threshold

#: mse: the paper's per-pixel mean squared feature difference; cosine: 1 - cosine similarity of the features;
#: rx: anomalous change, Mahalanobis (RX) distance of the feature difference from its own mean and covariance.
DISTANCES = ("mse", "cosine", "rx")
THRESHOLD_METHODS = ("otsu", "kmeans", "fixed")
CHANGED, UNCHANGED, NODATA = 1, 0, 255


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
    d = diff[:, valid].astype(np.float64)
    mean = d.mean(1, keepdims=True)
    centred = d - mean
    cov = centred @ centred.T / max(1, centred.shape[1] - 1)
    cov += np.eye(cov.shape[0]) * 1e-6 * max(np.trace(cov) / cov.shape[0], 1e-12)
    solved = np.linalg.solve(cov, centred)
    out = np.full(valid.shape, np.nan, dtype=np.float32)
    out[valid] = np.einsum("ij,ij->j", centred, solved).astype(np.float32)
    return out


def change_intensity(
    model: HyperNet,
    x1s: np.ndarray,
    x2s: np.ndarray,
    valid: np.ndarray,
    distance: str = "mse",
    device: str = "auto",
    feedback: Feedback | None = None,
) -> np.ndarray:
    """Per-pixel change intensity (float32, NaN where invalid) between the two dates' HyperNet features."""
    if distance not in DISTANCES:
        raise InputError(f"Unknown distance {distance!r}; use one of {', '.join(DISTANCES)}.")
    feedback = feedback or NullFeedback()
    check_cancelled(feedback)
    dev = resolve_device(device)
    f1 = fused_features(model, x1s, dev)
    feedback.set_progress(0.5)
    check_cancelled(feedback)
    f2 = fused_features(model, x2s, dev)
    if distance == "rx":
        out = rx_score((f1 - f2).cpu().numpy(), valid)
    else:
        out = feature_distance(f1, f2, distance).float().cpu().numpy()
        out[~valid] = np.nan
    feedback.set_progress(1.0)
    return out.astype(np.float32)


def choose_threshold(intensity: np.ndarray, valid: np.ndarray, method: str = "otsu", value: float | None = None) -> float:
    """The threshold on the valid pixels' intensity: Otsu, 2-cluster k-means, or a fixed value."""
    values = intensity[valid & np.isfinite(intensity)]
    if values.size == 0:
        raise InputError("The change intensity has no valid pixel; the inputs are all nodata.")
    return compute_threshold(values, method, value)


def binary_change(
    intensity: np.ndarray, valid: np.ndarray, method: str = "otsu", value: float | None = None
) -> tuple[np.ndarray, float]:
    """Binary change map (uint8: 1 change, 0 no change, 255 nodata) and the threshold used (change = above)."""
    threshold = choose_threshold(intensity, valid, method, value)
    ok = valid & np.isfinite(intensity)
    out = np.full(intensity.shape, NODATA, dtype=np.uint8)
    out[ok] = np.where(intensity[ok] > threshold, CHANGED, UNCHANGED)
    return out, threshold
