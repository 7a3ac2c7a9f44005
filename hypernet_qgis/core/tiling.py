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
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator

import numpy as np
import torch

from torch import nn

from .calibration import backbone_batchnorms
from .errors import InputError
from .network import ChannelAttention, HyperNet, Pooling, run_until_recorded
from .progress import Feedback, check_cancelled

#: Number of streaming statistics passes of the published network (one per attention depth), before the feature pass.
STAT_PASSES = 3


def tiles(rows: int, cols: int, tile: int) -> list[tuple[int, int, int, int]]:
    """Row-major tiles (r0, r1, c0, c1) of at most ``tile`` x ``tile`` pixels covering the image."""
    return [(r, min(r + tile, rows), c, min(c + tile, cols)) for r in range(0, rows, tile) for c in range(0, cols, tile)]


def _window(t: tuple[int, int, int, int], halo: int, rows: int, cols: int) -> tuple[int, int, int, int]:
    r0, r1, c0, c1 = t
    return max(0, r0 - halo), min(rows, r1 + halo), max(0, c0 - halo), min(cols, c1 + halo)


def _as_tensor(x: np.ndarray, win: tuple[int, int, int, int], dtype: torch.dtype, device) -> torch.Tensor:
    R0, R1, C0, C1 = win
    return torch.from_numpy(np.ascontiguousarray(x[:, R0:R1, C0:C1])).to(device=device, dtype=dtype)[None]


def _interior(a: torch.Tensor, t: tuple[int, int, int, int], win: tuple[int, int, int, int]) -> torch.Tensor:
    r0, r1, c0, c1 = t
    return a[..., r0 - win[0]: r1 - win[0], c0 - win[2]: c1 - win[2]]


def _resolve_device(device) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _check_input(model: HyperNet, x: np.ndarray, tile: int) -> None:
    if x.ndim != 3:
        raise InputError(f"Expected an image of shape (bands, rows, cols), got shape {x.shape}.")
    if x.shape[0] != model.bands:
        raise InputError(f"The model was trained on {model.bands} bands but the image has {x.shape[0]}; train a model "
                         "on this sensor's bands or pick the same band subset.")
    if int(tile) < 1:
        raise InputError(f"Tile size must be at least 1 pixel, got {tile}.")
    if model.training:
        raise ValueError("tiled inference needs the model in eval mode (BatchNorm running statistics)")


@torch.no_grad()
def pooled_statistics(model: HyperNet, x: np.ndarray, tile: int, device="cpu", feedback: Feedback | None = None,
                      progress: tuple[float, float] = (0.0, 1.0)) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Global (avg, max) pooled statistics of every channel attention module, by streaming passes over tiles.

    Returns ``{key: (avg (1, C, 1, 1), max (1, C, 1, 1))}`` on ``device`` in the model's dtype, equal to what each
    module pools over the whole image in ``model(x)``.
    """
    _check_input(model, x, tile)
    device = _resolve_device(device)
    model.to(device)
    dtype = next(model.parameters()).dtype
    rows, cols = x.shape[1:]
    parts = tiles(rows, cols, int(tile))
    given: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    steps, done = STAT_PASSES * len(parts), 0
    lo, hi = progress
    for depth in range(STAT_PASSES):
        keys = {HyperNet.SPATIAL_KEYS[depth]: model.spatial_branch, HyperNet.SPECTRAL_KEYS[depth]: model.spectral_branch}
        sums: dict[str, torch.Tensor] = {}
        maxs: dict[str, torch.Tensor] = {}
        for t in parts:
            check_cancelled(feedback)
            for key, branch in keys.items():
                win = _window(t, model.halo(key), rows, cols)
                pooling = Pooling(given=given, record={key})
                pre = _interior(run_until_recorded(branch, _as_tensor(x, win, dtype, device), pooling)[key], t, win)
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
def iter_fused_features(model: HyperNet, x: np.ndarray, tile: int, device="cpu", feedback: Feedback | None = None,
                        as_tensor: bool = False) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(row0, col0, features (2*width, tile rows, tile cols))`` per tile, row-major, exactly as ``model(x)``.

    ``model`` must be in eval mode; it is moved to ``device`` ("auto": CUDA when available).
    The statistics passes run before the first tile is yielded. Memory is bounded by one haloed tile. When one tile
    covers the image, this is a single ordinary forward pass. ``as_tensor``: yield the features as a torch tensor
    on ``device`` (so a GPU caller can reduce them there) instead of a NumPy array.
    ``x`` may be any array-like with ``shape`` and ``x[:, r0:r1, c0:c1]`` slicing (e.g. a memory map or a
    window reader, see ``streaming.py``): only windows are read.
    """
    _check_input(model, x, tile)
    device = _resolve_device(device)
    model.to(device)
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
    cached = getattr(model, "pooled_statistics_of", None)
    if cached is not None and cached[0] is x:  # found while calibrating on this very image: no passes needed
        share = 0.0
        given = {k: (a.to(device), m.to(device)) for k, (a, m) in cached[1].items()}
    else:
        share = STAT_PASSES / (STAT_PASSES + 1)  # progress: statistics passes, then the (dearer) feature pass
        given = pooled_statistics(model, x, tile, device, feedback, progress=(0.0, share))
    halo = model.halo()
    for i, t in enumerate(parts):
        check_cancelled(feedback)
        win = _window(t, halo, rows, cols)
        f = _interior(model(_as_tensor(x, win, dtype, device), Pooling(given=given)), t, win)[0]
        yield t[0], t[2], (f if as_tensor else f.cpu().numpy())
        if feedback is not None:
            feedback.set_progress(share + (1 - share) * (i + 1) / len(parts))


def fused_features_tiled(model: HyperNet, x: np.ndarray, tile: int, device="cpu", feedback: Feedback | None = None,
                         on_tile: Callable[[int, int, np.ndarray], None] | None = None) -> np.ndarray | None:
    """Fused features of ``x`` (bands, rows, cols) computed tile by tile, equal to the whole-image forward pass.

    Without ``on_tile``: returns the full (2*width, rows, cols) array (model dtype). With ``on_tile``: calls
    ``on_tile(row0, col0, features)`` for each tile and returns None, never holding all features.
    """
    out = None if on_tile is not None else np.empty(
        (2 * model.width, *x.shape[1:]), dtype=torch.empty(0, dtype=next(model.parameters()).dtype).numpy().dtype)
    for r0, c0, f in iter_fused_features(model, x, tile, device, feedback):
        if on_tile is not None:
            on_tile(r0, c0, f)
        else:
            out[:, r0: r0 + f.shape[1], c0: c0 + f.shape[2]] = f
    return out


class _Reached(Exception):
    """Raised by a forward pre-hook once every module of a calibration point has received its input."""


class _Moments:
    """Per-channel count, mean and centred sum of squares (float64), merged tile by tile (Chan et al.)."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, None, None

    def add(self, a: torch.Tensor) -> None:
        v = a[0].reshape(a.shape[1], -1).double()
        m = v.shape[1]
        if not m:
            return
        mean_b = v.mean(1)
        m2_b = (v - mean_b[:, None]).pow(2).sum(1)
        if self.mean is None:
            self.n, self.mean, self.m2 = m, mean_b, m2_b
            return
        n = self.n + m
        delta = mean_b - self.mean
        self.m2 = self.m2 + m2_b + delta.pow(2) * (self.n * m / n)
        self.mean = self.mean + delta * (m / n)
        self.n = n


class _Pooled:
    """Per-channel sum (float64) and max over tile interiors: a channel attention's global avg and max."""

    def __init__(self) -> None:
        self.sum, self.max = None, None

    def add(self, a: torch.Tensor) -> None:
        s = a.sum(dim=(2, 3), keepdim=True, dtype=torch.float64)
        m = a.amax(dim=(2, 3), keepdim=True)
        self.sum = s if self.sum is None else self.sum + s
        self.max = m if self.max is None else torch.maximum(self.max, m)


#: A calibration job: run ``run(window, pooling)`` on windows with ``halo`` until ``modules`` have their inputs.
CalibrationJob = tuple[Callable, list[nn.Module], int]


def calibration_points(model: HyperNet) -> list[list[CalibrationJob]]:
    """The backbone's whole-image statistics in dependency order: one list of jobs per streaming pass.

    A job's modules are BatchNorms (whose input mean and variance are needed) or one channel attention (whose
    input avg and max are needed); every job depends only on the jobs of earlier passes. The spatial branch
    (3 x (BN, attention), fuse BN) and the spectral branch (3 x (BN, attention), fuse BN) run side by side; the
    first RSAB's shortcut BatchNorm reads the image alone, so it joins the first pass. The windows' halos are
    those of :func:`pooled_statistics` and of the feature pass, so that the convolutions meet the same shapes
    (on the CPU, oneDNN caches one primitive per shape: new shapes cost memory once per process).
    """
    spatial_run = lambda t, p: model.fuse_spatial(model.spatial_branch(t, p))  # noqa: E731
    spectral_run = lambda t, p: model.fuse_spectral(model.spectral_branch(t, p))  # noqa: E731
    full = model.halo()
    spatial: list[CalibrationJob] = []
    spectral: list[CalibrationJob] = []
    for key in HyperNet.SPATIAL_KEYS:
        block = getattr(model, key)
        spatial += [(spatial_run, [block.bn], model.halo(key)), (spatial_run, [block.ca], model.halo(key))]
    spatial.append((spatial_run, [m for m in model.fuse_spatial if isinstance(m, nn.BatchNorm2d)], full))
    for key in HyperNet.SPECTRAL_KEYS:
        block = getattr(model, key)
        spectral += [(spectral_run, [block.bn], model.halo(key)), (spectral_run, [block.ca], model.halo(key))]
    spectral.append((spectral_run, [m for m in model.fuse_spectral if isinstance(m, nn.BatchNorm2d)], full))
    passes = [[*jobs] for jobs in zip(spatial, spectral)]
    for i, key in enumerate(HyperNet.SPATIAL_KEYS):  # shortcut BatchNorms read the block's input
        block = getattr(model, key)
        shortcut = [m for m in block.shortcut.modules() if isinstance(m, nn.BatchNorm2d)]
        if shortcut:
            if i == 0:
                passes[0].append((lambda t, p, f=block.shortcut: f(t), shortcut, 0))
            else:  # after the previous block's attention: its input is that block's output
                passes[2 * i].append((spatial_run, shortcut, model.halo(key)))
    return passes


def _inputs_of(run: Callable, t: torch.Tensor, pooling: Pooling, modules: list[nn.Module]) -> dict:
    """Run ``run(t, pooling)`` until every module in ``modules`` has received its input; return those inputs."""
    seen: dict[nn.Module, torch.Tensor] = {}

    def hook(module: nn.Module, args: tuple) -> None:
        seen[module] = args[0]
        if len(seen) == len(modules):
            raise _Reached

    handles = [m.register_forward_pre_hook(hook) for m in modules]
    try:
        run(t, pooling)
    except _Reached:
        pass
    finally:
        for h in handles:
            h.remove()
    if len(seen) != len(modules):
        raise RuntimeError("the forward pass never reached a calibration point")
    return seen


@torch.no_grad()
def batchnorm_statistics_tiled(model: HyperNet, x: np.ndarray, tile: int, device="cpu",
                               feedback: Feedback | None = None) -> HyperNet:
    """Tiled, exact :func:`calibration.calibrate_batchnorm`: an eval-mode copy with ``x``'s whole-image statistics.

    Every backbone BatchNorm's running mean / variance becomes the mean / biased variance of its input over the
    whole image in a training-mode forward pass, with memory bounded by one haloed tile. The statistics form a
    chain (:func:`calibration_points`): each needs all earlier BatchNorm statistics and channel-attention
    pooled statistics fixed. Pass k runs the k-th point of each branch on every haloed tile of a working copy
    (eval mode: the earlier BatchNorms hold their calibrated statistics, the earlier attentions get their pooled
    statistics through :class:`Pooling`), stops the forward at that point, and accumulates the inputs over the
    tiles' interiors only: a BatchNorm's per-channel count, mean and centred sum of squares (float64, merged
    tile by tile), an attention's sum and max. 7 passes for the published network (the spatial branch's
    3 x (BN, attention) + fuse BN; the spectral branch's alongside). ``feedback``: cancellation and progress.
    """
    work = copy.deepcopy(model).eval()
    _check_input(work, x, tile)
    device = _resolve_device(device)
    work.to(device)
    dtype = next(work.parameters()).dtype
    rows, cols = x.shape[1:]
    parts = tiles(rows, cols, int(tile))
    for bn in backbone_batchnorms(work):
        bn.reset_running_stats()
    plan = calibration_points(work)
    given: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for k, jobs in enumerate(plan):
        acc = {m: (_Pooled() if isinstance(m, ChannelAttention) else _Moments()) for _, mods, _ in jobs for m in mods}
        for i, t in enumerate(parts):
            check_cancelled(feedback)
            for run, mods, halo in jobs:
                win = _window(t, halo, rows, cols)
                seen = _inputs_of(run, _as_tensor(x, win, dtype, device), Pooling(given=given), mods)
                for m in mods:
                    acc[m].add(_interior(seen[m], t, win))
            if feedback is not None:
                feedback.set_progress((k + (i + 1) / len(parts)) / len(plan))
        for m, a in acc.items():
            if isinstance(a, _Pooled):
                given[m.key] = ((a.sum / (rows * cols)).to(dtype), a.max)
            else:
                m.running_mean.copy_(a.mean)
                m.running_var.copy_(a.m2 / a.n)
                m.num_batches_tracked.fill_(1)
    # every attention's statistics were found with all earlier statistics final, so they are exactly what the
    # tiled eval pass of this image needs: keep them (with the image they belong to) to skip its 3 passes
    work.pooled_statistics_of = (x, given)
    return work


#: Width-channel feature maps alive at the peak of a no-grad forward pass of a window (besides its input and the
#: 2*width output). Measured on CPU (peak RSS, torch 2.13): 6.3 to 11.2 maps including the output, for
#: (bands, width) = (200, 100), (100, 50), (20, 16); 12 + 2 leaves a margin.
MAPS_PER_PIXEL = _MAPS_PER_PIXEL = 12


def tile_for_budget(bands: int, width: int, memory_budget_mb: float, halo: int = 14, bytes_per_value: int = 4,
                    minimum: int = 32, maximum: int = 4096, extra_maps: int = 0) -> int:
    """Largest square tile whose haloed window fits ``memory_budget_mb`` during inference (clamped to limits).

    Per pixel of the window: the input (bands), about 12 width-channel maps at the peak, and the 2*width output;
    ``extra_maps`` more channels per pixel held by the caller meanwhile (e.g. the other date's 2*width features).
    """
    per_pixel = bytes_per_value * (bands + (_MAPS_PER_PIXEL + 2) * width + extra_maps)
    side = math.isqrt(max(0, int(memory_budget_mb * 1024 * 1024 / per_pixel)))
    return int(max(minimum, min(maximum, side - 2 * halo)))
