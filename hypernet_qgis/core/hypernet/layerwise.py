"""Exact tiled features in linear passes: every layer of HyperNet runs once per date, by haloed tiles.

HyperNet is local except for its global statistics: each BatchNorm normalises with statistics of the whole image
(a date's own batch statistics in "per-date" mode, the running ones in "running" mode) and each channel attention
pools avg and max over the whole image. The network is therefore run stage by stage over the whole image, tile
by tile, each stage ending at the convolutions that feed a global statistic:

* pass 0 reads the image: the first RSAB's 3x3 conv and 1x1 shortcut conv, the first RCAB's 1x1 conv;
* spatial passes 1-3: finish RSAB k (BN, channel attention, 7x7 spatial attention, residual, ReLU) and start the
  next one (its convolutions), then the 5x5 mean and fuse_spatial's conv;
* spectral passes 1-3: finish RCAB k, start the next, then fuse_spectral's 3x3 conv.

Each pass reads its inputs (the previous pass's conv outputs, kept in :class:`Scratch`: memory or disk files
read by windows) on the tile plus the halo its 3x3 / 7x7 / 5x5 operations need, and keeps the tile's interior.
While writing a conv output it accumulates, per channel and over the tile interiors, the count, mean and centred
sum of squares (float64, merged tile by tile) and the max and min. That gives the BatchNorm statistics
(per-date mode: mean and biased variance, as ``calibration.calibrate_batchnorm`` on the whole image), and the
channel attention's pooled statistics without another pass: BatchNorm is a per-channel affine map, so the mean of
its output is the map of the mean, and its max is the map of the max (or of the min where the scale is negative).
The fused features of a tile are then the two fuse BatchNorms applied to the stored fuse conv outputs.

Equal to the whole-image forward pass up to floating-point summation order (tests/test_layerwise.py).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..io.streaming import pwrite_all, remove_soon
from ..memory import release_free_memory
from ..progress import Feedback, check_cancelled
from .network import RCAB, RSAB, ChannelAttention, HyperNet, part
from .tiling import interior, prepare, tiles, window

Tile = tuple[int, int, int, int]
#: BatchNorm statistics in use: (mean, variance), each (C,), in the model's dtype.
Norm = tuple[torch.Tensor, torch.Tensor]
#: Number of passes over the tiles per date (pass 0, three spatial, three spectral).
PASSES = 7
#: Pixels per float64 chunk of :class:`ChannelStats` on the CPU (1 MB at 32 channels: in cache, 15 % faster than 16 MB).
STATS_CHUNK_PIXELS = 4096
#: Pixels that a chunk's reductions run across at once (:func:`_chunk_moments`; it divides STATS_CHUNK_PIXELS).
STATS_LANES = 256


def backbone_batchnorms(model: HyperNet) -> list[nn.BatchNorm2d]:
    """The BatchNorms that the fused features go through (not the training heads' projector and predictor)."""
    heads = {id(m) for head in (model.projector, model.predictor) for m in head.modules()}
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d) and id(m) not in heads]


# --- scratch maps --------------------------------------------------------------------------------------------
#
# Every map is kept pixel-interleaved, (rows, cols, channels), in memory or in a file, and a window of it becomes a
# torch tensor in channels-last memory format without a copy (:func:`as_tensor`); the convolutions' outputs are
# channels-last too (torch follows the input's format), so a tile goes to scratch without a copy either. The CPU
# convolutions are also faster channels-last (oneDNN's native layout: 1.5-3x for HyperNet's 1x1 and 3x3 convs).


def as_tensor(pixels: np.ndarray) -> torch.Tensor:
    """A (rows, cols, channels) array as a (1, channels, rows, cols) channels-last tensor sharing its memory."""
    return torch.from_numpy(pixels)[None].permute(0, 3, 1, 2)  # (strides of a channels-last batch: oneDNN keeps it)


def as_pixels(a: torch.Tensor) -> np.ndarray:
    """A (1, channels, rows, cols) CPU tensor as a (rows, cols, channels) array (a view when it is channels-last)."""
    return a.detach()[0].permute(1, 2, 0).numpy()


class _DiskMap:
    """A (rows, cols, channels) map in a file, written and read by windows (pwrite / preadv, one call per row; no
    memory map, so the page cache never counts in the process' memory)."""

    def __init__(self, path: str, channels: int, rows: int, cols: int, dtype: np.dtype) -> None:
        self.path, self.channels, self.rows, self.cols, self.dtype = path, channels, rows, cols, np.dtype(dtype)
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.ftruncate(self.fd, rows * cols * channels * self.dtype.itemsize)

    def _offset(self, r: int, c: int) -> int:
        return (r * self.cols + c) * self.channels * self.dtype.itemsize

    def write(self, r0: int, c0: int, a: np.ndarray) -> None:
        for i in range(a.shape[0]):
            pwrite_all(self.fd, np.ascontiguousarray(a[i]).data.cast("B"), self._offset(r0 + i, c0))

    def read(self, win: Tile) -> np.ndarray:
        r0, r1, c0, c1 = win
        buf = np.empty((r1 - r0, c1 - c0, self.channels), dtype=self.dtype)
        for i in range(r1 - r0):
            got = os.preadv(self.fd, [memoryview(buf[i]).cast("B")], self._offset(r0 + i, c0))
            if got != buf[i].nbytes:
                raise OSError(f"short read from {self.path} (row {r0 + i})")
        return buf

    def release(self) -> None:
        """Close the file (its folder's owner deletes it)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def close(self) -> None:
        """Close and delete the file."""
        if self.fd >= 0:
            self.release()
            os.unlink(self.path)


class _MemoryMap:
    """A (rows, cols, channels) map in memory."""

    def __init__(self, channels: int, rows: int, cols: int, dtype: np.dtype) -> None:
        self.channels = channels
        self.array = np.empty((rows, cols, channels), dtype=dtype)

    def write(self, r0: int, c0: int, a: np.ndarray) -> None:
        self.array[r0 : r0 + a.shape[0], c0 : c0 + a.shape[1]] = a

    def read(self, win: Tile) -> np.ndarray:
        """The window (a view when it is whole rows: a pass never writes the maps it reads)."""
        r0, r1, c0, c1 = win
        return np.ascontiguousarray(self.array[r0:r1, c0:c1])

    def close(self) -> None:
        self.array = np.empty((0, 0, 0))

    release = close


class Scratch:
    """Named whole-image maps written tile by tile and read by windows: in memory, or in files of a temporary
    folder (``folder``: where to create it) that :meth:`close` deletes. ``memory.detection_plan`` chooses.

    A dropped map is kept for the next new map of as many channels (a file is overwritten in place instead of
    deleted and created again; an array is not allocated and faulted in again); :meth:`trim` frees the kept
    arrays, and a new map that none fits frees them first, so keeping never adds to the peak."""

    def __init__(self, rows: int, cols: int, dtype: np.dtype, in_memory: bool, folder: str | None = None) -> None:
        self.rows, self.cols, self.dtype, self.in_memory = rows, cols, np.dtype(dtype), in_memory
        self.folder = None if in_memory else tempfile.mkdtemp(prefix="hypernet-layers-", dir=folder)
        self.maps: dict[str, _DiskMap | _MemoryMap] = {}
        self._kept: list[_DiskMap | _MemoryMap] = []
        self._files = 0

    def new(self, name: str, channels: int) -> None:
        self.drop(name)
        for i, old in enumerate(self._kept):
            if old.channels == channels:
                self.maps[name] = self._kept.pop(i)
                return
        self.trim()
        if self.folder is None:
            self.maps[name] = _MemoryMap(channels, self.rows, self.cols, self.dtype)
        else:
            self._files += 1
            path = os.path.join(self.folder, f"map{self._files}.bin")
            self.maps[name] = _DiskMap(path, channels, self.rows, self.cols, self.dtype)

    def write(self, name: str, tile: Tile, a: torch.Tensor) -> None:
        self.maps[name].write(tile[0], tile[2], as_pixels(a.reshape((1, *a.shape[-3:])).cpu()))

    def read(self, name: str, win: Tile) -> np.ndarray:
        """Window ``win`` of map ``name`` as (rows, cols, channels)."""
        return self.maps[name].read(win)

    def drop(self, name: str) -> None:
        """Done with map ``name``: it is kept for a later map of its size (see the class docstring)."""
        old = self.maps.pop(name, None)
        if old is not None:
            self._kept.append(old)

    def trim(self) -> None:
        """Free the dropped maps that were kept."""
        while self._kept:
            self._kept.pop().close()

    def close(self) -> None:
        """Free the maps; the files' folder is deleted in the background (``streaming.remove_soon``: the pair's close
        waits for it)."""
        for name in list(self.maps):
            self.maps.pop(name).release()
        while self._kept:
            self._kept.pop().release()
        if self.folder is not None:
            remove_soon(self.folder)

    def __enter__(self) -> Scratch:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- statistics ----------------------------------------------------------------------------------------------


class ChannelStats:
    """Per-channel count, mean and centred sum of squares (float64, Chan et al. merge), max and min of a map,
    accumulated over tile interiors."""

    def __init__(self) -> None:
        self.n = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None
        self.max: torch.Tensor | None = None
        self.min: torch.Tensor | None = None

    def add(self, a: torch.Tensor) -> None:
        """Add a map (N, C, rows, cols) of any memory format."""
        m = a.shape[0] * a.shape[2] * a.shape[3]
        if not m:
            return
        if a.device.type != "cpu":
            self.add_by_torch(a)
            return
        # on the CPU, over the (pixels, channels) matrix by numpy, chunk by chunk: torch's reductions over the pixels
        # of a channels-last map, or over the rows of that matrix, are 4-7x slower (C = 50: 68 ms against 17)
        pixels = a.detach().permute(0, 2, 3, 1).reshape(m, a.shape[1]).numpy()
        # one float64 buffer for all chunks: a new one a chunk cost a page fault a page with glibc (6 of 43 s)
        buffer = np.empty(min(m, STATS_CHUNK_PIXELS) * a.shape[1], dtype=np.float64)
        for i in range(0, m, STATS_CHUNK_PIXELS):
            chunk = pixels[i : i + STATS_CHUNK_PIXELS]
            whole = len(chunk) - len(chunk) % STATS_LANES
            if whole:
                self._merge_numpy(whole, _chunk_moments(chunk[:whole], buffer))
            if whole < len(chunk):
                self._merge_numpy(len(chunk) - whole, _few_moments(chunk[whole:]))

    def _merge_numpy(self, m: int, moments: tuple[np.ndarray, ...]) -> None:
        self._merge(m, *(torch.from_numpy(np.asarray(v)) for v in moments))

    def add_by_torch(self, a: torch.Tensor) -> None:
        """:meth:`add` by torch's reductions, where the map is (a CUDA device); any number of pixels, one too."""
        m = a.shape[0] * a.shape[2] * a.shape[3]
        if m:
            var_b, mean_b = torch.var_mean(a, dim=(0, 2, 3), correction=0)
            self._merge(m, mean_b.double(), var_b.double() * m, a.amax(dim=(0, 2, 3)), a.amin(dim=(0, 2, 3)))

    def _merge(self, m: int, mean_b: torch.Tensor, m2_b: torch.Tensor, hi: torch.Tensor, lo: torch.Tensor) -> None:
        """Merge the count, mean and centred sum of squares (float64), max and min of ``m`` more pixels."""
        if self.mean is None or self.m2 is None or self.max is None or self.min is None:
            self.n, self.mean, self.m2, self.max, self.min = m, mean_b, m2_b, hi, lo
            return
        n = self.n + m
        delta = mean_b - self.mean
        self.m2 = self.m2 + m2_b + delta.pow(2) * (self.n * m / n)
        self.mean = self.mean + delta * (m / n)
        self.n = n
        self.max, self.min = torch.maximum(self.max, hi), torch.minimum(self.min, lo)

    def norm(self, dtype: torch.dtype) -> Norm:
        """(mean, biased variance): the batch statistics of a training-mode BatchNorm fed this whole map."""
        if self.mean is None or self.m2 is None:
            raise RuntimeError("no pixel was accumulated")
        return self.mean.to(dtype), (self.m2 / self.n).to(dtype)


def _chunk_moments(pixels: np.ndarray, buffer: np.ndarray) -> tuple[np.ndarray, ...]:
    """(mean, centred sum of squares, max, min) per channel of a (k * STATS_LANES, C) float32 chunk, the sums in
    float64 (``buffer``: at least as many values as the chunk).

    numpy reduces the rows of a (pixels, C) matrix with an inner loop of C values (slow for HyperNet's 32-64), so
    the chunk is reduced as (k, STATS_LANES * C) rows (long inner loops) and then over its STATS_LANES lanes:
    twice as fast, the same numbers up to summation order."""
    lanes, c = STATS_LANES, pixels.shape[1]
    k = pixels.shape[0] // lanes
    wide = pixels.reshape(k, lanes * c)
    hi = wide.max(axis=0).reshape(lanes, c).max(axis=0)
    lo = wide.min(axis=0).reshape(lanes, c).min(axis=0)
    centred = buffer[: k * lanes * c].reshape(k, lanes * c)
    centred[...] = wide
    mean = centred.sum(axis=0).reshape(lanes, c).sum(axis=0) / (k * lanes)
    centred -= np.tile(mean, lanes)
    np.square(centred, out=centred)
    return mean, centred.sum(axis=0).reshape(lanes, c).sum(axis=0), hi, lo


def _few_moments(pixels: np.ndarray) -> tuple[np.ndarray, ...]:
    """:func:`_chunk_moments` of fewer than STATS_LANES pixels (any number, one or more)."""
    centred = pixels.astype(np.float64)
    mean = centred.mean(axis=0)
    centred -= mean
    return mean, np.einsum("ij,ij->j", centred, centred), pixels.max(axis=0), pixels.min(axis=0)


def batch_norm(bn: nn.BatchNorm2d, norm: Norm, t: torch.Tensor) -> torch.Tensor:
    """``bn`` in eval mode with the statistics ``norm``."""
    return F.batch_norm(t, norm[0], norm[1], bn.weight, bn.bias, False, 0.0, bn.eps)


def attended_batch_norm(bn: nn.BatchNorm2d, norm: Norm, weights: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``batch_norm(bn, norm, t) * weights`` (channel attention's (1, C, 1, 1) weights) in one pass: the
    weights scale the BatchNorm's affine map (the same numbers up to rounding)."""
    w = weights.reshape(-1)
    weight = bn.weight * w if bn.weight is not None else w
    bias = bn.bias * w if bn.bias is not None else None
    return F.batch_norm(t, norm[0], norm[1], weight, bias, False, 0.0, bn.eps)


def pooled_after_batchnorm(bn: nn.BatchNorm2d, norm: Norm, stats: ChannelStats) -> tuple[torch.Tensor, torch.Tensor]:
    """Global (avg, max), each (1, C, 1, 1), of ``batch_norm(bn, norm, c)`` over the whole map ``c`` of ``stats``.

    The BatchNorm is ``scale * c + shift`` per channel: the mean is the map of the mean (float64), the max the map
    of the max where ``scale >= 0``, of the min elsewhere.
    """
    if stats.mean is None or stats.max is None or stats.min is None:
        raise RuntimeError("no pixel was accumulated")
    mean, var = norm
    weight = bn.weight if bn.weight is not None else torch.ones_like(mean)
    bias = bn.bias if bn.bias is not None else torch.zeros_like(mean)
    scale = weight.double() / torch.sqrt(var.double() + bn.eps)
    avg = (stats.mean - mean.double()) * scale + bias.double()
    extreme = torch.where(scale >= 0, stats.max, stats.min)
    c = stats.mean.shape[0]
    return avg.to(mean.dtype).view(1, c, 1, 1), batch_norm(bn, norm, extreme.view(1, c, 1, 1))


# --- the passes ----------------------------------------------------------------------------------------------


@dataclass
class DateFeatures:
    """One date's fused features by tiles after the passes: the fuse convs' outputs in ``scratch`` and the
    statistics found on the way (``norms`` by BatchNorm, ``pooled`` (avg, max) by channel-attention key)."""

    model: HyperNet
    scratch: Scratch
    prefix: str
    device: torch.device
    norms: dict[nn.BatchNorm2d, Norm] = field(default_factory=dict)
    pooled: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    @torch.no_grad()
    def features(self, tile: Tile) -> torch.Tensor:
        """Fused features (2*width, tile rows, tile cols) of ``tile`` on ``device``, as ``model(x)`` there."""
        spatial = as_tensor(self.scratch.read(self.prefix + "fs", tile)).to(self.device)
        spectral = as_tensor(self.scratch.read(self.prefix + "fq", tile)).to(self.device)
        bn1 = part(self.model.fuse_spatial, 1, nn.BatchNorm2d)
        bn2 = part(self.model.fuse_spectral, 1, nn.BatchNorm2d)
        return torch.cat(
            [batch_norm(bn1, self.norms[bn1], spatial), batch_norm(bn2, self.norms[bn2], spectral)], dim=1
        )[0]


class _Passes:
    """The passes of one date (see the module docstring)."""

    def __init__(
        self,
        model: HyperNet,
        x,
        tile: int,
        device: torch.device,
        scratch: Scratch,
        prefix: str,
        per_date: bool,
        feedback: Feedback | None,
    ) -> None:
        self.model, self.x, self.device, self.scratch, self.prefix = model, x, device, scratch, prefix
        self.per_date, self.feedback = per_date, feedback
        self.dtype = next(model.parameters()).dtype
        self.rows, self.cols = x.shape[1:]
        self.parts = tiles(self.rows, self.cols, int(tile))
        self.done = 0
        self.result = DateFeatures(model, scratch, prefix, device)

    def read(self, name: str, win: Tile) -> torch.Tensor:
        """Window ``win`` of the image (``"x"``) or of a scratch map, as a channels-last tensor on the device."""
        if name != "x":
            t = as_tensor(self.scratch.read(self.prefix + name, win))
        elif hasattr(self.x, "pixel_window"):  # a window source stored pixel-interleaved (streaming.WindowReader)
            t = as_tensor(self.x.pixel_window(*win))
        else:  # (bands, rows, cols) array: one copy of the window, to channels-last
            r0, r1, c0, c1 = win
            a = np.asarray(self.x[:, r0:r1, c0:c1])
            t = torch.from_numpy(a if a.flags.writeable else a.copy())[None]
            t = t.contiguous(memory_format=torch.channels_last)
        return t.to(device=self.device, dtype=self.dtype)

    def run(
        self,
        inputs: list[str],
        halo: int,
        compute: Callable[..., dict[str, torch.Tensor]],
        outputs: dict[str, int],
        stats: set[str],
    ) -> dict[str, ChannelStats]:
        """One pass over the tiles: ``compute(*input windows)`` gives ``outputs`` on the window; their interiors
        go to scratch and, for the names in ``stats``, to their statistics. The inputs are dropped afterwards."""
        for name, channels in outputs.items():
            self.scratch.new(self.prefix + name, channels)
        acc = {name: ChannelStats() for name in stats}
        for t in self.parts:
            check_cancelled(self.feedback)
            win = window(t, halo, self.rows, self.cols)
            outs = compute(*(self.read(name, win) for name in inputs))
            for name, a in outs.items():
                a = interior(a, t, win)
                if name in acc:
                    acc[name].add(a)
                self.scratch.write(self.prefix + name, t, a)
            del outs
            self.done += 1
            if self.feedback is not None:
                self.feedback.set_progress(self.done / (PASSES * len(self.parts)))
        for name in inputs:
            if name != "x":
                self.scratch.drop(self.prefix + name)
        # the allocator keeps the pass's freed blocks (glibc's thread arenas: 0.2 GB with 600x600x224 tiles); the
        # next pass, whose maps have other shapes, would come on top of them
        release_free_memory()
        return acc

    def norm(self, bn: nn.BatchNorm2d, stats: ChannelStats) -> Norm:
        """The statistics ``bn`` normalises with (the date's own or the running ones); recorded in the result."""
        if self.per_date:
            norm = stats.norm(self.dtype)
        else:
            if bn.running_mean is None or bn.running_var is None:
                raise ValueError("running BatchNorm statistics requested from a BatchNorm that keeps none")
            norm = (bn.running_mean, bn.running_var)
        self.result.norms[bn] = norm
        return norm

    def attention(self, ca: ChannelAttention, bn: nn.BatchNorm2d, stats: ChannelStats) -> torch.Tensor:
        """Channel-attention weights (1, C, 1, 1) of the whole image, from the statistics of the conv before ``bn``."""
        avg, mx = pooled_after_batchnorm(bn, self.result.norms[bn], stats)
        self.result.pooled[ca.key] = (avg, mx)
        return ca.weights(avg, mx)

    # --- the spatial branch --------------------------------------------------------------------------------------
    @staticmethod
    def _start_rsab(block: RSAB, h: torch.Tensor, out: dict[str, torch.Tensor], k: int) -> None:
        """Block k's convolutions on its input ``h``: ``c{k}`` (3x3 conv) and ``r{k}`` (1x1 shortcut conv or ``h``)."""
        out[f"c{k}"] = block.conv(h)
        out[f"r{k}"] = block.shortcut[0](h) if isinstance(block.shortcut, nn.Sequential) else h

    def _finish_rsab(self, block: RSAB, weights: torch.Tensor, c: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        out = block.sa(attended_batch_norm(block.bn, self.result.norms[block.bn], weights, c))
        if isinstance(block.shortcut, nn.Sequential):
            bn = part(block.shortcut, 1, nn.BatchNorm2d)
            return out.add_(batch_norm(bn, self.result.norms[bn], r)).relu_()
        return F.relu(out + r)

    @staticmethod
    def _start_rcab(block: RCAB, g: torch.Tensor, out: dict[str, torch.Tensor], k: int) -> None:
        out[f"q{k}"] = block.conv(g)
        if block.residual:
            out[f"u{k}"] = g

    def _finish_rcab(self, block: RCAB, weights: torch.Tensor, q: torch.Tensor, u: torch.Tensor | None) -> torch.Tensor:
        out = attended_batch_norm(block.bn, self.result.norms[block.bn], weights, q)
        return out.add_(u).relu_() if u is not None else out

    def features(self) -> DateFeatures:
        m = self.model
        rsabs, rcabs = [m.rsab1, m.rsab2, m.rsab3], [m.rcab1, m.rcab2, m.rcab3]
        width, bands = m.width, m.bands
        conv_shortcut = [isinstance(b.shortcut, nn.Sequential) for b in rsabs]

        def pass0(x: torch.Tensor) -> dict[str, torch.Tensor]:
            out: dict[str, torch.Tensor] = {}
            self._start_rsab(rsabs[0], x, out, 1)
            self._start_rcab(rcabs[0], x, out, 1)
            return out

        outputs = {"c1": width, "r1": width if conv_shortcut[0] else bands, "q1": width}
        if rcabs[0].residual:
            outputs["u1"] = bands
        stats = self.run(
            ["x"],
            rsabs[0].conv.kernel_size[0] // 2,
            pass0,
            outputs,
            {"c1", "q1"} | ({"r1"} if conv_shortcut[0] else set()),
        )
        spectral_stats = stats["q1"]
        for k, block in enumerate(rsabs, start=1):  # spatial passes
            self.norm(block.bn, stats[f"c{k}"])
            if conv_shortcut[k - 1]:
                self.norm(part(block.shortcut, 1, nn.BatchNorm2d), stats[f"r{k}"])
            weights = self.attention(block.ca, block.bn, stats[f"c{k}"])
            if k < len(rsabs):
                nxt = rsabs[k]

                def step(c, r, block=block, weights=weights, nxt=nxt, k=k):
                    out: dict[str, torch.Tensor] = {}
                    self._start_rsab(nxt, self._finish_rsab(block, weights, c, r), out, k + 1)
                    return out

                halo = block.sa.radius + nxt.conv.kernel_size[0] // 2
                outputs = {f"c{k + 1}": width, f"r{k + 1}": width}
                stats = self.run(
                    [f"c{k}", f"r{k}"],
                    halo,
                    step,
                    outputs,
                    {f"c{k + 1}"} | ({f"r{k + 1}"} if conv_shortcut[k] else set()),
                )
            else:

                def last(c, r, block=block, weights=weights):
                    return {"fs": part(m.fuse_spatial, 0, nn.Conv2d)(m.pool(self._finish_rsab(block, weights, c, r)))}

                halo = (
                    block.sa.radius
                    + m.pool.kernel_size // 2
                    + int(part(m.fuse_spatial, 0, nn.Conv2d).kernel_size[0]) // 2
                )
                fs = self.run([f"c{k}", f"r{k}"], halo, last, {"fs": width}, {"fs"})["fs"]
                self.norm(part(m.fuse_spatial, 1, nn.BatchNorm2d), fs)
        stats = {"q1": spectral_stats}
        for k, rcab in enumerate(rcabs, start=1):  # spectral passes
            self.norm(rcab.bn, stats[f"q{k}"])
            weights = self.attention(rcab.ca, rcab.bn, stats[f"q{k}"])
            inputs = [f"q{k}"] + ([f"u{k}"] if rcab.residual else [])
            if k < len(rcabs):
                nxt_q = rcabs[k]

                def step_q(q, u=None, rcab=rcab, weights=weights, nxt_q=nxt_q, k=k):
                    out: dict[str, torch.Tensor] = {}
                    self._start_rcab(nxt_q, self._finish_rcab(rcab, weights, q, u), out, k + 1)
                    return out

                outputs = {f"q{k + 1}": width} | ({f"u{k + 1}": width} if nxt_q.residual else {})
                stats = self.run(inputs, 0, step_q, outputs, {f"q{k + 1}"})
            else:

                def last_q(q, u=None, rcab=rcab, weights=weights):
                    return {"fq": part(m.fuse_spectral, 0, nn.Conv2d)(self._finish_rcab(rcab, weights, q, u))}

                halo = int(part(m.fuse_spectral, 0, nn.Conv2d).kernel_size[0]) // 2
                fq = self.run(inputs, halo, last_q, {"fq": width}, {"fq"})["fq"]
                self.norm(part(m.fuse_spectral, 1, nn.BatchNorm2d), fq)
        return self.result


@torch.no_grad()
def date_features(
    model: HyperNet,
    x,
    tile: int,
    device,
    scratch: Scratch,
    prefix: str = "",
    per_date: bool = True,
    feedback: Feedback | None = None,
) -> DateFeatures:
    """Run the passes of one date ``x`` (bands, rows, cols; any array-like with window slicing) by ``tile`` x
    ``tile`` tiles; its fused features are then read tile by tile with :meth:`DateFeatures.features`.

    ``per_date``: every backbone BatchNorm normalises with the date's own whole-image statistics (mean, biased
    variance: ``calibration.calibrate_batchnorm``), else with its running statistics (the model in eval mode).
    ``prefix`` names this date's maps in ``scratch``; ``feedback``: cancellation and progress (0 to 1).
    """
    device = prepare(model, x, tile, device)
    date = _Passes(model, x, tile, device, scratch, prefix, per_date, feedback).features()
    if scratch.in_memory:  # the arrays kept for reuse would come on top of what follows (kept files cost nothing)
        scratch.trim()
    return date
