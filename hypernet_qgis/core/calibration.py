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

from .network import HyperNet
from .progress import Feedback
from .options import BATCHNORM_MODES  # noqa: F401 (one home: core/options.py)


def backbone_batchnorms(model: HyperNet) -> list[nn.BatchNorm2d]:
    """The BatchNorms that the fused features go through (not the training heads' projector and predictor)."""
    heads = {id(m) for head in (model.projector, model.predictor) for m in head.modules()}
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d) and id(m) not in heads]


@torch.no_grad()
def calibrate_batchnorm(model: HyperNet, x: np.ndarray, device: torch.device, tile: int | None = None,
                        feedback: Feedback | None = None) -> HyperNet:
    """A copy of ``model`` (eval mode, on ``device``) whose BatchNorms hold the whole-image statistics of ``x``.

    Only the backbone's BatchNorms (:func:`backbone_batchnorms`) are calibrated; the training heads' are kept.

    One training-mode forward pass of the whole image with cumulative averaging (momentum None, counters reset)
    leaves each BatchNorm's running mean equal to that layer's batch mean; the running variance, which torch
    keeps unbiased, is rescaled to the biased variance that training-mode normalisation divides by. In eval mode
    the copy then reproduces the training-mode (batch-statistics) features exactly, and does so tile by tile.
    ``tile`` smaller than the image streams the same statistics over haloed tiles instead (bounded memory,
    ``tiling.batchnorm_statistics_tiled``; ``feedback``: its cancellation and progress).
    """
    rows, cols = x.shape[1:]
    if tile is not None and tile < max(rows, cols):
        from .tiling import batchnorm_statistics_tiled

        return batchnorm_statistics_tiled(model, x, tile, device, feedback)
    calibrated = copy.deepcopy(model).to(device)
    bns = backbone_batchnorms(calibrated)
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    calibrated.train()
    dtype = next(calibrated.parameters()).dtype
    t = torch.from_numpy(np.ascontiguousarray(x)).unsqueeze(0).to(device=device, dtype=dtype)
    calibrated(t)
    n = t.shape[0] * t.shape[2] * t.shape[3]
    for bn, momentum in zip(bns, saved):
        if n > 1:
            bn.running_var.mul_((n - 1) / n)
        bn.momentum = momentum
    return calibrated.eval()
