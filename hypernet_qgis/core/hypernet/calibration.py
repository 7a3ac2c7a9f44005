"""BatchNorm statistics for detection: each date normalised by its own statistics, as in training.

In training, every date goes through the network in its own forward pass, so every BatchNorm normalises a date
with that date's batch statistics. The paper's evaluation mode instead uses the running statistics, an average
over crops, steps and both dates. ``calibrate_batchnorm`` returns a copy of the model whose BatchNorm statistics
are one date's whole-image statistics, so that eval-mode inference (whole image or exact tiles) computes the
features the way training saw them. On the benchmark pairs this made the change ranking and the kappa more
stable across seeds (BENCHMARKS.md; FINDINGS.md 2 measured AUC 0.38 vs 0.993 on Taizhou for the same weights).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from .. import memory
from ..options import BATCHNORM_MODES  # noqa: F401 (one home: core/options.py)
from ..progress import Feedback
from .layerwise import Scratch, backbone_batchnorms, date_features
from .network import HyperNet
from .tiling import resolve_device

__all__ = [
    "BATCHNORM_MODES",
    "backbone_batchnorms",
    "batchnorm_statistics_tiled",
    "calibrate_batchnorm",
    "features_with_own_statistics",
]


def _running(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(running mean, running variance, batches tracked) of ``bn``; HyperNet's BatchNorms always track them."""
    mean, var, batches = bn.running_mean, bn.running_var, bn.num_batches_tracked
    if mean is None or var is None or batches is None:
        raise ValueError("this BatchNorm keeps no running statistics")
    return mean, var, batches


@torch.no_grad()
def calibrate_batchnorm(
    model: HyperNet,
    x: np.ndarray,
    device: torch.device,
    tile: int | None = None,
    feedback: Feedback | None = None,
    memory_budget_mb: float = memory.DEFAULT_MEMORY_BUDGET_MB,
) -> HyperNet:
    """A copy of ``model`` (eval mode, on ``device``) whose BatchNorms hold the whole-image statistics of ``x``.

    Only the backbone's BatchNorms (:func:`backbone_batchnorms`) are calibrated; the training heads' are kept.

    One training-mode forward pass of the whole image with cumulative averaging (momentum None, counters reset)
    leaves each BatchNorm's running mean equal to that layer's batch mean; the running variance, which torch
    keeps unbiased, is rescaled to the biased variance that training-mode normalisation divides by. In eval mode
    the copy then reproduces the training-mode (batch-statistics) features exactly, and does so tile by tile.
    ``tile`` smaller than the image finds the same statistics by haloed tiles instead, each layer once
    (:func:`batchnorm_statistics_tiled`; ``feedback``: its cancellation and progress; ``memory_budget_mb``: where
    its scratch maps go).
    """
    rows, cols = x.shape[1:]
    if tile is not None and tile < max(rows, cols):
        return batchnorm_statistics_tiled(model, x, tile, device, feedback, memory_budget_mb)
    return _whole_image_pass(model, x, device)[0]


@torch.no_grad()
def features_with_own_statistics(model: HyperNet, x: np.ndarray, device: torch.device) -> torch.Tensor:
    """One date's fused features (D, rows, cols) normalised by its own whole-image BatchNorm statistics.

    The training-mode pass that :func:`calibrate_batchnorm` runs already normalises every layer by those
    statistics, so its output is the features: one forward pass of the image instead of two (calibrate, then
    infer). Equal to the calibrated copy's eval-mode features up to float32 rounding."""
    return _whole_image_pass(model, x, device)[1][0]


def _whole_image_pass(model: HyperNet, x: np.ndarray, device: torch.device) -> tuple[HyperNet, torch.Tensor]:
    """(eval-mode copy with ``x``'s whole-image statistics, the training-mode output of that pass)."""
    calibrated = copy.deepcopy(model).to(device)
    bns = backbone_batchnorms(calibrated)
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    calibrated.train()
    dtype = next(calibrated.parameters()).dtype
    t = torch.from_numpy(np.ascontiguousarray(x)).unsqueeze(0).to(device=device, dtype=dtype)
    out = calibrated(t)
    del t
    n = out.shape[0] * out.shape[2] * out.shape[3]
    for bn, momentum in zip(bns, saved):
        if n > 1:
            _running(bn)[1].mul_((n - 1) / n)
        bn.momentum = momentum
    return calibrated.eval(), out


@torch.no_grad()
def batchnorm_statistics_tiled(
    model: HyperNet,
    x: np.ndarray,
    tile: int,
    device="cpu",
    feedback: Feedback | None = None,
    memory_budget_mb: float = memory.DEFAULT_MEMORY_BUDGET_MB,
) -> HyperNet:
    """Tiled, exact :func:`calibrate_batchnorm`: an eval-mode copy with ``x``'s whole-image statistics.

    The layer-by-layer passes of ``layerwise.py`` (each layer once, by haloed tiles) find every backbone
    BatchNorm's input mean and biased variance over the whole image; they become its running statistics.
    Memory: one haloed tile, plus the scratch maps (in memory when they fit ``memory_budget_mb``, else on disk).
    """
    work = copy.deepcopy(model).eval()
    rows, cols = x.shape[1:]
    dtype = next(work.parameters()).dtype
    value_bytes = torch.empty(0, dtype=dtype).element_size()
    in_memory = memory.scratch_in_memory(
        work.bands,
        work.width,
        rows,
        cols,
        memory_budget_mb,
        work.halo(),
        value_bytes,
        tile_on_host=resolve_device(device).type != "cuda",
    )
    with Scratch(rows, cols, torch.empty(0, dtype=dtype).numpy().dtype, in_memory) as scratch:
        date = date_features(work, x, tile, device, scratch, per_date=True, feedback=feedback)
    for bn, (mean, var) in date.norms.items():
        running_mean, running_var, batches = _running(bn)
        running_mean.copy_(mean)
        running_var.copy_(var)
        batches.fill_(1)
    return work
