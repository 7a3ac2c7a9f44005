"""The focal cosine loss of HyperNet and one training-mode loss evaluation the published way."""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: eps of the per-pixel cosine similarity, as published.
COS_EPS = 1e-6


def _focal_term(p: torch.Tensor, z: torch.Tensor, gamma: float) -> torch.Tensor:
    """mean over the pixels (columns) of (2 - cos)^gamma * cos, with cos = cos(p, stopgrad(z)) per column."""
    cos = F.cosine_similarity(p, z.detach(), dim=0, eps=COS_EPS)  # (K,)
    return ((2.0 - cos) ** gamma * cos).mean()


def pixels_at(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The (C, K) columns of a (N, C, H, W) tensor at flat pixel indices into its (N*H*W) pixels."""
    return t.movedim(1, 0).reshape(t.shape[1], -1).index_select(1, index)


def focal_cosine_loss(
    p1: torch.Tensor, z1: torch.Tensor, p2: torch.Tensor, z2: torch.Tensor, index: torch.Tensor, gamma: float
) -> torch.Tensor:
    """L = -0.5 * (mean_g (2 - cos1)^gamma cos1 + mean_g (2 - cos2)^gamma cos2).

    ``cos1 = cos(p1, z2)``, ``cos2 = cos(p2, z1)`` per pixel along the channel axis (eps 1e-6), with no gradient
    into ``z`` (stop-gradient). ``p*, z*`` are (N, C, H, W); ``index`` holds flat indices into the (N*H*W) pixels
    (row-major ``r * W + c`` for N = 1): the training pixels (mask g) the means run over. ``gamma = 0`` gives the
    SimSiam negative cosine similarity.
    """
    if index.numel() == 0:
        raise ValueError("focal_cosine_loss needs at least one training pixel")
    index = index.to(device=p1.device, dtype=torch.long)
    c_p1, c_z1, c_p2, c_z2 = (pixels_at(t, index) for t in (p1, z1, p2, z2))
    return _symmetric_loss(c_p1, c_z1, c_p2, c_z2, gamma)


def _symmetric_loss(
    p1: torch.Tensor, z1: torch.Tensor, p2: torch.Tensor, z2: torch.Tensor, gamma: float
) -> torch.Tensor:
    """-0.5 * (focal term of (p1, z2) + focal term of (p2, z1)) on (C, K) columns at the training pixels."""
    return -0.5 * (_focal_term(p1, z2, gamma) + _focal_term(p2, z1, gamma))


def projections_at(model, x: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(z, p) of one date at the training pixels only, as (C, K) columns, in one forward pass.

    Every layer with BatchNorm runs on all pixels (its batch statistics are over the whole batch, as published);
    only the predictor's last 1x1 convolution, which has no BatchNorm after it, and the loss run on the K indexed
    pixels. The same numbers as :meth:`HyperNet.features_and_projections` followed by indexing, with less work.
    """
    z = model.project(model(x))
    last = model.predictor[-1]
    hidden = pixels_at(model.predictor[:-1](z), index)
    p = last.weight.flatten(1) @ hidden
    if last.bias is not None:
        p = p + last.bias[:, None]
    return pixels_at(z, index), p


def training_loss(model, x1: torch.Tensor, x2: torch.Tensor, index: torch.Tensor, gamma: float) -> torch.Tensor:
    """The loss of one training step, computed the published way.

    Each date goes through the model in its own forward pass (date 1, then date 2), so every BatchNorm normalises
    a date with that date's own batch statistics and, in training mode, updates its running statistics twice.
    Batching the two dates together would change the result.
    """
    if index.numel() == 0:
        raise ValueError("the training loss needs at least one training pixel")
    index = index.to(device=x1.device, dtype=torch.long)
    z1, p1 = projections_at(model, x1, index)
    z2, p2 = projections_at(model, x2, index)
    return _symmetric_loss(p1, z1, p2, z2, gamma)


def training_step(
    model, optimizer: torch.optim.Optimizer, x1: torch.Tensor, x2: torch.Tensor, index: torch.Tensor, gamma: float
) -> float:
    """One optimiser step on :func:`training_loss` (model put in training mode); returns the loss value."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss = training_loss(model, x1, x2, index, gamma)
    loss.backward()
    optimizer.step()
    return float(loss.detach())
