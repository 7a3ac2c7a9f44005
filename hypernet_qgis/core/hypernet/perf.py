"""Speed switches for training and detection (CPU allocator settings), and the paper schedule's budget check.

The sizes themselves (training step, crops, tiles, scratch, strips; CPU and CUDA) are decided in ``memory.py``;
its names are re-exported here for the callers that imported them from this module.

The allocator switch: glibc serves tensors above its mmap threshold (at most 32 MB) with fresh ``mmap`` pages, so
every training step page-faults and zeroes its large activations again, and its *dynamic* threshold lets
fragmentation inflate the peak of tiled detection by ~2-3x. :func:`training_allocator` keeps freed memory in the
heap for reuse during training (then trims it), :func:`streaming_allocator` hands tiles back to the system at once.
Both are no-ops where glibc's ``mallopt`` is unavailable.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import math
from collections.abc import Iterator

import torch

from ..errors import InputError
from ..memory import (  # noqa: F401 (re-exported)
    CUDA_SHARE,
    TRAIN_BAND_MAPS,
    TRAIN_FIXED_MB,
    TRAIN_WIDTH_MAPS,
    crop_plan,
    device_budget_mb,
    release_free_memory,
    train_bytes_per_pixel,
    train_pixels_for_budget,
    train_step_mb,
)

# glibc mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_libc = None


def _glibc():
    global _libc
    if _libc is None:
        try:
            name = ctypes.util.find_library("c")
            lib = ctypes.CDLL(name) if name else None
            _libc = lib if lib is not None and hasattr(lib, "mallopt") and hasattr(lib, "malloc_trim") else False
        except OSError:
            _libc = False
    return _libc or None


def _restore_defaults(lib) -> None:
    """glibc's defaults (mmap above 128 KB, up to 65536 maps, trim above 128 KB), then give free memory back."""
    lib.mallopt(_M_MMAP_MAX, 65536)
    lib.mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
    lib.mallopt(_M_TRIM_THRESHOLD, 128 * 1024)
    release_free_memory()


#: Page reuse fragments the heap: 130-140 maps per pixel with one thread (600x500x224: 17.6 vs 13.2 GB), but a
#: 2-thread paper epoch at 600x500x224 grew past 22 GB and was OOM-killed. So it is only switched on when the
#: budget is at least twice the step's estimate.
REUSE_HEADROOM = 2.0


@contextlib.contextmanager
def training_allocator(device: torch.device | None = None, enabled: bool = True) -> Iterator[None]:
    """During training on the CPU, keep freed blocks in the heap so each step reuses the last step's pages.

    Without it, glibc maps every tensor above 32 MB afresh and the kernel faults in and zeroes its pages at every
    step: at 300x300x224 a paper epoch took 13.4 s user + 7.4 s system CPU time, with reuse 13.3 s + 0.2 s
    (600x500x224: 98 -> 76 s wall per epoch). Its peak is less predictable (see REUSE_HEADROOM).

    Either way, the free memory of the training steps goes back to the system when training ends: glibc keeps
    it otherwise (a windowed 1000x1000x100 job at a 1024 MB budget kept 0.7 GB through detection).
    """
    lib = _glibc()
    if lib is None or (device is not None and device.type != "cpu"):
        yield
        return
    if not enabled:
        try:
            yield
        finally:
            release_free_memory()
        return
    lib.mallopt(_M_MMAP_MAX, 0)
    lib.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    try:
        yield
    finally:
        _restore_defaults(lib)


@contextlib.contextmanager
def streaming_allocator() -> Iterator[None]:
    """During tiled work, serve blocks over 1 MB from mmap (returned to the system when freed): bounded peak."""
    lib = _glibc()
    if lib is None:
        yield
        return
    lib.mallopt(_M_MMAP_THRESHOLD, 1 << 20)
    lib.mallopt(_M_TRIM_THRESHOLD, 1 << 20)
    try:
        yield
    finally:
        _restore_defaults(lib)


def check_paper_fits(bands: int, width: int, rows: int, cols: int, budget_mb: float, device: torch.device) -> None:
    """The paper schedule trains on the whole image every step: refuse it when that cannot fit the budget."""
    need = train_step_mb(bands, width, rows * cols)
    if need > budget_mb:
        where = "free GPU memory" if device.type == "cuda" else "memory budget"
        raise InputError(
            f"The paper schedule trains on the whole {cols}x{rows} image at every step, which needs about "
            f"{math.ceil(need / 1024)} GB for {bands} bands and branch width {width}, more than the {where} "
            f"({budget_mb / 1024:.1f} GB). Use --schedule default (random crops, bounded memory), a smaller area "
            "or width, or raise --memory-budget-mb if the machine has the memory."
        )
