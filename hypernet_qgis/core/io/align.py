"""Pairs on different grids: T2 warped onto T1's grid (through GDAL VRTs), the common area only.

Two acquisitions of two dates rarely share a grid. When they do not, T1's grid is cropped to the area both images
cover (snapped to T1's pixels) and T2 (and an unchanged mask, with nearest neighbour) is warped onto that grid
with ``gdal.Warp`` into a virtual raster: nothing is copied, the pixels are resampled as they are read. The change
map is then on T1's grid over the common area. Pairs already on one grid are used as they are. Torch-free.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

from osgeo import gdal, osr

from ..errors import InputError
from ..progress import Feedback, NullFeedback
from . import raster_io

#: Resampling methods offered for T2 (masks always use nearest).
RESAMPLINGS = ("nearest", "bilinear", "cubic", "average")
DEFAULT_RESAMPLING = "bilinear"


@dataclass
class AlignedPair:
    """Paths to use for T1, T2 (and the mask), and what was done (None when the grids already matched)."""

    t1: str
    t2: str
    mask: str | None
    note: str | None = None


def same_grid(a: raster_io.RasterInfo, b: raster_io.RasterInfo) -> bool:
    """True when the two rasters share size, CRS and geotransform (raster_io.check_same_grid passes)."""
    try:
        raster_io.check_same_grid(a, b)
    except InputError:
        return False
    return True


def _srs(info: raster_io.RasterInfo) -> osr.SpatialReference:
    srs = osr.SpatialReference()
    srs.ImportFromWkt(info.crs_wkt)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def _footprint(info: raster_io.RasterInfo, to: osr.SpatialReference) -> tuple[float, float, float, float]:
    """Bounding box (minx, miny, maxx, maxy) in ``to`` of the raster's outline (21 points per edge)."""
    gt = info.geotransform
    points = []
    for i in range(21):
        f = i / 20.0
        for col, row in (
            (f * info.cols, 0),
            (f * info.cols, info.rows),
            (0, f * info.rows),
            (info.cols, f * info.rows),
        ):
            points.append((gt[0] + col * gt[1] + row * gt[2], gt[3] + col * gt[4] + row * gt[5]))
    transform = osr.CoordinateTransformation(_srs(info), to)
    xs, ys = [], []
    for x, y in points:
        try:
            tx, ty, _ = transform.TransformPoint(x, y)
        except RuntimeError:
            continue
        if math.isfinite(tx) and math.isfinite(ty):
            xs.append(tx)
            ys.append(ty)
    if not xs:
        raise InputError(
            f"{info.name}'s footprint cannot be transformed into T1's CRS. Reproject it by hand "
            "(gdalwarp) or check its CRS."
        )
    return min(xs), min(ys), max(xs), max(ys)


def common_window(
    info1: raster_io.RasterInfo, info2: raster_io.RasterInfo, what: tuple[str, str] = ("T1", "T2")
) -> tuple[int, int, int, int]:
    """T1's pixel window (col0, row0, cols, rows) over the area T2 covers. InputError (one line) when a CRS is
    missing, T1's grid is rotated or the footprints do not overlap. ``what`` names the two images in messages."""
    for name, info in zip(what, (info1, info2)):
        if not info.crs_wkt:
            raise InputError(
                f"{name} ({info.name}) has no coordinate reference system, so {what[1]} cannot be "
                f"placed on {what[0]}'s grid. Assign its CRS (gdal_edit -a_srs or Processing 'Assign "
                "projection')."
            )
    gt = info1.geotransform
    if gt[2] or gt[4]:
        raise InputError(f"{what[0]} ({info1.name}) has a rotated grid; warp it to a north-up grid first (gdalwarp).")
    minx, miny, maxx, maxy = _footprint(info2, _srs(info1))
    col_a, col_b = sorted(((minx - gt[0]) / gt[1], (maxx - gt[0]) / gt[1]))
    row_a, row_b = sorted(((miny - gt[3]) / gt[5], (maxy - gt[3]) / gt[5]))
    eps = 1e-6
    col0, col1 = max(0, math.floor(col_a + eps)), min(info1.cols, math.ceil(col_b - eps))
    row0, row1 = max(0, math.floor(row_a + eps)), min(info1.rows, math.ceil(row_b - eps))
    if col1 <= col0 or row1 <= row0:
        raise InputError(
            f"{what[0]} ({info1.name}) and {what[1]} ({info2.name}) do not overlap: their footprints "
            "share no pixel. Choose images of the same place."
        )
    return col0, row0, col1 - col0, row1 - row0


def check_alignable(
    info1: raster_io.RasterInfo, info2: raster_io.RasterInfo, what: tuple[str, str] = ("T1", "T2")
) -> None:
    """Cheap up-front check (QGIS dialog): same bands, and if the grids differ, T2 can be warped onto T1's."""
    if info1.bands != info2.bands:
        raster_io.check_same_grid(info1, info2, what)  # its message about band counts
    if not same_grid(info1, info2):
        common_window(info1, info2, what)


def _resample_alg(name: str) -> str:
    if name not in RESAMPLINGS:
        raise InputError(f"Unknown resampling {name!r}; use one of {', '.join(RESAMPLINGS)}.")
    return name


def _warp(
    src: str,
    dst: str,
    info1: raster_io.RasterInfo,
    window: tuple[int, int, int, int],
    resampling: str,
    nodata: float | None,
    float_output: bool,
) -> None:
    gt = info1.geotransform
    col0, row0, cols, rows = window
    x0, y0 = gt[0] + col0 * gt[1], gt[3] + row0 * gt[5]
    bounds = (
        min(x0, x0 + cols * gt[1]),
        min(y0, y0 + rows * gt[5]),
        max(x0, x0 + cols * gt[1]),
        max(y0, y0 + rows * gt[5]),
    )
    options = gdal.WarpOptions(
        format="VRT",
        dstSRS=info1.crs_wkt,
        outputBounds=bounds,
        width=cols,
        height=rows,
        resampleAlg=resampling,
        dstNodata=nodata,
        outputType=gdal.GDT_Float32 if float_output else gdal.GDT_Unknown,
        multithread=False,
    )
    with raster_io.quiet_gdal():
        ds = gdal.Warp(dst, src, options=options)
    if ds is None:
        raise InputError(f"Warping {os.path.basename(src)} onto T1's grid failed (GDAL: {gdal.GetLastErrorMsg()}).")
    ds = None


def _warp_image(
    info: raster_io.RasterInfo, dst: str, ref: raster_io.RasterInfo, window: tuple[int, int, int, int], resampling: str
) -> None:
    """An image warped onto ``window`` of ``ref``'s grid (its nodata kept, NaN when it has none)."""
    nodata = info.nodata[0]
    _warp(
        info.path,
        dst,
        ref,
        window,
        resampling,
        nodata if nodata is not None else float("nan"),
        float_output=nodata is None,
    )


def _warped_note(info: raster_io.RasterInfo, ref: raster_io.RasterInfo, resampling: str, what: tuple[str, str]) -> str:
    """'T2 (name) warped onto T1's grid (EPSG:..., pixel 30 x 30) with bilinear resampling' (the log's words)."""
    epsg = _srs(ref).GetAuthorityCode(None)
    return (
        f"{what[1]} ({info.name}) warped onto {what[0]}'s grid ({'EPSG:' + epsg if epsg else 'its CRS'}, pixel "
        f"{abs(ref.geotransform[1]):g} x {abs(ref.geotransform[5]):g}) with {resampling} resampling"
    )


def warp_onto_grid(
    info: raster_io.RasterInfo,
    ref: raster_io.RasterInfo,
    dst: str,
    *,
    resampling: str = DEFAULT_RESAMPLING,
    what: tuple[str, str] = ("T1", "T2"),
    feedback: Feedback | None = None,
) -> str:
    """Warp an image onto the whole of ``ref``'s grid as the VRT ``dst`` (nodata where it does not reach): the
    dates of a series, so that every map is on the first date's grid. InputError as :func:`check_alignable`.
    Returns the note logged ("Align: ...")."""
    feedback = feedback or NullFeedback()
    resampling = _resample_alg(resampling)
    check_alignable(ref, info, what)
    col0, row0, cols, rows = common_window(ref, info, what)
    _warp_image(info, dst, ref, (0, 0, ref.cols, ref.rows), resampling)
    note = (
        f"{_warped_note(info, ref, resampling, what)}; it covers {cols} x {rows} pixels of the "
        f"{ref.cols} x {ref.rows} (columns {col0}-{col0 + cols - 1}, rows {row0}-{row0 + rows - 1}), the rest "
        "is nodata."
    )
    feedback.info("Align: " + note)
    return note


@contextlib.contextmanager
def aligned_pair(
    t1: str,
    t2: str,
    mask: str | None = None,
    *,
    enabled: bool = True,
    resampling: str = DEFAULT_RESAMPLING,
    feedback: Feedback | None = None,
) -> Iterator[AlignedPair]:
    """The pair to read: as given when on one grid (or ``enabled`` is False: then a mismatch is refused as
    before), else T1 cropped to the common area and T2 (and the mask, nearest) warped onto it, as VRTs in a
    temporary folder removed on exit."""
    feedback = feedback or NullFeedback()
    resampling = _resample_alg(resampling)
    info1, info2 = raster_io.raster_info(t1), raster_io.raster_info(t2)
    if not enabled or same_grid(info1, info2):
        yield AlignedPair(t1, t2, mask)
        return
    if info1.bands != info2.bands:
        raster_io.check_same_grid(info1, info2)  # refused: the band counts differ (no warp fixes that)
    window = common_window(info1, info2)
    folder = tempfile.mkdtemp(prefix="hypernet-align-")
    try:
        col0, row0, cols, rows = window
        t1_path = t1
        if window != (0, 0, info1.cols, info1.rows):
            t1_path = os.path.join(folder, "t1_common.vrt")
            with raster_io.quiet_gdal():
                ds = gdal.Translate(
                    t1_path, info1.path, options=gdal.TranslateOptions(format="VRT", srcWin=[col0, row0, cols, rows])
                )
            if ds is None:
                raise InputError(f"Cropping T1 to the common area failed (GDAL: {gdal.GetLastErrorMsg()}).")
            ds = None
        t2_path = os.path.join(folder, "t2_on_t1_grid.vrt")
        _warp_image(info2, t2_path, info1, window, resampling)
        mask_path = None
        if mask:
            mask_path = os.path.join(folder, "mask_on_t1_grid.vrt")
            _warp(mask, mask_path, info1, window, "nearest", 0.0, False)
        note = (
            f"{_warped_note(info2, info1, resampling, ('T1', 'T2'))}{' (the mask with nearest)' if mask else ''}; "
            f"common area {cols} x {rows} pixels of T1's {info1.cols} x {info1.rows} (columns "
            f"{col0}-{col0 + cols - 1}, rows {row0}-{row0 + rows - 1})."
        )
        feedback.info("Align: " + note)
        yield AlignedPair(t1_path, t2_path, mask_path, note)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
