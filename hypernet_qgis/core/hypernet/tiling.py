"""Exact tiled inference of HyperNet's fused features, so a scene of any size runs in bounded memory.

Everything in HyperNet is local except the channel attention, which pools avg and max over the whole image.
In eval mode (BatchNorm uses its running statistics) the features are therefore computed exactly by:

* three streaming *statistics passes* over the tiles: pass k records, on each tile (plus the halo that input needs),
  the pre-attention input of the k-th channel attention of each branch (``rsab{k}``, ``rcab{k}``), with the pooled
  statistics of the earlier attention layers already known, and accumulates its global sum and max;
* one *feature pass*: every tile plus a halo of :meth:`HyperNet.halo` pixels (14 for the published network:
  3 x (3x3 conv + 7x7 spatial attention) + 5x5 pool) is run with all pooled statistics given, and the tile's
  interior is kept.

Windows are clipped at the image border, where the convolutions' own zero padding then applies exactly as on the
whole image; inside the image the halo absorbs the padding of the window. Results equal the whole-image forward
pass up to floating-point summation order (tests/test_tiling.py: 1e-9 in float64).

The statistics passes recompute the layers before each attention depth. Detection instead uses ``layerwise.py``,
which runs every layer once per date (with the per-date BatchNorm statistics too); this module gives it the tile
geometry (:func:`tiles`, :func:`window`, :func:`interior`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..memory import MAPS_PER_PIXEL, tile_for_budget  # noqa: F401 (the memory model's, re-exported)
from ..progress import Feedback, check_cancelled
from .network import HyperNet, Pooling, run_until_recorded

#: Number of streaming statistics passes of the published network (one per attention depth), before the feature pass.
STAT_PASSES = 3


def tiles(rows: int, cols: int, tile: int) -> list[tuple[int, int, int, int]]:
    """Row-major tiles (r0, r1, c0, c1) of at most ``tile`` x ``tile`` pixels covering the image."""
    return [
        (r, min(r + tile, rows), c, min(c + tile, cols)) for r in range(0, rows, tile) for c in range(0, cols, tile)
    ]


def window(t: tuple[int, int, int, int], halo: int, rows: int, cols: int) -> tuple[int, int, int, int]:
    """Tile ``t`` grown by ``halo`` pixels on every side, clipped to the image."""
    r0, r1, c0, c1 = t
    return max(0, r0 - halo), min(rows, r1 + halo), max(0, c0 - halo), min(cols, c1 + halo)


def _as_tensor(x: np.ndarray, win: tuple[int, int, int, int], dtype: torch.dtype, device) -> torch.Tensor:
    R0, R1, C0, C1 = win
    return torch.from_numpy(np.ascontiguousarray(x[:, R0:R1, C0:C1])).to(device=device, dtype=dtype)[None]


def interior(a: torch.Tensor, t: tuple[int, int, int, int], win: tuple[int, int, int, int]) -> torch.Tensor:
    """The part of ``a`` (computed on window ``win``) that covers tile ``t``."""
    r0, r1, c0, c1 = t
    return a[..., r0 - win[0] : r1 - win[0], c0 - win[2] : c1 - win[2]]


def resolve_device(device) -> torch.device:
    """``device`` as a torch.device; None or "auto": CUDA when available."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def prepare(model: HyperNet, x, tile: int, device) -> torch.device:
    """Check ``x`` and ``tile`` for ``model`` (:func:`check_input`), move the model to ``device``; the device."""
    check_input(model, x, tile)
    resolved = resolve_device(device)
    model.to(resolved)
    return resolved


def check_input(model: HyperNet, x: np.ndarray, tile: int) -> None:
    """Refuse an image that is not (model.bands, rows, cols), a tile under 1 pixel, a model in training mode."""
    if x.ndim != 3:
        raise InputError(f"Expected an image of shape (bands, rows, cols), got shape {x.shape}.")
    if x.shape[0] != model.bands:
        raise InputError(
            f"The model was trained on {model.bands} bands but the image has {x.shape[0]}; train a model "
            "on this sensor's bands or pick the same band subset."
        )
    if int(tile) < 1:
        raise InputError(f"Tile size must be at least 1 pixel, got {tile}.")
    if model.training:
        raise ValueError("tiled inference needs the model in eval mode (BatchNorm running statistics)")


@torch.no_grad()
def pooled_statistics(
    model: HyperNet,
    x: np.ndarray,
    tile: int,
    device="cpu",
    feedback: Feedback | None = None,
    progress: tuple[float, float] = (0.0, 1.0),
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Global (avg, max) pooled statistics of every channel attention module, by streaming passes over tiles.

    Returns ``{key: (avg (1, C, 1, 1), max (1, C, 1, 1))}`` on ``device`` in the model's dtype, equal to what each
    module pools over the whole image in ``model(x)``.
    """
    device = prepare(model, x, tile, device)
    dtype = next(model.parameters()).dtype
    rows, cols = x.shape[1:]
    parts = tiles(rows, cols, int(tile))
    given: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    steps, done = STAT_PASSES * len(parts), 0
    lo, hi = progress
    for depth in range(STAT_PASSES):
        keys = {
            HyperNet.SPATIAL_KEYS[depth]: model.spatial_branch,
            HyperNet.SPECTRAL_KEYS[depth]: model.spectral_branch,
        }
        sums: dict[str, torch.Tensor] = {}
        maxs: dict[str, torch.Tensor] = {}
        for t in parts:
            check_cancelled(feedback)
            for key, branch in keys.items():
                win = window(t, model.halo(key), rows, cols)
                pooling = Pooling(given=given, record={key})
                pre = interior(run_until_recorded(branch, _as_tensor(x, win, dtype, device), pooling)[key], t, win)
                s = pre.sum(dim=(2, 3), keepdim=True, dtype=torch.float64)
                m = pre.amax(dim=(2, 3), keepdim=True)
                sums[key] = sums[key] + s if key in sums else s
                maxs[key] = torch.maximum(maxs[key], m) if key in maxs else m
            done += 1
            if feedback is not None:
                feedback.set_progress(lo + (hi - lo) * done / steps)
        for key in keys:
            given[key] = ((sums[key] / (rows * cols)).to(dtype), maxs[key])
    return given


@torch.no_grad()
def iter_fused_features(
    model: HyperNet,
    x: np.ndarray,
    tile: int,
    device="cpu",
    feedback: Feedback | None = None,
    as_tensor: bool = False,
    pooled: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> Iterator[tuple[int, int, Any]]:
    """Yield ``(row0, col0, features (2*width, tile rows, tile cols))`` per tile, row-major, exactly as ``model(x)``.

    ``model`` must be in eval mode; it is moved to ``device`` ("auto": CUDA when available).
    The statistics passes run before the first tile is yielded. Memory is bounded by one haloed tile. When one tile
    covers the image, this is a single ordinary forward pass. ``as_tensor``: yield the features as a torch tensor
    on ``device`` (so a GPU caller can reduce them there) instead of a NumPy array.
    ``x`` may be any array-like with ``shape`` and ``x[:, r0:r1, c0:c1]`` slicing (e.g. a memory map or a
    window reader, see ``streaming.py``): only windows are read. ``pooled``: the channel attentions' pooled
    statistics of ``x`` (:func:`pooled_statistics`) when the caller has them; the statistics passes are skipped.
    """
    device = prepare(model, x, tile, device)
    dtype = next(model.parameters()).dtype
    rows, cols = x.shape[1:]
    parts = tiles(rows, cols, int(tile))
    if len(parts) == 1:  # the whole image fits one tile: one ordinary forward pass, no statistics passes
        check_cancelled(feedback)
        f = model(_as_tensor(x, (0, rows, 0, cols), dtype, device))[0]
        yield 0, 0, (f if as_tensor else f.cpu().numpy())
        if feedback is not None:
            feedback.set_progress(1.0)
        return
    if pooled is not None:
        share = 0.0
        given = {k: (a.to(device), m.to(device)) for k, (a, m) in pooled.items()}
    else:
        share = STAT_PASSES / (STAT_PASSES + 1)  # progress: statistics passes, then the (dearer) feature pass
        given = pooled_statistics(model, x, tile, device, feedback, progress=(0.0, share))
    halo = model.halo()
    for i, t in enumerate(parts):
        check_cancelled(feedback)
        win = window(t, halo, rows, cols)
        f = interior(model(_as_tensor(x, win, dtype, device), Pooling(given=given)), t, win)[0]
        yield t[0], t[2], (f if as_tensor else f.cpu().numpy())
        if feedback is not None:
            feedback.set_progress(share + (1 - share) * (i + 1) / len(parts))


def fused_features_tiled(
    model: HyperNet,
    x: np.ndarray,
    tile: int,
    device="cpu",
    feedback: Feedback | None = None,
    on_tile: Callable[[int, int, np.ndarray], None] | None = None,
    pooled: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> np.ndarray | None:
    """Fused features of ``x`` (bands, rows, cols) computed tile by tile, equal to the whole-image forward pass.

    Without ``on_tile``: returns the full (2*width, rows, cols) array (model dtype). With ``on_tile``: calls
    ``on_tile(row0, col0, features)`` for each tile and returns None, never holding all features.
    """
    out = (
        None
        if on_tile is not None
        else np.empty(
            (2 * model.width, *x.shape[1:]), dtype=torch.empty(0, dtype=next(model.parameters()).dtype).numpy().dtype
        )
    )
    for r0, c0, f in iter_fused_features(model, x, tile, device, feedback, pooled=pooled):
        if on_tile is not None:
            on_tile(r0, c0, f)
        elif out is not None:
            out[:, r0 : r0 + f.shape[1], c0 : c0 + f.shape[2]] = f
    return out
