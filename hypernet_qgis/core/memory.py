"""The memory model: every size decision of detection and training, CPU and CUDA, with its constants.

One budget (``memory_budget_mb``, the user's; on CUDA the card's free memory, :func:`device_budget_mb`) bounds
the working memory of a job. What it decides:

* **training** (one step, both dates, forward + backward): ``4 * (TRAIN_BAND_MAPS * bands + TRAIN_WIDTH_MAPS *
  width)`` bytes per pixel plus ``TRAIN_FIXED_MB``, from peak-RSS growth on CPU with torch 2.13: ~100 maps a pixel
  when glibc maps every large tensor afresh, 130-140+ with page reuse, 165-185 in glibc's default steady state
  (heap fragmentation; 307x241x154 paper: 4.4 GB peak RSS after 3 epochs); 170 covers them
  (:func:`crop_plan`, :func:`train_step_mb`);
* **detection**, whole image or tiles (:func:`detection_plan`): a no-grad forward pass of a window holds its input
  (bands), about ``MAPS_PER_PIXEL`` width-channel maps at the peak and the 2*width output (measured 6.3 to 11.2
  maps including the output for (bands, width) = (200, 100), (100, 50), (20, 16); 12 + 2 leaves a margin). By
  tiles, the layer-by-layer passes (``layerwise.py``) keep their intermediate maps, ``SCRATCH_WIDTH_MAPS``
  width-channel maps per pixel at the peak, in memory when they fit the budget next to the tile, else in
  disk scratch files read by windows;
* **read windows** of the streamed route (:func:`strip_values`, :func:`read_windows`): both dates' windows, raw
  and standardised, in a quarter of the budget, capped at ``STRIP_VALUES``, aligned to the files' blocks;
* **whole pair or windows** (:func:`whole_pair_mb`): the in-memory route holds both dates raw and standardised,
  the windowed route its per-pixel maps (:func:`windowed_pair_mb`); training and detection get the rest
  (:func:`working_budget_mb`);
  a series' shared model holds all its pairs at once, each within an equal share (:func:`shared_pair_budget_mb`).
* **IR-MAD** (the fusion's classic evidence, :func:`irmad_sample_pixels`, :func:`irmad_strip_rows`): its
  iterations hold at most ``IRMAD_SAMPLE_VALUES`` values of each date (a regular sample of the valid pixels), and
  a windowed pair is read by strips in STRIP_SHARE of the budget;
* **GDAL's block cache** while the inputs are read (:func:`gdal_cache_mb`): GDAL's default is 5 % of the
  machine's memory (1.2 GB on 24 GB), outside any budget; the engine lowers it to what one row of blocks of both
  dates needs, at most ``GDAL_CACHE_SHARE`` of the budget, and restores it after reading.

Peak RSS also carries the engine itself (~0.3 GB imported), which the budget does not size, and whatever the C
allocator keeps of freed blocks (tiled detection hands them back after each pass, :func:`release_free_memory`);
``tests/test_memory.py`` checks that peak RSS stays within the budget plus 0.5 GB. Torch is imported only when a
CUDA budget is asked for.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
from dataclasses import dataclass
from typing import Any

from .options import DEFAULT_MEMORY_BUDGET_MB  # noqa: F401 (the default budget's one home: core/options.py)

#: Bytes of one float32 value, the engine's working precision.
FLOAT_BYTES = 4
#: Width-channel maps alive at the peak of a no-grad forward pass of a window (besides its input and output).
MAPS_PER_PIXEL = 12
#: Width-channel maps per pixel that the layer-by-layer tiled passes keep in scratch at their peak: one date's
#: raw fused maps (2) while the other date runs, plus a stage's inputs and outputs (4) and the finished branch (1).
SCRATCH_WIDTH_MAPS = 7
#: Share of the budget that in-memory scratch must leave to the tile (else the scratch goes to disk: small tiles
#: would cost more halo work than the page-cached files cost copies).
SCRATCH_TILE_SHARE = 0.25
#: Share of what is left of the budget that a tile on the CPU is sized for: the rest absorbs the C allocator's
#: slack (tcmalloc's caches, fragmentation), up to about 0.15 GB at a 1024 MB budget (1500x1500x100 tiles of 660:
#: peak RSS 1.33-1.50 GB between runs of the same job with tcmalloc).
HOST_TILE_SHARE = 0.85
#: Smallest and largest tile sides of tiled detection.
MIN_TILE, MAX_TILE = 32, 4096
#: Bytes per pixel of a training step = 4 * (TRAIN_BAND_MAPS * bands + TRAIN_WIDTH_MAPS * width) (see above).
TRAIN_BAND_MAPS = 3
TRAIN_WIDTH_MAPS = 170
#: Fixed overhead of a training step (MB): optimiser state, allocator slack, thread buffers.
TRAIN_FIXED_MB = 256
#: Share of a CUDA card's free memory that automatic sizing uses.
CUDA_SHARE = 0.8
#: Most float32 values of one input strip of the streamed route (per date): 32 M values = 128 MB.
STRIP_VALUES = 32 * 2**20
#: Share of the budget that the streamed route's read windows may take (both dates).
STRIP_SHARE = 0.25
#: Float32 copies of each date's window that the streamed route's read holds at once (see :func:`strip_values`).
STRIP_COPIES = 4

MB = 2**20
#: Most float32 values of each date that IR-MAD's iterations hold (32 MB a date): every valid pixel up to about
#: 37 000 pixels of 224 bands or 1.4 million of 6 (all the benchmark pairs), a regular sample of them beyond (the
#: 2p x 2p covariances are then estimated from over 80 pixels per dimension; each iteration costs about
#: 8 p^2 n operations). Fixed, not from the budget, so that the result does not depend on the budget.
IRMAD_SAMPLE_VALUES = 8 * 2**20
#: Float32 copies of each value that IR-MAD's strips hold at once (read, selected, standardised, centred; both
#: dates) -- the divisor of the strip's share of the budget.
IRMAD_STRIP_COPIES = 12
#: Most of the budget that a pair may take in memory (both dates raw and standardised): training and detection
#: work in the rest (:func:`working_budget_mb`). A 3.4 GB pair under a 4096 MB budget used to stay in memory and
#: leave training and detection their full budget on top of it (peak 5.3 GB).
PAIR_SHARE = 0.5
#: Most of the budget that GDAL's block cache may take while the inputs are read.
GDAL_CACHE_SHARE = 0.25
#: The least block cache given to GDAL (MB): a few blocks of any layout.
GDAL_CACHE_MIN_MB = 32


def device_budget_mb(device: Any, memory_budget_mb: float) -> float:
    """Working memory available on ``device``: the user's budget on the CPU, CUDA_SHARE of the free memory on a GPU."""
    if getattr(device, "type", str(device)) == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return CUDA_SHARE * free / MB
    return float(memory_budget_mb)


# --- detection --------------------------------------------------------------------------------------------------


def forward_bytes_per_pixel(bands: int, width: int, extra_maps: int = 0, value_bytes: int = FLOAT_BYTES) -> int:
    """Peak bytes per pixel of a no-grad forward pass of a window: input, MAPS_PER_PIXEL maps, the 2*width output,
    and ``extra_maps`` more channels held meanwhile."""
    return value_bytes * (bands + (MAPS_PER_PIXEL + 2) * width + extra_maps)


def tile_for_budget(
    bands: int,
    width: int,
    memory_budget_mb: float,
    halo: int = 14,
    bytes_per_value: int = 4,
    minimum: int = MIN_TILE,
    maximum: int = MAX_TILE,
    extra_maps: int = 0,
) -> int:
    """Largest square tile whose haloed window's forward pass fits ``memory_budget_mb`` (clamped to the limits)."""
    per_pixel = forward_bytes_per_pixel(bands, width, extra_maps, bytes_per_value)
    side = math.isqrt(max(0, int(memory_budget_mb * MB / per_pixel)))
    return int(max(minimum, min(maximum, side - 2 * halo)))


def scratch_mb(width: int, rows: int, cols: int, value_bytes: int = FLOAT_BYTES) -> float:
    """Peak MB of the layer-by-layer passes' scratch maps for a pair of ``rows`` x ``cols``."""
    return SCRATCH_WIDTH_MAPS * width * rows * cols * value_bytes / MB


def scratch_in_memory(
    bands: int,
    width: int,
    rows: int,
    cols: int,
    memory_budget_mb: float,
    halo: int = 14,
    value_bytes: int = FLOAT_BYTES,
    tile_on_host: bool = True,
) -> bool:
    """Whether the scratch maps stay in memory: they must leave SCRATCH_TILE_SHARE of the budget, and at least a
    MIN_TILE tile's window, to the tile (``tile_on_host``: False when the tile works on a GPU)."""
    left = memory_budget_mb - scratch_mb(width, rows, cols, value_bytes)
    if not tile_on_host:
        return left >= 0.0
    min_window_mb = (MIN_TILE + 2 * halo) ** 2 * forward_bytes_per_pixel(bands, width, 0, value_bytes) / MB
    return left >= max(min_window_mb, SCRATCH_TILE_SHARE * memory_budget_mb)


@dataclass(frozen=True)
class DetectionPlan:
    """How detection runs: ``whole`` (one pass per date) or by ``tile`` x ``tile`` tiles with its scratch maps
    in memory (``scratch_in_memory``) or in disk files."""

    whole: bool
    tile: int
    scratch_in_memory: bool


def detection_plan(
    bands: int,
    width: int,
    rows: int,
    cols: int,
    memory_budget_mb: float,
    halo: int = 14,
    device: Any = "cpu",
    tile: int | None = None,
    value_bytes: int = FLOAT_BYTES,
) -> DetectionPlan:
    """Whole image when both dates' whole-image passes fit the budget, else tiles (``tile`` forces a side).

    Whole image: one date's forward pass while the other's 2*width features are held. By tiles: the scratch maps
    go to memory when they leave at least SCRATCH_TILE_SHARE of the budget (and a MIN_TILE tile) to the tile,
    which then gets what is left, else to disk files (the tile gets the whole budget); on the CPU the tile is
    sized for HOST_TILE_SHARE of that (the allocator's slack). On CUDA the tile works in
    the card's memory (:func:`device_budget_mb`) while the scratch stays in host memory, under the user's budget.
    """
    host = float(memory_budget_mb)
    work = device_budget_mb(device, memory_budget_mb)
    if tile is None and rows * cols * forward_bytes_per_pixel(bands, width, 2 * width, value_bytes) <= work * MB:
        return DetectionPlan(True, max(rows, cols), False)
    if tile is not None and int(tile) >= max(rows, cols):
        return DetectionPlan(True, max(rows, cols), False)
    on_cuda = getattr(device, "type", str(device)) == "cuda"
    in_memory = scratch_in_memory(bands, width, rows, cols, host, halo, value_bytes, tile_on_host=not on_cuda)
    if tile is None:
        left = host - scratch_mb(width, rows, cols, value_bytes)
        host_share = 1.0 if on_cuda else HOST_TILE_SHARE
        tile = tile_for_budget(
            bands, width, host_share * (work if on_cuda or not in_memory else left), halo, value_bytes
        )
    return DetectionPlan(False, int(tile), in_memory)


# --- training -------------------------------------------------------------------------------------------------


def train_bytes_per_pixel(bands: int, width: int) -> int:
    """Peak bytes per pixel of one training step (both dates, forward and backward)."""
    return FLOAT_BYTES * (TRAIN_BAND_MAPS * bands + TRAIN_WIDTH_MAPS * width)


def train_pixels_for_budget(bands: int, width: int, budget_mb: float) -> int:
    """How many pixels one training step may hold within ``budget_mb``."""
    usable = max(0.0, budget_mb - TRAIN_FIXED_MB) * MB
    return int(usable // train_bytes_per_pixel(bands, width))


def train_step_mb(bands: int, width: int, pixels: int) -> float:
    """Estimated peak MB of one training step on ``pixels`` pixels."""
    return TRAIN_FIXED_MB + pixels * train_bytes_per_pixel(bands, width) / MB


def crop_plan(
    rows: int, cols: int, bands: int, width: int, crop_size: int, pixels_per_step: int, budget_mb: float
) -> tuple[int, int]:
    """(crop side, crops per step) of the default schedule within the budget.

    The crop is ``crop_size`` (at most the image); the crop count covers about ``pixels_per_step`` pixels, fewer
    when the budget cannot hold them, always at least one crop (the crop side shrinks, down to 16, if even one
    crop does not fit).
    """
    crop = max(1, min(crop_size, rows, cols))
    limit = train_pixels_for_budget(bands, width, budget_mb)
    while crop > 16 and crop * crop > limit:
        crop //= 2
    pixels = min(pixels_per_step, rows * cols, max(limit, crop * crop))
    count = max(1, pixels // (crop * crop))
    return crop, count


def shared_pair_budget_mb(memory_budget_mb: float, pairs: int) -> float:
    """The budget each pair gets when one model trains on ``pairs`` pairs at once (a series' shared model): equal
    shares, so that the pairs held together stay within the budget; a pair over its share is read by windows
    (``pair.open_pair``). The training step itself is sized by :func:`crop_plan` as for one pair."""
    return float(memory_budget_mb) / max(1, int(pairs))


# --- reading ----------------------------------------------------------------------------------------------------


def whole_pair_mb(bands: int, rows: int, cols: int) -> float:
    """Memory (MB) that the in-memory route needs: both dates raw and standardised, float32."""
    return 4 * bands * rows * cols * FLOAT_BYTES / MB


#: Bytes per pixel of the per-pixel maps a job holds next to a windowed pair's scratch files: valid mask (1), CVA
#: (4), change intensity (4), classic evidence (4), change map (1), training's mask g and spare (2).
JOB_MAP_BYTES = 16


def windowed_pair_mb(rows: int, cols: int) -> float:
    """Memory (MB) that a job holds beside a windowed pair: its per-pixel maps (JOB_MAP_BYTES a pixel)."""
    return JOB_MAP_BYTES * rows * cols / MB


def pair_fits_in_memory(pair_mb: float, memory_budget_mb: float) -> bool:
    """The in-memory route: the pair takes at most PAIR_SHARE of the budget."""
    return pair_mb <= PAIR_SHARE * memory_budget_mb


def working_budget_mb(memory_budget_mb: float, held_mb: float) -> float:
    """What training and detection may use next to ``held_mb`` MB already held (an in-memory pair)."""
    return max(memory_budget_mb - held_mb, (1 - PAIR_SHARE) * memory_budget_mb)


def strip_values(memory_budget_mb: float | None, bands: int = 1, cols: int = 1) -> int:
    """Float32 values of one date's read window: STRIP_SHARE of the budget over both dates, each held as
    STRIP_COPIES float32 copies (GDAL's values, the float32 window, its pixel-interleaved copy, the moments'
    differences), at most STRIP_VALUES, at least a row."""
    if memory_budget_mb is None:
        return STRIP_VALUES
    values = int(STRIP_SHARE * memory_budget_mb * MB / (2 * STRIP_COPIES * FLOAT_BYTES))
    return max(bands * cols, min(STRIP_VALUES, values))


def read_windows(
    rows: int, cols: int, bands: int, block: tuple[int, int], values: int
) -> list[tuple[int, int, int, int]]:
    """Windows (r0, r1, c0, c1) that read a raster of ``rows`` x ``cols`` by its ``block`` (rows, cols) grid.

    Full-width strips of whole block rows when one block row of ``bands`` bands fits ``values`` values (a date's
    share, :func:`strip_values`), else one block row by whole blocks across. A window never cuts a block, so each
    block is decoded once however small the budget; a single block over ``values`` is still read whole (GDAL
    decodes no less)."""
    block_rows, block_cols = max(1, min(block[0], rows)), max(1, min(block[1], cols))
    per_row = cols * bands
    if block_rows * per_row <= values:
        height = block_rows * max(1, values // (per_row * block_rows))
        return [(r, min(rows, r + height), 0, cols) for r in range(0, rows, height)]
    width = block_cols * max(1, values // (block_rows * block_cols * bands))
    return [
        (r, min(rows, r + block_rows), c, min(cols, c + width))
        for r in range(0, rows, block_rows)
        for c in range(0, cols, width)
    ]


def irmad_sample_pixels(bands: int) -> int:
    """How many valid pixels IR-MAD's iterations use (all of them when there are fewer)."""
    return max(1, IRMAD_SAMPLE_VALUES // max(1, int(bands)))


def irmad_strip_rows(memory_budget_mb: float, bands: int, cols: int) -> int:
    """Rows of IR-MAD's strips over a windowed pair: IRMAD_STRIP_COPIES float32 copies of the strip's values in
    STRIP_SHARE of the budget (at least one row)."""
    per_row = IRMAD_STRIP_COPIES * FLOAT_BYTES * max(1, bands) * max(1, cols)
    return max(1, int(STRIP_SHARE * memory_budget_mb * MB // per_row))


def gdal_cache_mb(memory_budget_mb: float, block_row_mb: float) -> int:
    """GDAL's block cache (MB) while a pair is read: one row of blocks of both dates (``block_row_mb``, their sum)
    with a 10 % margin, so that each block is decoded once by the strip-by-strip reads, but at least
    GDAL_CACHE_MIN_MB and at most GDAL_CACHE_SHARE of the budget."""
    want = 1.1 * block_row_mb
    return int(math.ceil(round(max(GDAL_CACHE_MIN_MB, min(want, GDAL_CACHE_SHARE * memory_budget_mb)), 6)))


def release_free_memory() -> None:
    """Give the allocator's free memory back to the system: glibc's ``malloc_trim``, and tcmalloc's
    ``MallocExtension_ReleaseFreeMemory`` when tcmalloc serves this process (the CLI preloads it)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        libc.malloc_trim(0)
    except (AttributeError, OSError, TypeError):  # not glibc / not tcmalloc / Windows
        pass
    try:
        release = ctypes.CDLL(None).MallocExtension_ReleaseFreeMemory
    except (AttributeError, OSError, TypeError):  # not glibc / not tcmalloc / Windows
        return
    release()
