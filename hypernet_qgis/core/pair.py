"""The input of every job: two co-registered dates as a source of windows, in memory or in scratch files.

``open_pair`` checks the two files (distinct, same grid, enough bands, large enough) before reading a pixel,
then either reads both dates whole (the pair fits the memory budget) or standardises them strip by strip into
scratch files read back by windows (``streaming.py``). Either way the jobs get the same :class:`ImagePair`:
standardised dates that support ``x[:, r0:r1, c0:c1]``, the valid mask shared by both dates, the per-band
statistics, and the pre-detection score that picks mask g. Training, detection, model metadata and reports are
then the same code for every scene size.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import memory
from .classic.scaling import standardize
from .errors import InputError
from .io import raster_io, streaming
from .io.align import check_alignable
from .options import DEFAULT_MEMORY_BUDGET_MB, MIN_SIDE
from .progress import Feedback, NullFeedback


@dataclass
class ImagePair:
    """Two co-registered dates, standardised per date, with their shared valid-pixel mask.

    ``x1s``/``x2s`` are float32 (bands, rows, cols) arrays, or ``streaming.WindowReader`` s over scratch files for
    pairs over half the memory budget (``windowed``, ``memory.PAIR_SHARE``); both support window slicing.
    ``x1``/``x2`` (raw values) are kept only for in-memory pairs (the classic detectors use them).
    """

    x1s: Any
    x2s: Any
    valid: np.ndarray
    info1: raster_io.RasterInfo
    info2: raster_io.RasterInfo
    bands: list[int] | None
    scaling: dict[str, Any]
    x1: np.ndarray | None = field(default=None, repr=False)
    x2: np.ndarray | None = field(default=None, repr=False)
    cva: np.ndarray | None = field(default=None, repr=False)
    windowed_source: streaming.StreamedPair | None = field(default=None, repr=False)
    #: MB the pair holds in memory (both dates raw and standardised; a windowed pair: its per-pixel maps)
    held_mb: float = 0.0
    kept_report_dates: tuple[np.ndarray, np.ndarray, list[float] | None] | None = field(default=None, repr=False)

    @property
    def windowed(self) -> bool:
        """The standardised dates are scratch files read by windows (the pair exceeds the memory budget)."""
        return self.windowed_source is not None

    @property
    def band_count(self) -> int:
        return int(self.x1s.shape[0])

    @property
    def wavelengths_nm(self) -> list[float] | None:
        """Wavelengths of the selected bands (None when the files do not record them)."""
        return list(self.info1.wavelengths_nm) if self.info1.wavelengths_nm else None

    def raw_dates(self) -> tuple[np.ndarray, np.ndarray]:
        """The raw dates (bands, rows, cols) of an in-memory pair; a windowed pair keeps none (ValueError)."""
        if self.x1 is None or self.x2 is None:
            raise ValueError("a windowed pair keeps no raw dates in memory")
        return self.x1, self.x2

    def pre_detection_score(self) -> np.ndarray:
        """CVA of the standardised dates (NaN where invalid): the classic score that picks mask g."""
        if self.cva is None:
            from .classic.baselines import cva

            self.cva = cva(np.asarray(self.x1s), np.asarray(self.x2s), self.valid)
        return self.cva

    def report_dates(self) -> tuple[np.ndarray, np.ndarray, list[float] | None]:
        """The two dates for a report's pictures: the raw dates in memory; for a windowed pair only the three
        bands the true-colour quicklook shows, read from the files (bounded memory). With their wavelengths."""
        if self.x1 is not None and self.x2 is not None:
            return self.x1, self.x2, self.wavelengths_nm
        if self.kept_report_dates is not None:
            return self.kept_report_dates
        from .report.quicklook import choose_rgb_bands

        (r, g, b), _ = choose_rgb_bands(self.band_count, self.wavelengths_nm)
        picks = sorted({r, g, b})
        numbers = [(self.bands[i] if self.bands else i + 1) for i in picks]
        t1 = raster_io.read_raster(self.info1.path, numbers)[0]
        t2 = raster_io.read_raster(self.info2.path, numbers)[0]
        wavelengths = [self.wavelengths_nm[i] for i in picks] if self.wavelengths_nm else None
        return t1, t2, wavelengths

    def keep_report_dates(self) -> None:
        """Read the report's pictures now (a windowed pair whose files are temporary, e.g. warped by align)."""
        if self.x1 is None and self.kept_report_dates is None:
            self.kept_report_dates = self.report_dates()

    def close(self) -> None:
        """Delete the scratch files of a windowed pair, and wait for those of the work done on the pair (detection's
        layer maps) that are being deleted in the background (``streaming.remove_soon``)."""
        streaming.finish_removals()
        if self.windowed_source is not None:
            self.windowed_source.close()

    def __enter__(self) -> ImagePair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _name(path: str) -> str:
    return os.path.basename(str(path))


@dataclass(frozen=True)
class PairLabels:
    """How messages name the inputs: the CLI's and qgis_process's names, or the QGIS dialog's labels."""

    t1: str = "T1"
    t2: str = "T2"
    bands: str = "BANDS"


DIALOG_LABELS = PairLabels("Image T1", "Image T2", "Bands")


def check_pair_files(
    t1: str,
    t2: str,
    bands: Sequence[int] | None = None,
    min_bands: int = 1,
    what: str = "HyperNet",
    *,
    align: bool = False,
    labels: PairLabels = PairLabels(),
) -> tuple[raster_io.RasterInfo, raster_io.RasterInfo]:
    """Everything about the two files that can be known before reading a pixel; InputError naming the problem.

    Two different images (not one file twice), the same grid, CRS and bands (``align``: or T2 can be warped onto
    T1's grid), the band selection within the band count, at least ``min_bands`` bands after it, and at least
    MIN_SIDE pixels a side. Both front ends call it; ``labels`` names the inputs as each front end shows them.
    """
    same = os.path.realpath(t1) == os.path.realpath(t2)
    if not same and os.path.exists(t1) and os.path.exists(t2):
        same = os.path.samefile(t1, t2)
    if same:
        raise InputError(
            f"{labels.t1} and {labels.t2} are the same image ({_name(t1)}). Give the image of the "
            f"second date as {labels.t2}."
        )
    info1, info2 = raster_io.raster_info(t1), raster_io.raster_info(t2)
    if align:
        check_alignable(info1, info2)
    else:
        raster_io.check_same_grid(info1, info2)
    if bands is not None:
        bad = [b for b in bands if not 1 <= b <= info1.bands]
        if bad:
            raise InputError(
                f"{labels.bands} asks for band {bad[0]} but {info1.name} has {info1.bands} band"
                f"{'s' if info1.bands != 1 else ''}. Use band numbers from 1 to {info1.bands}."
            )
    count = len(bands) if bands else info1.bands
    if count < min_bands:
        raise InputError(
            f"{info1.name} has {count} band{'s' if count != 1 else ''}"
            f"{' after the band selection' if bands else ''}; {what} needs at least {min_bands}. "
            f"Use a multi- or hyperspectral image, or more bands in {labels.bands}."
        )
    if min(info1.rows, info1.cols) < MIN_SIDE:
        raise InputError(
            f"The images are {info1.cols}x{info1.rows} pixels; {what} needs at least {MIN_SIDE}x{MIN_SIDE}"
            + (
                " (its 3x3, 5x5 and 7x7 windows would see mostly padding)"
                if what == "HyperNet"
                else " (too few pixels to find a threshold)"
            )
            + ". Use a larger area."
        )
    return info1, info2


def in_memory_mb(info: raster_io.RasterInfo, bands: Sequence[int] | None = None) -> float:
    """Memory (MB) a pair needs in memory (the memory model's rule, ``memory.whole_pair_mb``)."""
    return streaming.whole_pair_mb(info, bands)


def open_pair(
    t1: str,
    t2: str,
    bands: Sequence[int] | None = None,
    *,
    min_bands: int = 1,
    what: str = "HyperNet",
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
    feedback: Feedback | None = None,
    scratch_dir: str | None = None,
) -> ImagePair:
    """Check, read and standardise a pair: whole when it fits ``memory_budget_mb``, else into scratch files read
    by windows (close the pair, or use it as a context manager, to delete them). InputError naming the problem."""
    feedback = feedback or NullFeedback()
    info1, _ = check_pair_files(t1, t2, bands, min_bands, what)
    cache = memory.gdal_cache_mb(memory_budget_mb, raster_io.block_row_mb(t1) + raster_io.block_row_mb(t2))
    if memory.pair_fits_in_memory(in_memory_mb(info1, bands), memory_budget_mb):
        with raster_io.gdal_cache(cache):
            pair = load_pair(t1, t2, bands, min_bands, what, checked=True)
        pair.held_mb = in_memory_mb(info1, bands)
        memory.release_free_memory()  # the reading's temporaries (float64 moments, GDAL's blocks)
        return pair
    feedback.info(
        f"The pair needs more than half the {memory_budget_mb:g} MB memory budget in memory: it is read, "
        "standardised and used by windows."
    )
    with raster_io.gdal_cache(cache):
        source = streaming.load_pair_streamed(t1, t2, bands, scratch_dir, feedback, memory_budget_mb=memory_budget_mb)
    memory.release_free_memory()  # the strips
    return ImagePair(
        source.x1s,
        source.x2s,
        source.valid,
        source.info1,
        source.info2,
        source.bands,
        source.scaling,
        cva=source.cva,
        windowed_source=source,
        held_mb=memory.windowed_pair_mb(info1.rows, info1.cols),
    )


def load_pair(
    t1: str,
    t2: str,
    bands: Sequence[int] | None = None,
    min_bands: int = 1,
    what: str = "HyperNet",
    checked: bool = False,
) -> ImagePair:
    """Read, check and standardise a pair whole, in memory. Raises InputError naming what differs or is wrong.

    ``what`` names the method in messages (HyperNet, CVA, ...); ``checked``: check_pair_files already ran.
    """
    if not checked:
        check_pair_files(t1, t2, bands, min_bands, what)
    x1, v1, info1 = raster_io.read_raster(t1, bands)
    x2, v2, info2 = raster_io.read_raster(t2, bands)
    valid = v1 & v2
    if not valid.any():
        raise InputError(
            "No pixel is valid in both dates: every pixel is nodata or NaN in T1 or in T2. "
            "Check the layers' nodata values and that the two images overlap."
        )
    x1s, s1 = standardize(x1, valid)
    x2s, s2 = standardize(x2, valid)
    if not (np.any(s1["std"]) or np.any(s2["std"])) or not (np.any(x1s) or np.any(x2s)):
        raise InputError("Every band is constant over the valid pixels of both dates; there is nothing to compare.")
    return ImagePair(x1s, x2s, valid, info1, info2, list(bands) if bands else None, {"t1": s1, "t2": s2}, x1=x1, x2=x2)
