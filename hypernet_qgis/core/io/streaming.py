"""Scenes larger than memory: read by windows, standardise in a scratch file, train and detect by windows.

A 2000x2000x224 date is 3.6 GB as float32; holding both dates raw and standardised needs 14 GB. Here:

1. one pass over both inputs by windows aligned to the files' blocks (``memory.read_windows``: each block is
   decoded once, whatever the budget) finds the pair's valid mask and each date's per-band mean and standard
   deviation (float64, merged window by window) and writes each date's raw values to a scratch file,
   pixel-interleaved (rows, cols, bands);
2. a second pass over the scratch files (not the inputs) standardises them in place by row strips (in float64,
   as ``scaling.standardize``: the same z-scores as in memory) and computes the CVA of the standardised dates
   (for mask g, as ``training.select_training_pixels``);
3. training (default schedule) reads its random crops and detection reads its haloed tiles through
   :class:`WindowReader` with ``os.preadv``: no memory map, so the page cache never counts in the process' memory.

``pair.open_pair`` decides between this and reading the pair whole; the jobs in ``pipeline.py`` are the same
code either way.

Peak memory is then the windows, the per-pixel maps (valid, mask g, intensity, change: ``memory.JOB_MAP_BYTES``
a pixel) and the training step / detection tile that the memory budget sizes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import memory
from ..errors import InputError
from ..progress import Feedback, NullFeedback, check_cancelled
from . import raster_io
from .layout import band_layout

#: Most float32 values of one input strip (the memory model's; the budget may ask for fewer, memory.strip_values).
STRIP_VALUES = memory.STRIP_VALUES


class WindowReader:
    """A (bands, rows, cols) float32 array stored pixel-interleaved in a file; ``x[:, r0:r1, c0:c1]`` reads only
    that window (one ``preadv`` per row). ``np.asarray(reader)`` reads it all."""

    ndim = 3
    dtype = np.dtype(np.float32)

    def __init__(self, path: str, shape: tuple[int, int, int]) -> None:
        self.path, self.shape = path, tuple(int(v) for v in shape)
        self._fd: int | None = os.open(path, os.O_RDONLY)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.close()

    def __len__(self) -> int:
        return self.shape[0]

    @staticmethod
    def _range(s: Any, n: int) -> tuple[int, int]:
        if not isinstance(s, slice) or s.step not in (None, 1):
            raise TypeError("WindowReader supports x[:, r0:r1, c0:c1] (unit-step slices) only")
        start, stop, _ = s.indices(n)
        return start, max(start, stop)

    def __getitem__(self, key) -> np.ndarray:
        kb, kr, kc = ((key if isinstance(key, tuple) else (key,)) + (slice(None), slice(None)))[:3]
        bands, rows, cols = self.shape
        b0, b1 = self._range(kb, bands)
        r0, r1 = self._range(kr, rows)
        c0, c1 = self._range(kc, cols)
        return band_layout(self.pixel_window(r0, r1, c0, c1)[:, :, b0:b1])

    def pixel_window(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """The window rows r0:r1, columns c0:c1 as stored, (rows, cols, bands), in a new array the caller may
        change: whole rows in one read, else one ``preadv`` a row; no transposition (IR-MAD's strips, the tiled
        passes' channels-last windows)."""
        bands, rows, cols = self.shape
        r0, r1 = self._range(slice(r0, r1), rows)
        c0, c1 = self._range(slice(c0, c1), cols)
        if self._fd is None:
            raise OSError(f"{self.path} is closed")
        if c0 == 0 and c1 == cols:
            return _read_rows(self._fd, r0, r1, cols, bands, self.path)
        buf = np.empty((r1 - r0, c1 - c0, bands), dtype=np.float32)
        row_bytes = (c1 - c0) * bands * 4
        for i, r in enumerate(range(r0, r1)):
            if os.preadv(self._fd, [memoryview(buf[i]).cast("B")], ((r * cols + c0) * bands) * 4) != row_bytes:
                raise OSError(f"short read from {self.path} (row {r})")
        return buf

    def pixels_at(self, flat: np.ndarray) -> np.ndarray:
        """The pixels of row-major indices ``flat`` (rows * cols), as (pixels, bands): one ``preadv`` a pixel (a
        sample of a scene without reading all of it; IR-MAD's)."""
        bands, rows, cols = self.shape
        out = np.empty((len(flat), bands), dtype=np.float32)
        if self._fd is None:
            raise OSError(f"{self.path} is closed")
        pixel_bytes = bands * 4
        for i, f in enumerate(np.asarray(flat, dtype=np.int64).tolist()):
            if not 0 <= f < rows * cols:
                raise IndexError(f"pixel {f} is outside the {rows}x{cols} image")
            if os.preadv(self._fd, [out[i].data.cast("B")], f * pixel_bytes) != pixel_bytes:
                raise OSError(f"short read from {self.path} (row {f // cols})")
        return out

    def pixels(self, r0: int, r1: int) -> np.ndarray:
        """Rows r0:r1 as stored, (rows, cols, bands)."""
        return self.pixel_window(r0, r1, 0, self.shape[2])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return np.asarray(self[:, :, :], dtype=dtype)


@dataclass
class StreamedPair:
    """The scratch files of a pair read by windows (``x1s``/``x2s`` are WindowReaders); ``pair.open_pair`` wraps
    it in the ImagePair every job uses."""

    x1s: WindowReader
    x2s: WindowReader
    valid: np.ndarray
    cva: np.ndarray
    info1: raster_io.RasterInfo
    info2: raster_io.RasterInfo
    bands: list[int] | None
    scaling: dict[str, Any]
    scratch: str
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        """Close the readers and delete the scratch files."""
        self.x1s.close()
        self.x2s.close()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def __enter__(self) -> StreamedPair:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _BandMoments:
    """Per-band count, mean and centred sum of squares over valid pixels, merged window by window (Chan et al.),
    in float64 as ``scaling.band_stats``: the two routes' z-scores must agree to the last bit, or training (which
    amplifies any difference) would not give the same model both ways."""

    def __init__(self, bands: int) -> None:
        self.n = 0
        self.mean = np.zeros(bands)
        self.m2 = np.zeros(bands)

    def add(self, x: np.ndarray, valid: np.ndarray) -> None:
        """Add a window (rows, cols, bands) of one date at its ``valid`` pixels, by chunks of pixels (float64
        temporaries of STANDARDISE_CHUNK_VALUES values: the two dates are added at once, in two threads)."""
        flat, keep = x.reshape(-1, x.shape[2]), valid.reshape(-1)
        step = max(1, STANDARDISE_CHUNK_VALUES // max(1, x.shape[2]))
        for i in range(0, flat.shape[0], step):
            part = flat[i : i + step]
            if not keep[i : i + step].all():
                part = part[keep[i : i + step]]
            self._merge(np.array(part, dtype=np.float64))

    def _merge(self, v: np.ndarray) -> None:
        """Merge the moments of the pixels ``v`` (pixels, bands; float64, changed in place)."""
        m = v.shape[0]
        if not m:
            return
        mean_b = v.mean(0)
        v -= mean_b
        m2_b = np.einsum("ij,ij->j", v, v)
        delta = mean_b - self.mean
        n = self.n + m
        self.m2 += m2_b + delta**2 * (self.n * m / n)
        self.mean += delta * (m / n)
        self.n = n

    def stats(self, rtol: float = 1e-6) -> dict:
        """The scaling.band_stats dictionary (population std; constant bands listed 1-based). Needs a valid pixel
        (``n`` > 0). Its values are finite: raster_io counts a non-finite value as nodata, and float32 values
        cannot overflow float64 sums."""
        std = np.sqrt(self.m2 / self.n)
        constant = [b + 1 for b in range(len(std)) if std[b] <= rtol * abs(self.mean[b])]
        return {
            "method": "zscore",
            "mean": self.mean.tolist(),
            "std": std.tolist(),
            "constant_bands": constant,
            "n_valid": int(self.n),
        }


def _strips(rows: int, cols: int, bands: int, strip_values: int) -> list[tuple[int, int]]:
    step = max(1, strip_values // (cols * bands))
    return [(r, min(rows, r + step)) for r in range(0, rows, step)]


def _write_window(fd: int, a: np.ndarray, r0: int, c0: int, cols: int) -> None:
    """Write a (rows, cols_w, bands) float32 window at (r0, c0) of a pixel-interleaved file of ``cols`` columns."""
    if a.shape[1] == cols:
        _write_rows(fd, a, r0)
        return
    for i in range(a.shape[0]):
        pwrite_all(fd, a[i].data.cast("B"), ((r0 + i) * cols + c0) * a.shape[2] * 4)


def _write_rows(fd: int, a: np.ndarray, r0: int) -> None:
    """Write whole rows (rows, cols, bands) float32 at row ``r0`` of a pixel-interleaved file of ``cols`` columns."""
    pwrite_all(fd, a.data.cast("B"), r0 * a.shape[1] * a.shape[2] * 4)


def pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (``os.pwrite`` may write less than asked)."""
    while len(data):
        done = os.pwrite(fd, data, offset)
        data, offset = data[done:], offset + done


_removals: list[threading.Thread] = []


def remove_soon(path: str) -> None:
    """Delete the scratch folder ``path`` in a background thread: freeing gigabytes of scratch files takes seconds
    on some file systems (5 s for the maps of a 2000x2000 detection on this machine's ext4 with discard), which
    the job spends on its next step instead. The pair's close waits for it (:func:`finish_removals`), so a job still
    ends with its scratch gone; not a daemon thread, so neither does Python exit before."""
    thread = threading.Thread(target=shutil.rmtree, args=(path, True), name="hypernet-remove-scratch")
    thread.start()
    _removals.append(thread)


def finish_removals() -> None:
    """Wait until every scratch folder given to :func:`remove_soon` is deleted."""
    while _removals:
        _removals.pop().join()


def _read_rows(fd: int, r0: int, r1: int, cols: int, bands: int, name: str = "a scratch file") -> np.ndarray:
    """Rows r0:r1 of a pixel-interleaved float32 file as (rows, cols, bands); ``name`` for a short read's message."""
    out = np.empty((r1 - r0, cols, bands), dtype=np.float32)
    if not out.size:
        return out
    view, offset = out.data.cast("B"), r0 * cols * bands * 4
    while len(view):
        got = os.preadv(fd, [view], offset)
        if not got:  # end of file (an error raises)
            raise OSError(f"short read from {name} (row {offset // (cols * bands * 4)})")
        view, offset = view[got:], offset + got
    return out


#: Values per float64 temporary of the band moments and of the standardising pass (2 MB: in the CPU's cache, both
#: are 3x faster than with 32 MB).
STANDARDISE_CHUNK_VALUES = 2**18


def _standardise_in_place(z: np.ndarray, valid: np.ndarray, stats: dict) -> np.ndarray:
    """(z - mean) / std per band of a (rows, cols, bands) float32 strip, in place, computed in float64 as
    scaling.apply_stats (the same bits); invalid pixels and constant bands 0."""
    mean = np.asarray(stats["mean"])  # Python floats: float64
    std = np.asarray(stats["std"])
    std = np.where(std > 0, std, 1.0)
    rows, cols, bands = z.shape
    flat = z.reshape(rows * cols, bands)
    step = STANDARDISE_CHUNK_VALUES // bands
    for i in range(0, flat.shape[0], step):
        t = np.array(flat[i : i + step], dtype=np.float64)
        t -= mean
        t /= std
        flat[i : i + step] = t
    z[:, :, [b - 1 for b in stats["constant_bands"]]] = 0.0
    z[~valid] = 0.0
    return z


def load_pair_streamed(
    t1: str,
    t2: str,
    bands: Sequence[int] | None = None,
    scratch_dir: str | None = None,
    feedback: Feedback | None = None,
    strip_values: int | None = None,
    memory_budget_mb: float | None = None,
) -> StreamedPair:
    """Read, check and standardise a pair window by window into scratch files (see the module docstring).

    ``strip_values``: float32 values per window and date; by default what ``memory_budget_mb`` allows
    (``memory.strip_values``)."""
    start = time.perf_counter()
    feedback = feedback or NullFeedback()
    info1, info2 = raster_io.raster_info(t1), raster_io.raster_info(t2)
    raster_io.check_same_grid(info1, info2)
    nb = len(bands) if bands else info1.bands
    rows, cols = info1.rows, info1.cols
    if strip_values is None:
        strip_values = memory.strip_values(memory_budget_mb, nb, cols)
    strips = _strips(rows, cols, nb, strip_values)
    scratch = tempfile.mkdtemp(prefix="hypernet-scratch-", dir=scratch_dir)
    try:
        paths = [os.path.join(scratch, "t1.f32"), os.path.join(scratch, "t2.f32")]
        valid = np.zeros((rows, cols), dtype=bool)
        moments = [_BandMoments(nb), _BandMoments(nb)]
        with (
            raster_io.open_windows(t1, bands) as in1,
            raster_io.open_windows(t2, bands) as in2,
            open(paths[0], "w+b") as f1,
            open(paths[1], "w+b") as f2,
            ThreadPoolExecutor(2, thread_name_prefix="hypernet-date") as pool,
        ):

            def both(fn: Callable[..., Any], first: Any, second: Any, star: bool = False) -> list[Any]:
                """``fn`` on each date at once, in two threads (GDAL and numpy let go of the GIL: reading a
                pair takes about 0.6x the time of one date after the other)."""
                jobs = [pool.submit(fn, *arg) if star else pool.submit(fn, arg) for arg in (first, second)]
                return [job.result() for job in jobs]

            block = (max(in1.block[0], in2.block[0]), max(in1.block[1], in2.block[1]))
            windows = memory.read_windows(rows, cols, nb, block, strip_values)
            total = len(windows) + len(strips)
            for i, (r0, r1, c0, c1) in enumerate(windows):  # pass 1: inputs -> raw scratch, valid, band moments
                check_cancelled(feedback)
                (a, va), (b, vb) = both(lambda src: src.read(r0, r1 - r0, c0, c1 - c0), in1, in2)  # noqa: B023
                v = va & vb
                valid[r0:r1, c0:c1] = v

                def keep(x, m, f, r0=r0, c0=c0, v=v):
                    m.add(x, v)
                    _write_window(f.fileno(), x, r0, c0, cols)

                both(keep, (a, moments[0], f1), (b, moments[1], f2), star=True)
                del a, b
                feedback.set_progress((i + 1) / total)
            if not valid.any():
                raise InputError(
                    "No pixel is valid in both dates: every pixel is nodata or NaN in T1 or in T2. "
                    "Check the layers' nodata values and that the two images overlap."
                )
            s1, s2 = moments[0].stats(), moments[1].stats()
            if not (np.any(s1["std"]) or np.any(s2["std"])):
                raise InputError(
                    "Every band is constant over the valid pixels of both dates; there is nothing to compare."
                )
            cva = np.full((rows, cols), np.nan, dtype=np.float32)
            for i, (r0, r1) in enumerate(strips):  # pass 2: standardise the scratch files in place, CVA
                check_cancelled(feedback)
                v = valid[r0:r1]

                def standardise(f, stats, r0=r0, r1=r1, v=v):
                    z = _standardise_in_place(_read_rows(f.fileno(), r0, r1, cols, nb), v, stats)
                    _write_rows(f.fileno(), z, r0)
                    return z

                z1, z2 = both(standardise, (f1, s1), (f2, s2), star=True)
                z2 -= z1
                del z1
                d = np.sqrt(np.einsum("ijk,ijk->ij", z2, z2, dtype=np.float64))
                cva[r0:r1] = np.where(v, d, np.nan)  # float64 -> float32 on assignment
                del z2
                feedback.set_progress((len(windows) + i + 1) / total)
        shape = (nb, rows, cols)
        return StreamedPair(
            WindowReader(paths[0], shape),
            WindowReader(paths[1], shape),
            valid,
            cva,
            info1,
            info2,
            list(bands) if bands else None,
            {"t1": s1, "t2": s2},
            scratch,
            time.perf_counter() - start,
        )
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def whole_pair_mb(info: raster_io.RasterInfo, bands: Sequence[int] | None = None) -> float:
    """Memory (MB) that pipeline.load_pair needs: both dates raw and standardised, float32."""
    return memory.whole_pair_mb(len(bands) if bands else info.bands, info.rows, info.cols)
