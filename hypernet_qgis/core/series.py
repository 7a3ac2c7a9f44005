"""A series of dates: change maps of consecutive pairs, the first date of change, the number of changes, polygons.

N co-registered images (on one grid) ordered by date (given, or read from the files' metadata, else as listed)
give N-1 change maps, one per consecutive pair (HyperNet trained per pair, a given model for every pair, or a
classic method), then ``first_change.tif`` (uint16: 1-based index of the first pair that changed, 0 never, 65535
nodata; the band metadata maps each index to its date pair), ``change_count.tif`` (uint16: pairs that changed)
and, on request, ``change_polygons.gpkg`` with every pair's regions and their date pair.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from osgeo import gdal, ogr

from .errors import InputError
from .io import raster_io
from .progress import Feedback, NullFeedback, SubFeedback, check_cancelled

NEVER, NODATA = 0, 65535
METHODS = ("hypernet", "cva", "sam", "irmad", "pcakmeans")
_METADATA_DATE_KEYS = ("ACQUISITION_DATE", "ACQUISITIONDATE", "DATE_ACQUIRED", "acquisition_time", "acquisition time",
                       "TIFFTAG_DATETIME")


@dataclass
class SeriesResult:
    """The files a series wrote and the changed pixels per pair."""

    images: list[str]
    dates: list[str]
    pair_maps: list[str]
    first_change: str
    change_count: str
    polygons: str | None
    changed_pixels: list[int] = field(default_factory=list)


def _parse_date(text: str) -> dt.date | None:
    match = re.search(r"(\d{4})[-:/]?(\d{2})[-:/]?(\d{2})", str(text))
    if not match:
        return None
    try:
        return dt.date(*(int(g) for g in match.groups()))
    except ValueError:
        return None


def metadata_date(path: str) -> dt.date | None:
    """The acquisition date a raster's metadata gives (ENVI 'acquisition time', ACQUISITION_DATE,
    TIFFTAG_DATETIME, ...), or None."""
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        ds = gdal.Open(raster_io.resolve_raster_path(path))
    finally:
        gdal.PopErrorHandler()
    if ds is None:
        return None
    try:
        for domain in ("", "ENVI", "IMAGERY"):
            md = ds.GetMetadata(domain) or {}
            lower = {k.lower(): v for k, v in md.items()}
            for key in _METADATA_DATE_KEYS:
                value = md.get(key) or lower.get(key.lower()) or lower.get(key.lower().replace(" ", "_"))
                if value and _parse_date(value):
                    return _parse_date(value)
        return None
    finally:
        ds = None


def order_images(images: Sequence[str], dates: Sequence[str] | None, feedback: Feedback) -> tuple[list[str],
                                                                                                   list[str]]:
    """The images oldest first with their date labels. InputError for fewer than two images, a date count that
    does not match, a date that is not a date, or two images of one date."""
    images = [str(p) for p in images]
    if len(images) < 2:
        raise InputError(f"A series needs at least two dates; got {len(images)} image{'s' if images else ''}. "
                         "Give two or more images of the same place.")
    if dates:
        if len(dates) != len(images):
            raise InputError(f"{len(dates)} dates were given for {len(images)} images; give one date per image, "
                             "in the same order (e.g. 2019-05-01,2020-05-01,2021-05-01).")
        parsed = []
        for text in dates:
            day = _parse_date(text)
            if day is None:
                raise InputError(f"{text!r} is not a date; write dates as YYYY-MM-DD.")
            parsed.append(day)
        source = "the dates given"
    else:
        parsed = [metadata_date(p) for p in images]
        if any(d is None for d in parsed):
            feedback.info("No dates given and not every image has an acquisition date in its metadata: the images "
                          "are taken in the order given.")
            return images, [f"date{i + 1}" for i in range(len(images))]
        source = "the acquisition dates in the metadata"
    seen: dict[dt.date, str] = {}
    for day, path in zip(parsed, images):
        if day in seen:
            raise InputError(f"{os.path.basename(seen[day])} and {os.path.basename(path)} have the same date "
                             f"{day.isoformat()}; each image of a series needs its own date.")
        seen[day] = path
    order = sorted(range(len(images)), key=lambda i: parsed[i])
    if order != list(range(len(images))):
        feedback.info(f"The images were not oldest first; ordered by {source}: "
                      + ", ".join(f"{os.path.basename(images[i])} ({parsed[i].isoformat()})" for i in order) + ".")
    return [images[i] for i in order], [parsed[i].isoformat() for i in order]


def series_files(images: Sequence[str], out_dir: str, *, dates: Sequence[str] | None = None,
                 method: str = "hypernet", polygons: bool = False, min_area: float = 0.0, connectivity: int = 8,
                 feedback: Feedback | None = None, **kwargs: Any) -> SeriesResult:
    """Detect change along a series (see the module docstring). ``kwargs`` go to each pair's detection
    (pipeline.detect_files for "hypernet": model, threshold, bands, config, ...; baseline_files otherwise)."""
    from . import pipeline
    from .io.polygons import check_polygon_options, polygonize_change

    feedback = feedback or NullFeedback()
    if method not in METHODS:
        raise InputError(f"Unknown method {method!r}; use one of {', '.join(METHODS)}.")
    check_polygon_options(None, min_area, connectivity)
    if not os.path.isdir(out_dir):
        raise InputError(f"The output folder {out_dir} does not exist. Create it or choose another folder.")
    images, labels = order_images(images, dates, feedback)
    infos = [raster_io.raster_info(p) for p in images]
    for k, info in enumerate(infos[1:], start=2):
        try:
            raster_io.check_same_grid(infos[0], info, ("image 1", f"image {k}"))
        except InputError as exc:
            raise InputError(f"A series needs all dates on one grid: {exc}") from None
    names = [f"change_{i + 1}_{labels[i]}_{labels[i + 1]}.tif" for i in range(len(images) - 1)]
    finals = [os.path.join(out_dir, n) for n in names] + [os.path.join(out_dir, n) for n in
                                                         ("first_change.tif", "change_count.tif")]
    poly_out = os.path.join(out_dir, "change_polygons.gpkg") if polygons else None
    raster_io.refuse_overwriting_inputs(finals + [poly_out], images + [kwargs.get("model")])
    work = tempfile.mkdtemp(prefix=".hypernet-series-", dir=out_dir)
    try:
        first = count = None
        changed: list[int] = []
        pair_gpkgs: list[str] = []
        n_pairs = len(images) - 1
        for i in range(n_pairs):
            check_cancelled(feedback)
            feedback.info(f"Pair {i + 1} of {n_pairs}: {os.path.basename(images[i])} ({labels[i]}) -> "
                          f"{os.path.basename(images[i + 1])} ({labels[i + 1]}).")
            sub = SubFeedback(feedback, i / n_pairs, (i + 1) / n_pairs)
            out = os.path.join(work, names[i])
            if method == "hypernet":
                res = pipeline.detect_files(images[i], images[i + 1], out, align=False, feedback=sub, **kwargs)
            else:
                res = pipeline.baseline_files(method, images[i], images[i + 1], out, align=False, feedback=sub,
                                              **kwargs)
            binary = res.binary
            if first is None:
                first = np.full(binary.shape, NEVER, np.uint16)
                count = np.zeros(binary.shape, np.uint16)
                invalid = np.zeros(binary.shape, bool)
            hit = binary == 1
            first[(first == NEVER) & hit] = i + 1
            count += hit.astype(np.uint16)
            invalid |= binary == 255
            changed.append(int(hit.sum()))
            if polygons:
                gpkg = os.path.join(work, f"pair_{i + 1}.gpkg")
                polygonize_change(out, gpkg, intensity=res.intensity, min_area=min_area, connectivity=connectivity,
                                  dates=(labels[i], labels[i + 1]))
                pair_gpkgs.append(gpkg)
        first[invalid] = NODATA
        count[invalid] = NODATA
        meta = {f"pair_{i + 1}": f"{labels[i]}/{labels[i + 1]}" for i in range(n_pairs)}
        raster_io.write_raster(os.path.join(work, "first_change.tif"), first, infos[0], nodata=NODATA,
                               dtype="uint16", metadata={**meta, "meaning": "1-based pair index of the first change; "
                                                                          "0 never changed"})
        raster_io.write_raster(os.path.join(work, "change_count.tif"), count, infos[0], nodata=NODATA,
                               dtype="uint16", metadata={**meta, "meaning": "number of pairs that changed"})
        if polygons:
            _merge_polygons(pair_gpkgs, os.path.join(work, "change_polygons.gpkg"))
        check_cancelled(feedback)
        for name in names + ["first_change.tif", "change_count.tif"] + (["change_polygons.gpkg"] if polygons
                                                                          else []):
            os.replace(os.path.join(work, name), os.path.join(out_dir, name))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ever = int(((count > 0) & (count != NODATA)).sum())
    feedback.info(f"Series of {len(images)} dates: {ever} pixels changed at least once; changed pixels per pair: "
                  + ", ".join(str(c) for c in changed) + ".")
    return SeriesResult(images, labels, [os.path.join(out_dir, n) for n in names],
                        os.path.join(out_dir, "first_change.tif"), os.path.join(out_dir, "change_count.tif"),
                        poly_out, changed)


def _merge_polygons(parts: Sequence[str], out: str) -> None:
    """One GeoPackage layer with the features of every pair's GeoPackage (fields and date pair kept)."""
    target = ogr.GetDriverByName("GPKG").CreateDataSource(out)
    layer = None
    for path in parts:
        src = ogr.Open(path)
        src_layer = src.GetLayer(0)
        if layer is None:
            layer = target.CreateLayer("change_polygons", src_layer.GetSpatialRef(), ogr.wkbPolygon,
                                       ["FID=fid"])
            defn = src_layer.GetLayerDefn()
            layer.CreateField(ogr.FieldDefn("pair", ogr.OFTInteger))
            for k in range(defn.GetFieldCount()):
                layer.CreateField(defn.GetFieldDefn(k))
        target.StartTransaction()
        out_defn = layer.GetLayerDefn()
        pair = parts.index(path) + 1
        for feature in src_layer:
            new = ogr.Feature(out_defn)
            new.SetFrom(feature)
            new.SetField("pair", pair)
            layer.CreateFeature(new)
        target.CommitTransaction()
        src = None
    target = None
