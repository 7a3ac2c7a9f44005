"""Self-supervised HyperNet training: the training pixels (mask g) and the training loop."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..options import DEFAULT_TRAINING_FRACTION, SCHEDULES, TrainConfig  # noqa: F401 (torch-free; re-exported)
from ..progress import Feedback, NullFeedback, check_cancelled
from .device import describe_device, resolve_device
from .loss import training_loss
from .network import HyperNet, default_widths
from .perf import REUSE_HEADROOM, check_paper_fits, crop_plan, device_budget_mb, train_step_mb, training_allocator


@dataclass
class TrainResult:
    """A trained model and what a report or model file needs to know about its training."""

    model: HyperNet
    loss_history: list[float]
    training_mask: np.ndarray
    device_name: str
    seconds: float
    config: TrainConfig
    widths: tuple[int, int, int]
    extra: dict[str, Any] = field(default_factory=dict)
    #: (t1, t2, wavelengths) of the report's pictures, kept when the inputs were temporary (aligned) files
    report_images: tuple[np.ndarray, np.ndarray, list[float] | None] | None = field(default=None, repr=False)

    def metadata(self) -> dict[str, Any]:
        """JSON-able training metadata for the model file."""
        cfg = asdict(self.config)
        cfg["epochs"] = self.config.resolved_epochs()
        return {
            "training": cfg,
            "loss_history": [float(v) for v in self.loss_history],
            "training_pixels": int(self.training_mask.sum()),
            "device": self.device_name,
            "seconds": round(self.seconds, 3),
            **self.extra,  # (with several pairs: their training pixels together, and the pair count)
        }


def pre_detection_score(x1s: np.ndarray, x2s: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Classic change score used to pick mask g: CVA of the per-date standardised images (NaN where invalid)."""
    from ..classic.baselines import cva

    return cva(x1s, x2s, valid)


def select_training_pixels(
    x1s: np.ndarray, x2s: np.ndarray, valid: np.ndarray, fraction: float = DEFAULT_TRAINING_FRACTION
) -> np.ndarray:
    """Mask g: the ``fraction`` of valid pixels with the lowest pre-detection (CVA) score.

    The paper trains only on pixels believed unchanged but does not say how they were found. Taking the
    lowest-scoring share of a classic change score keeps changed pixels out of the positive pairs while
    leaving enough variety of land cover to learn from (BENCHMARKS.md compares the choices).
    """
    return lowest_share(pre_detection_score(x1s, x2s, valid), valid, fraction)


def lowest_share(score: np.ndarray, valid: np.ndarray, fraction: float) -> np.ndarray:
    """The ``fraction`` of valid pixels with the lowest ``score`` (mask g from a pre-detection score)."""
    values = score[valid]
    if values.size == 0:
        raise InputError("No valid pixel is left in both dates (all nodata or NaN); check the inputs' nodata.")
    mask = valid & (score <= np.quantile(values, fraction))
    if mask.sum() < 16:
        raise InputError("Fewer than 16 training pixels were found; the image is too small or almost all nodata.")
    return mask


def _check_inputs(x1s: np.ndarray, x2s: np.ndarray, valid: np.ndarray, mask: np.ndarray) -> None:
    if x1s.shape != x2s.shape:
        raise InputError(f"The two dates differ in shape: {x1s.shape} vs {x2s.shape}.")
    if x1s.ndim != 3:
        raise InputError("Images must have shape (bands, rows, columns).")
    bands, rows, cols = x1s.shape
    if bands < 2:
        raise InputError(
            f"HyperNet needs at least 2 bands (the image has {bands}); it learns spectral-spatial features. "
            "Use a multi- or hyperspectral image, or a classic method for single-band change."
        )
    if mask.shape != valid.shape or mask.shape != (rows, cols):
        raise InputError(f"The unchanged mask is {mask.shape[::-1]} pixels but the images are {cols}x{rows}.")
    if not (mask & valid).any():
        raise InputError("The unchanged (training) mask selects no valid pixel; mark some unchanged pixels.")


#: Largest automatic branch width of the default schedule. The paper's rule (half the band count) gives 102 on
#: 204 AVIRIS bands; 32 trains 4-7x faster and scored as well or better on the benchmark pairs (BENCHMARKS.md).
DEFAULT_MAX_WIDTH = 32


def model_widths(bands: int, config: TrainConfig) -> tuple[int, int, int]:
    """(branch, projector, predictor hidden) widths: explicit width, else the paper's rule (capped by default)."""
    if config.width is None and config.schedule != "paper":
        return default_widths(bands, min(DEFAULT_MAX_WIDTH, default_widths(bands)[0]))
    return default_widths(bands, config.width)


def _make_model(bands: int, config: TrainConfig, device: torch.device) -> tuple[HyperNet, tuple[int, int, int]]:
    widths = model_widths(bands, config)
    model = HyperNet(bands, *widths).to(device)
    return model, widths


def _step_batches(
    rows: int, cols: int, config: TrainConfig, rng: np.random.Generator, plan: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Random crop origins for one default-schedule step; ``plan`` = (crop side, count) within the memory budget."""
    if plan is None:
        crop = min(config.crop_size, rows, cols)
        count = max(1, min(config.pixels_per_step, rows * cols) // (crop * crop))
    else:
        crop, count = plan
    r0 = rng.integers(0, rows - crop + 1, size=count)
    c0 = rng.integers(0, cols - crop + 1, size=count)
    return r0, c0, crop


@dataclass
class TrainingPair:
    """One standardised pair to train on: the dates (arrays or disk-backed windows), valid pixels and mask g."""

    x1s: Any
    x2s: Any
    valid: np.ndarray
    mask: np.ndarray


def train_hypernet(
    x1s: np.ndarray,
    x2s: np.ndarray,
    valid: np.ndarray,
    config: TrainConfig | None = None,
    training_mask: np.ndarray | None = None,
    feedback: Feedback | None = None,
) -> TrainResult:
    """Train HyperNet on a standardised image pair (bands, rows, cols); return the model in eval mode.

    Each step runs each date through the network in its own forward pass (as the authors do, so BatchNorm
    normalises every date with its own statistics), pulls the two dates' projections together through the
    predictor with stop-gradient, and averages the focal cosine loss over the training pixels only.
    """
    config = config or TrainConfig()
    config.validate()
    if training_mask is None:
        training_mask = select_training_pixels(x1s, x2s, valid, config.training_fraction)
    return train_hypernet_pairs([TrainingPair(x1s, x2s, valid, training_mask)], config, feedback)


def train_hypernet_pairs(
    pairs: Sequence[TrainingPair], config: TrainConfig | None = None, feedback: Feedback | None = None
) -> TrainResult:
    """Train one HyperNet on one or more standardised pairs of one shape (a series' consecutive pairs).

    A step costs what a step on one pair costs: with several pairs, the default schedule's crops are taken from
    the pairs in turn (crop j of step e from pair (j + e) mod N), the paper schedule's whole image is pair e mod N.
    One pair trains exactly as :func:`train_hypernet` always has. ``TrainResult.training_mask`` is the first
    pair's mask g; the metadata count the training pixels of all pairs.
    """
    config = config or TrainConfig()
    config.validate()
    feedback = feedback or NullFeedback()
    if not pairs:
        raise InputError("Training needs at least one image pair.")
    masks = []
    for p in pairs:
        mask = p.mask & p.valid
        _check_inputs(p.x1s, p.x2s, p.valid, mask)
        if tuple(p.x1s.shape) != tuple(pairs[0].x1s.shape):
            raise InputError(
                f"The pairs to train one model on differ in shape: {tuple(pairs[0].x1s.shape)} vs "
                f"{tuple(p.x1s.shape)}; put every date on one grid with the same bands."
            )
        masks.append(mask)
    n_pairs = len(pairs)
    training_pixels = int(sum(int(m.sum()) for m in masks))

    device = resolve_device(config.device)
    device_name = describe_device(device, config.device)
    bands, rows, cols = pairs[0].x1s.shape
    epochs = config.resolved_epochs()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model, widths = _make_model(bands, config, device)
    of_pairs = f"{n_pairs} pairs of " if n_pairs > 1 else ""
    feedback.info(
        f"Training HyperNet on {device_name}: {bands} bands, {of_pairs}{cols}x{rows} pixels, branch width "
        f"{widths[0]}, {epochs} epochs ({config.schedule} schedule), {training_pixels} training pixels."
    )
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.learning_rate, momentum=config.momentum, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    budget = device_budget_mb(device, config.memory_budget_mb)
    plan = None
    if config.schedule == "paper":
        check_paper_fits(bands, widths[0], rows, cols, budget, device)
        step_pixels = rows * cols
    else:
        plan = crop_plan(rows, cols, bands, widths[0], config.crop_size, config.pixels_per_step, budget)
        step_pixels = plan[0] * plan[0] * plan[1]
    reuse_pages = train_step_mb(bands, widths[0], step_pixels) * REUSE_HEADROOM <= budget
    # in-memory inputs become one tensor each (on the device for one pair; with several, host tensors that share
    # the arrays' memory, and each step's batch goes to the device); disk-backed ones (memory maps,
    # streaming.WindowReader) are read crop by crop, so a scene larger than memory trains with the default schedule
    where = device if n_pairs == 1 else torch.device("cpu")
    t1s: list[torch.Tensor | None] = []
    t2s: list[torch.Tensor | None] = []
    gs: list[torch.Tensor] = []
    for p, mask in zip(pairs, masks):
        in_memory = (type(p.x1s) is np.ndarray and type(p.x2s) is np.ndarray) or config.schedule == "paper"
        t1s.append(_tensor(p.x1s, where) if in_memory else None)
        t2s.append(_tensor(p.x2s, where) if in_memory else None)
        gs.append(torch.from_numpy(mask).to(where))

    history: list[float] = []
    start = time.perf_counter()
    model.train()
    with training_allocator(device, reuse_pages):  # CPU: reuse the last step's pages when the budget allows
        for epoch in range(epochs):
            check_cancelled(feedback)
            k = epoch % n_pairs
            whole1, whole2 = t1s[k], t2s[k]
            if config.schedule == "paper" and whole1 is not None and whole2 is not None:  # (in memory: paper)
                b1, b2, gb = whole1.to(device), whole2.to(device), gs[k].unsqueeze(0).to(device)
            else:
                r0, c0, crop = _step_batches(rows, cols, config, rng, plan)
                which = (np.arange(len(r0)) + epoch) % n_pairs
                b1 = _mixed_crops(t1s, [p.x1s for p in pairs], which, r0, c0, crop, device)
                b2 = _mixed_crops(t2s, [p.x2s for p in pairs], which, r0, c0, crop, device)
                gb = torch.stack([gs[k][r : r + crop, c : c + crop] for k, r, c in zip(which, r0, c0)]).to(device)
            index = torch.nonzero(gb.reshape(-1)).squeeze(1)
            if index.numel() == 0:  # a crop batch without training pixels: nothing to learn from this step
                history.append(history[-1] if history else float("nan"))
                scheduler.step()
                continue
            loss = training_loss(model, b1, b2, index, config.gamma)
            if not torch.isfinite(loss):
                raise InputError(
                    f"Training diverged at epoch {epoch + 1} (loss {loss.item()}). Lower LEARNING_RATE "
                    "(e.g. 0.01) or check the inputs for extreme values."
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            history.append(float(loss.item()))
            feedback.set_progress((epoch + 1) / epochs)
            if (epoch + 1) % max(1, epochs // 10) == 0 or epoch == 0:
                feedback.info(f"epoch {epoch + 1}/{epochs}: loss {history[-1]:.5f}")
    model.eval()
    seconds = time.perf_counter() - start
    feedback.info(f"Training finished in {seconds:.1f} s; final loss {history[-1]:.5f}.")
    result = TrainResult(model, history, masks[0], device_name, seconds, config, widths)
    if n_pairs > 1:
        result.extra.update({"training_pixels": training_pixels, "pairs": n_pairs})
    return result


def _tensor(x, device: torch.device) -> torch.Tensor:
    """A (1, bands, rows, cols) float32 tensor of an in-memory date (no copy on the CPU when already float32)."""
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).unsqueeze(0).to(device)


def _mixed_crops(
    tensors: Sequence[torch.Tensor | None],
    arrays: Sequence[Any],
    which: np.ndarray,
    r0: np.ndarray,
    c0: np.ndarray,
    crop: int,
    device: torch.device,
) -> torch.Tensor:
    """The step's crop batch: crop j from pair ``which[j]`` (one pair: exactly :func:`_crops`)."""
    if len(tensors) == 1:
        return _crops(tensors[0], arrays[0], r0, c0, crop, device)
    parts = [_crops(tensors[k], arrays[k], r0[j : j + 1], c0[j : j + 1], crop, device) for j, k in enumerate(which)]
    return torch.cat(parts).to(device)


def _crops(t: torch.Tensor | None, x, r0: np.ndarray, c0: np.ndarray, crop: int, device: torch.device) -> torch.Tensor:
    """A batch (count, bands, crop, crop) of crops from the input tensor, or read from a disk-backed array."""
    if t is not None:
        return torch.cat([t[:, :, r : r + crop, c : c + crop] for r, c in zip(r0, c0)])
    batch = np.stack([np.asarray(x[:, r : r + crop, c : c + crop], dtype=np.float32) for r, c in zip(r0, c0)])
    return torch.from_numpy(batch).to(device)
