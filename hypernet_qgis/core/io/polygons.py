"""Change polygons: the connected changed regions of a change map as a GeoPackage, with areas and intensities.

A change map (uint8: 1 change, 0 no change, 255 nodata) is polygonised with GDAL (``gdal.Polygonize``, 4- or
8-connected): one feature per connected region of 1s. Each region's pixels are found again by rasterising the
polygons into a label raster (pixel centres, so exactly the region's pixels), which gives per-region pixel counts
and mean/maximum intensity by row blocks. Regions smaller than the minimum mapping unit (``min_area``, map units²)
are dropped from the polygons and, with ``sieve``, set to 0 in the change map, so raster and polygons agree.

Polygonize and the statistics work by rows; the scratch rasters are in memory while they fit a quarter of the
memory budget, else temporary GeoTIFFs beside the output. The GeoPackage (and a sieved change map) are written
under a temporary name and renamed when complete. Torch-free.
"""

from __future__ import annotations

import contextlib
import math
import os
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from osgeo import gdal, ogr, osr

from ..errors import InputError
from ..options import DEFAULT_MEMORY_BUDGET_MB
from ..progress import Feedback, NullFeedback, check_cancelled
from . import raster_io

CHANGE, NO_CHANGE, NODATA = 1, 0, 255
CONNECTIVITIES = (4, 8)
LAYER_FIELDS = ("region", "pixels", "area", "area_ha", "mean_intensity", "max_intensity", "date_t1", "date_t2")


@dataclass
class PolygonResult:
    """What polygonising a change map gave: counts and areas of the kept regions, and the valid area."""

    path: str
    regions: int  # connected changed regions found
    kept: int  # regions at least min_area large (the features written)
    dropped: int  # regions below min_area
    changed_pixels: int  # changed pixels in the kept regions
    valid_pixels: int  # pixels of the change map that are not nodata
    pixel_area: float  # map units² per pixel
    hectares_per_unit2: float | None  # None when the CRS has no linear unit (geographic or unknown)
    sieved_pixels: int = 0  # pixels set from 1 to 0 in the change map by sieve
    messages: list[str] = field(default_factory=list)

    @property
    def changed_area(self) -> float:
        """Changed area of the kept regions in map units²."""
        return self.changed_pixels * self.pixel_area

    @property
    def changed_hectares(self) -> float | None:
        return None if self.hectares_per_unit2 is None else self.changed_area * self.hectares_per_unit2

    @property
    def changed_share(self) -> float:
        """Changed share of the valid area (0..1)."""
        return self.changed_pixels / self.valid_pixels if self.valid_pixels else 0.0

    def summary(self) -> str:
        ha = self.changed_hectares
        area = f"{ha:.4g} ha" if ha is not None else f"{self.changed_area:.6g} map units²"
        return (
            f"{self.kept} change polygon{'s' if self.kept != 1 else ''} ({self.dropped} smaller region"
            f"{'s' if self.dropped != 1 else ''} dropped): {area}, {100.0 * self.changed_share:.2f}% of the "
            "valid area."
        )


# ------------------------------------------------------------------------------------------- areas


def pixel_area(geotransform: Sequence[float]) -> float:
    """Area of one pixel in map units² (rotated grids too)."""
    gt = geotransform
    return abs(gt[1] * gt[5] - gt[2] * gt[4])


def hectares_per_unit2(crs_wkt: str) -> float | None:
    """Hectares per map unit² of a projected CRS; None for a geographic or unknown CRS."""
    if not crs_wkt:
        return None
    srs = osr.SpatialReference()
    if srs.ImportFromWkt(crs_wkt) != 0 or not srs.IsProjected():
        return None
    metres = srs.GetLinearUnits()
    return metres * metres / 10000.0 if metres > 0 else None


def change_area(
    changed_pixels: int, valid_pixels: int, geotransform: Sequence[float], crs_wkt: str
) -> dict[str, float | None]:
    """Changed area in map units², hectares (None without a projected CRS) and as a share of the valid area."""
    area = changed_pixels * pixel_area(geotransform)
    factor = hectares_per_unit2(crs_wkt)
    return {
        "changed_area": area,
        "changed_hectares": None if factor is None else area * factor,
        "changed_share": changed_pixels / valid_pixels if valid_pixels else 0.0,
    }


def area_message(changed_pixels: int, valid_pixels: int, geotransform: Sequence[float], crs_wkt: str) -> str:
    """One log line: the changed area in hectares (or map units²) and its share of the valid area."""
    a = change_area(changed_pixels, valid_pixels, geotransform, crs_wkt)
    if a["changed_hectares"] is not None:
        text = f"{a['changed_hectares']:.4g} ha"
    else:
        text = f"{a['changed_area']:.6g} map units² (no projected CRS, so no hectares)"
    return f"Changed area: {text}, {100.0 * (a['changed_share'] or 0.0):.2f}% of the valid area."


# ------------------------------------------------------------------------------------------ helpers


@contextlib.contextmanager
def _scratch(like: gdal.Dataset, dtype: int, folder: str, in_memory: bool) -> Iterator[gdal.Dataset]:
    """A one-band scratch raster on ``like``'s grid: in memory, or a temporary GeoTIFF removed afterwards."""
    path = None
    if in_memory:
        ds = gdal.GetDriverByName("MEM").Create("", like.RasterXSize, like.RasterYSize, 1, dtype)
    else:
        path = os.path.join(folder, f".hypernet-scratch-{uuid.uuid4().hex[:8]}.tif")
        ds = gdal.GetDriverByName("GTiff").Create(
            path, like.RasterXSize, like.RasterYSize, 1, dtype, ["TILED=YES", "COMPRESS=LZW", "BIGTIFF=IF_SAFER"]
        )
        if ds is None:
            raise InputError(f"Could not create a scratch raster in {folder}. Check the free disk space.")
    ds.SetGeoTransform(like.GetGeoTransform())
    ds.SetProjection(like.GetProjection())
    try:
        yield ds
    finally:
        ds = None
        if path and os.path.exists(path):
            gdal.GetDriverByName("GTiff").Delete(path)


def _row_blocks(rows: int, cols: int, bytes_per_pixel: int, budget_bytes: int) -> Iterator[tuple[int, int]]:
    step = max(1, min(rows, budget_bytes // max(1, cols * bytes_per_pixel)))
    for r0 in range(0, rows, step):
        yield r0, min(step, rows - r0)


def _open_change(path: str) -> gdal.Dataset:
    with raster_io.quiet_gdal():
        ds = gdal.Open(os.fspath(path))
    if ds is None:
        raise InputError(
            f"The change map {path} could not be opened. Give a change map written by detect or "
            "baseline (1 change, 0 no change, 255 nodata)."
        )
    if ds.RasterCount != 1:
        raise InputError(
            f"The change map {os.path.basename(path)} has {ds.RasterCount} bands; a change map has one "
            "(1 change, 0 no change, 255 nodata)."
        )
    return ds


def _intensity_block(intensity, r0: int, n: int) -> np.ndarray | None:
    if intensity is None:
        return None
    if isinstance(intensity, np.ndarray):
        return np.asarray(intensity[r0 : r0 + n], dtype=np.float64)
    band = intensity.GetRasterBand(1)
    block = band.ReadAsArray(0, r0, intensity.RasterXSize, n).astype(np.float64)
    nd = band.GetNoDataValue()
    if nd is not None:
        block[block == nd] = np.nan
    return block


def _open_intensity(intensity, rows: int, cols: int):
    if intensity is None or isinstance(intensity, np.ndarray):
        if intensity is not None and intensity.shape != (rows, cols):
            raise InputError(
                f"The intensity is {intensity.shape[1]}x{intensity.shape[0]} pixels but the change "
                f"map is {cols}x{rows}; give the intensity of that change map."
            )
        return intensity
    with raster_io.quiet_gdal():
        ds = gdal.Open(os.fspath(intensity))
    if ds is None:
        raise InputError(f"The intensity {intensity} could not be opened as a raster.")
    if (ds.RasterYSize, ds.RasterXSize) != (rows, cols):
        raise InputError(
            f"The intensity {os.path.basename(str(intensity))} is {ds.RasterXSize}x{ds.RasterYSize} "
            f"pixels but the change map is {cols}x{rows}; give the intensity of that change map."
        )
    return ds


# --------------------------------------------------------------------------------------------- main


def check_polygon_options(path: str | None, min_area: float, connectivity: int) -> None:
    """InputError for a polygons path that is not a GeoPackage, a negative MIN_AREA or a connectivity not 4/8."""
    if path is not None and not str(path).lower().endswith(".gpkg"):
        raise InputError(f"The change polygons {path} must be a GeoPackage (.gpkg). Change the file name's extension.")
    if not (min_area >= 0.0) or math.isinf(min_area):
        raise InputError(f"The minimum area {min_area!r} must be a number of map units² of 0 or more.")
    if connectivity not in CONNECTIVITIES:
        raise InputError(f"The connectivity must be 4 (edges) or 8 (edges and corners), not {connectivity!r}.")


def polygonize_change(
    change_path: str,
    out_path: str,
    *,
    intensity: str | np.ndarray | None = None,
    min_area: float = 0.0,
    connectivity: int = 8,
    sieve: bool = False,
    dates: tuple[str, str] | None = None,
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
    feedback: Feedback | None = None,
) -> PolygonResult:
    """Write the change polygons of ``change_path`` to the GeoPackage ``out_path``; see the module docstring.

    ``intensity``: the change intensity (file or array on the same grid) for mean/max per region.
    ``dates``: (T1 date, T2 date) written into every feature. ``sieve``: also set the dropped regions to 0 in
    the change map (rewritten atomically).
    """
    feedback = feedback or NullFeedback()
    check_polygon_options(out_path, min_area, connectivity)
    out_path = os.path.abspath(os.fspath(out_path))
    folder = os.path.dirname(out_path)
    if not os.path.isdir(folder):
        raise InputError(
            f"The folder {folder} of the change polygons does not exist. Create it or choose another output path."
        )
    if os.path.isdir(out_path):
        raise InputError(f"The change polygons {out_path} is a folder. Give a file name such as polygons.gpkg.")
    src = _open_change(change_path)
    rows, cols = src.RasterYSize, src.RasterXSize
    gt, wkt = src.GetGeoTransform(), src.GetProjection() or ""
    unit_area = pixel_area(gt)
    ha_factor = hectares_per_unit2(wkt)
    messages: list[str] = []
    if not wkt:
        messages.append("The change map has no CRS: the polygons have none either, and no hectares are given.")
    elif ha_factor is None:
        messages.append(
            "The change map's CRS is geographic: areas are in degrees² and no hectares are given; "
            "reproject the images to a projected CRS for areas in hectares."
        )
    inten = _open_intensity(intensity, rows, cols)
    budget = max(16, int(memory_budget_mb)) * 1024 * 1024
    in_memory = rows * cols * 4 <= budget // 4
    part = os.path.join(folder, f".{os.path.basename(out_path)}.{uuid.uuid4().hex[:8]}.part.gpkg")
    scratch_path = os.path.join(folder, f".hypernet-regions-{uuid.uuid4().hex[:8]}.gpkg")
    try:
        with (
            _scratch(src, gdal.GDT_Byte, folder, in_memory) as ones,
            _scratch(src, gdal.GDT_Int32, folder, in_memory) as labels,
        ):
            # 1. the 1s of the change map (Polygonize's source and mask), and the valid pixel count
            valid_pixels = 0
            change_band, ones_band = src.GetRasterBand(1), ones.GetRasterBand(1)
            for r0, n in _row_blocks(rows, cols, 8, budget // 8):
                block = change_band.ReadAsArray(0, r0, cols, n)
                valid_pixels += int(np.count_nonzero(block != NODATA))
                ones_band.WriteArray((block == CHANGE).astype(np.uint8), 0, r0)
            check_cancelled(feedback)
            feedback.set_progress(0.1)
            # 2. polygonise into a scratch GeoPackage (no spatial index: written once, read once)
            srs = None
            if wkt:
                srs = osr.SpatialReference()
                srs.ImportFromWkt(wkt)
                srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
            scratch = _create_gpkg(scratch_path, out_path)
            layer = scratch.CreateLayer("regions", srs, ogr.wkbPolygon, ["FID=fid", "SPATIAL_INDEX=NO"])
            layer.CreateField(ogr.FieldDefn("region", ogr.OFTInteger))
            scratch.StartTransaction()
            options = ["8CONNECTED=8"] if connectivity == 8 else []
            if gdal.Polygonize(ones_band, ones_band, layer, 0, options) != 0:
                raise InputError(
                    f"Polygonising {os.path.basename(change_path)} failed (GDAL: "
                    f"{gdal.GetLastErrorMsg()}). Check the free disk space."
                )
            scratch.CommitTransaction()
            scratch.ExecuteSQL("UPDATE regions SET region = fid")
            check_cancelled(feedback)
            feedback.set_progress(0.5)
            max_fid = _max_fid(scratch, "regions")
            # 3. the label raster: each region's pixels carry its fid
            labels.GetRasterBand(1).Fill(0)
            with raster_io.quiet_gdal():  # (a map without CRS: GDAL warns that it assumes matching coordinate systems)
                failed = gdal.RasterizeLayer(labels, [1], layer, options=["ATTRIBUTE=region"]) != 0
            if failed:
                raise InputError(f"Rasterising the change polygons failed (GDAL: {gdal.GetLastErrorMsg()}).")
            check_cancelled(feedback)
            feedback.set_progress(0.65)
            # 4. per-region statistics by row blocks
            counts = np.zeros(max_fid + 1, np.int64)
            sums = np.zeros(max_fid + 1, np.float64) if inten is not None else None
            maxs = np.full(max_fid + 1, -np.inf) if inten is not None else None
            label_band = labels.GetRasterBand(1)
            for r0, n in _row_blocks(rows, cols, 24, budget // 8):
                lab = label_band.ReadAsArray(0, r0, cols, n).ravel()
                sel = lab > 0
                ids = lab[sel]
                counts += np.bincount(ids, minlength=max_fid + 1)
                values = _intensity_block(inten, r0, n)
                if values is not None and sums is not None and maxs is not None:
                    v = values.ravel()[sel]
                    ok = np.isfinite(v)
                    sums += np.bincount(ids[ok], weights=v[ok], minlength=max_fid + 1)
                    np.maximum.at(maxs, ids[ok], v[ok])
            check_cancelled(feedback)
            feedback.set_progress(0.8)
            # 5. drop the small regions, fill in the fields
            keep = counts * unit_area >= min_area
            keep[0] = False
            present = counts > 0
            dropped_ids = present & ~keep
            name = os.path.splitext(os.path.basename(out_path))[0] or "change_polygons"
            gpkg = _create_gpkg(part, out_path)
            _write_kept(
                gpkg, name, srs, layer, counts, sums, maxs, keep, unit_area, ha_factor, inten is not None, dates
            )
            layer = None
            scratch = None
            gpkg = None
            # 6. sieve: the dropped regions become 0 in the change map
            sieved = 0
            if sieve and dropped_ids.any():
                sieved = _sieve(change_path, label_band, dropped_ids, rows, cols, budget)
            label_band = None
        os.replace(part, out_path)
    finally:
        for leftover in [f + suffix for f in (part, scratch_path) for suffix in ("", "-wal", "-shm", "-journal")]:
            if os.path.exists(leftover):
                with contextlib.suppress(OSError):
                    os.remove(leftover)
    src = None
    result = PolygonResult(
        out_path,
        int(present[1:].sum()),
        int(keep.sum()),
        int(dropped_ids.sum()),
        int(counts[keep].sum()),
        valid_pixels,
        unit_area,
        ha_factor,
        sieved,
        messages,
    )
    for message in messages:
        feedback.info(message)
    feedback.info(
        result.summary() + (f" {sieved} pixels of the dropped regions set to 0 in the change map." if sieve else "")
    )
    feedback.set_progress(1.0)
    return result


def _max_fid(ds, name: str) -> int:
    sql = ds.ExecuteSQL(f'SELECT MAX(fid) FROM "{name}"')  # nosec B608 (our own layer name, not user input)
    try:
        feature = sql.GetNextFeature()
        value = feature.GetField(0) if feature is not None else None
    finally:
        ds.ReleaseResultSet(sql)
    return int(value or 0)


def _create_gpkg(path: str, out_path: str):
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(path)
    if ds is None:
        raise InputError(
            f"Could not create {out_path} (GDAL: {gdal.GetLastErrorMsg()}). Check the folder and the free disk space."
        )
    return ds


def _write_kept(
    gpkg, name, srs, regions, counts, sums, maxs, keep, unit_area, ha_factor, with_intensity, dates
) -> None:
    """Copy the kept regions from the scratch layer into the output layer with their statistics; the spatial
    index is built once at the end (faster than updating it per feature)."""
    layer = gpkg.CreateLayer(name, srs, ogr.wkbPolygon, ["FID=fid", "SPATIAL_INDEX=NO"])
    fields = [("region", ogr.OFTInteger), ("pixels", ogr.OFTInteger64), ("area", ogr.OFTReal), ("area_ha", ogr.OFTReal)]
    if with_intensity:
        fields += [("mean_intensity", ogr.OFTReal), ("max_intensity", ogr.OFTReal)]
    if dates:
        fields += [("date_t1", ogr.OFTString), ("date_t2", ogr.OFTString)]
    for field_name, kind in fields:
        layer.CreateField(ogr.FieldDefn(field_name, kind))
    defn = layer.GetLayerDefn()
    index = {field_name: defn.GetFieldIndex(field_name) for field_name, _ in fields}
    gpkg.StartTransaction()
    regions.ResetReading()
    for source in regions:
        fid = source.GetFID()
        if fid >= len(keep) or not keep[fid]:
            continue
        n = int(counts[fid])
        feature = ogr.Feature(defn)
        feature.SetGeometryDirectly(source.GetGeometryRef().Clone())
        feature.SetField(index["region"], int(fid))
        feature.SetField(index["pixels"], n)
        feature.SetField(index["area"], n * unit_area)
        if ha_factor is not None:
            feature.SetField(index["area_ha"], n * unit_area * ha_factor)
        if with_intensity and n:
            feature.SetField(index["mean_intensity"], float(sums[fid] / n))
            if np.isfinite(maxs[fid]):
                feature.SetField(index["max_intensity"], float(maxs[fid]))
        if dates:
            feature.SetField(index["date_t1"], str(dates[0]))
            feature.SetField(index["date_t2"], str(dates[1]))
        layer.CreateFeature(feature)
    gpkg.CommitTransaction()
    quoted = name.replace("'", "''")
    gpkg.ExecuteSQL(f"SELECT CreateSpatialIndex('{quoted}', 'geom')")


def _sieve(change_path: str, label_band, dropped: np.ndarray, rows: int, cols: int, budget: int) -> int:
    """Rewrite the change map with the dropped regions set to 0 (a copy, renamed over it when complete)."""
    folder = os.path.dirname(os.path.abspath(change_path))
    tmp = os.path.join(folder, f".{os.path.basename(change_path)}.{uuid.uuid4().hex[:8]}.part.tif")
    src = gdal.Open(os.fspath(change_path))
    changed = 0
    try:
        out = gdal.GetDriverByName("GTiff").CreateCopy(
            tmp, src, 0, ["TILED=YES", "COMPRESS=DEFLATE", "PREDICTOR=2", "BIGTIFF=IF_SAFER"]
        )
        if out is None:
            raise InputError(f"Could not rewrite the change map {change_path} (GDAL: {gdal.GetLastErrorMsg()}).")
        band = out.GetRasterBand(1)
        for r0, n in _row_blocks(rows, cols, 8, budget // 8):
            block = band.ReadAsArray(0, r0, cols, n)
            hit = dropped[label_band.ReadAsArray(0, r0, cols, n)] & (block == CHANGE)
            if hit.any():
                changed += int(hit.sum())
                block[hit] = NO_CHANGE
                band.WriteArray(block, 0, r0)
        band = None
        out.FlushCache()
        out = None
        src = None
        os.replace(tmp, change_path)
        stale = change_path + ".aux.xml"
        if os.path.exists(stale):
            with contextlib.suppress(OSError):
                os.remove(stale)
    finally:
        src = None
        if os.path.exists(tmp):
            with contextlib.suppress(OSError):
                os.remove(tmp)
    return changed


# ------------------------------------------------------------------------------ after a detection


def finish_detection(
    result,
    *,
    polygons_out: str | None = None,
    min_area: float = 0.0,
    connectivity: int = 8,
    sieve: bool = False,
    dates: tuple[str, str] | None = None,
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
    feedback: Feedback | None = None,
) -> PolygonResult | None:
    """After detect_files/baseline_files: the change polygons (when asked for) and the changed area.

    Updates ``result`` (a core.pipeline.DetectResult): with ``sieve`` its changed pixel count and binary map;
    always ``extra["area"]`` (hectares, share of the valid area) and, with polygons, ``extra["polygons"]``.
    Logs the changed area in hectares and as a share of the valid area.
    """
    feedback = feedback or NullFeedback()
    poly = None
    if polygons_out:
        intensity = (
            result.intensity
            if isinstance(getattr(result, "intensity", None), np.ndarray)
            else getattr(result, "intensity_path", None)
        )
        poly = polygonize_change(
            result.change_path,
            polygons_out,
            intensity=intensity,
            min_area=min_area,
            connectivity=connectivity,
            sieve=sieve,
            dates=dates,
            memory_budget_mb=memory_budget_mb,
            feedback=feedback,
        )
        if poly.sieved_pixels:
            result.changed_pixels = int(result.changed_pixels) - poly.sieved_pixels
            if isinstance(getattr(result, "binary", None), np.ndarray):
                ds = gdal.Open(result.change_path)
                result.binary = ds.GetRasterBand(1).ReadAsArray()
                ds = None
        result.extra["polygons"] = {
            "path": poly.path,
            "features": poly.kept,
            "dropped_regions": poly.dropped,
            "min_area": min_area,
            "connectivity": connectivity,
            "sieved_pixels": poly.sieved_pixels,
            "changed_pixels_in_polygons": poly.changed_pixels,
        }
    ds = gdal.Open(result.change_path)
    gt, wkt = ds.GetGeoTransform(), ds.GetProjection() or ""
    ds = None
    area = change_area(int(result.changed_pixels), int(result.valid_pixels), gt, wkt)
    result.extra["area"] = area
    feedback.info(area_message(int(result.changed_pixels), int(result.valid_pixels), gt, wkt))
    return poly


def parse_dates(text: str | None) -> tuple[str, str] | None:
    """'2019-05-01,2020-05-01' -> the two dates (T1, T2); empty -> None. InputError otherwise."""
    if text is None or not str(text).strip():
        return None
    parts = [p.strip() for p in str(text).replace(";", ",").split(",")]
    if len(parts) != 2 or not all(parts):
        raise InputError(
            f"The date pair {text!r} must be two dates separated by a comma, T1's first, e.g. 2019-05-01,2020-05-01."
        )
    return parts[0], parts[1]
