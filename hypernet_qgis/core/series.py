"""A series of dates: change maps of consecutive pairs, the first date of change, the number of changes, polygons.

N images ordered by date (given, or read from the files' metadata, else as listed) give N-1 change maps, one per
consecutive pair: HyperNet with one model trained on all consecutive pairs (``training="shared"``, the default,
saved as ``series_model.hypernet``) or a model trained on each pair (``"per-pair"``), a given model for every
pair, or a classic method. Dates not on the first date's grid are warped onto it (``align``, core.io.align:
nodata where a date does not reach), or refused with ``align=False``. Then ``first_change.tif`` (uint16: 1-based
index of the first pair that changed, 0 never, 65535 nodata; the band metadata maps each index to its date pair),
``change_count.tif`` (uint16: pairs that changed) and, on request, ``change_polygons.gpkg`` with every pair's
regions and their date pair. The bands are chosen once for the whole series (core.io.bands: those any date marks
bad are left out of every pair).
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
from .io import align as grids
from .io import raster_io
from .options import DEFAULT_SERIES_TRAINING, SERIES_TRAININGS
from .progress import Feedback, NullFeedback, SubFeedback, check_cancelled

NEVER, NODATA = 0, 65535
METHODS = ("hypernet", "cva", "sam", "irmad", "pcakmeans")
#: The shared model's file in the output folder.
MODEL_NAME = "series_model.hypernet"
_METADATA_DATE_KEYS = (
    "ACQUISITION_DATE",
    "ACQUISITIONDATE",
    "DATE_ACQUIRED",
    "acquisition_time",
    "acquisition time",
    "TIFFTAG_DATETIME",
)


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
    model: str | None = None  # the shared model (training="shared"), else None
    training: str | None = None  # "shared", "per-pair", "model file" (HyperNet) or None (classic)
    aligned: list[str] = field(default_factory=list)  # what align did, one note per warped date


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


def order_images(images: Sequence[str], dates: Sequence[str] | None, feedback: Feedback) -> tuple[list[str], list[str]]:
    """The images oldest first with their date labels. InputError for fewer than two images, a date count that
    does not match, a date that is not a date, or two images of one date."""
    images = [str(p) for p in images]
    if len(images) < 2:
        raise InputError(
            f"A series needs at least two dates; got {len(images)} image{'s' if images else ''}. "
            "Give two or more images of the same place."
        )
    if dates:
        if len(dates) != len(images):
            raise InputError(
                f"{len(dates)} dates were given for {len(images)} images; give one date per image, "
                "in the same order (e.g. 2019-05-01,2020-05-01,2021-05-01)."
            )
        parsed: list[dt.date] = []
        for text in dates:
            day = _parse_date(text)
            if day is None:
                raise InputError(f"{text!r} is not a date; write dates as YYYY-MM-DD.")
            parsed.append(day)
        source = "the dates given"
    else:
        found = [metadata_date(p) for p in images]
        parsed = [d for d in found if d is not None]
        if len(parsed) < len(found):
            feedback.info(
                "No dates given and not every image has an acquisition date in its metadata: the images "
                "are taken in the order given."
            )
            return images, [f"date{i + 1}" for i in range(len(images))]
        source = "the acquisition dates in the metadata"
    seen: dict[dt.date, str] = {}
    for day, path in zip(parsed, images):
        if day in seen:
            raise InputError(
                f"{os.path.basename(seen[day])} and {os.path.basename(path)} have the same date "
                f"{day.isoformat()}; each image of a series needs its own date."
            )
        seen[day] = path
    order = sorted(range(len(images)), key=lambda i: parsed[i])
    if order != list(range(len(images))):
        feedback.info(
            f"The images were not oldest first; ordered by {source}: "
            + ", ".join(f"{os.path.basename(images[i])} ({parsed[i].isoformat()})" for i in order)
            + "."
        )
    return [images[i] for i in order], [parsed[i].isoformat() for i in order]


def check_series_grid(infos: Sequence[raster_io.RasterInfo], align: bool) -> list[int]:
    """The 0-based indices of the dates not on the first date's grid, to be warped onto it. InputError (one line)
    when ``align`` is off and a date differs, or when a date cannot be warped (other bands, no CRS, no overlap)."""
    off = []
    for k, info in enumerate(infos[1:], start=1):
        if grids.same_grid(infos[0], info):
            continue
        what = ("date 1", f"date {k + 1}")
        if not align:
            try:
                raster_io.check_same_grid(infos[0], info, what)
            except InputError as exc:
                raise InputError(
                    f"A series needs all dates on one grid (ALIGN is off): {exc} Or turn ALIGN on "
                    "(--align) to warp every date onto the first date's grid."
                ) from None
        try:
            grids.check_alignable(infos[0], info, what)
        except InputError as exc:
            raise InputError(f"A series needs all dates on one grid: {exc}") from None
        off.append(k)
    return off


def _series_bands(
    images: Sequence[str], bands: Sequence[int] | None, drop_bad: bool, drop_water: bool, feedback: Feedback
) -> list[int] | None:
    """One band list for every pair: ``bands`` without the bands any date marks bad (and the water bands)."""
    from .io.bands import choose_bands

    chosen = list(bands) if bands else None
    for i in range(len(images) - 1):
        chosen = choose_bands(
            images[i], images[i + 1], chosen, drop_bad=drop_bad, drop_water=drop_water and i == 0, feedback=feedback
        )
    return chosen


def series_files(
    images: Sequence[str],
    out_dir: str,
    *,
    dates: Sequence[str] | None = None,
    method: str = "hypernet",
    training: str = DEFAULT_SERIES_TRAINING,
    align: bool = True,
    resampling: str = grids.DEFAULT_RESAMPLING,
    polygons: bool = False,
    min_area: float = 0.0,
    connectivity: int = 8,
    feedback: Feedback | None = None,
    **kwargs: Any,
) -> SeriesResult:
    """Detect change along a series (see the module docstring). ``kwargs`` go to each pair's detection
    (pipeline.detect_files for "hypernet": model, threshold, bands, unchanged_mask, config, ...; baseline_files
    otherwise); ``bands``, ``drop_bad_bands`` and ``drop_water`` are applied once for the whole series."""
    from . import pipeline
    from .io.polygons import check_polygon_options, polygonize_change

    feedback = feedback or NullFeedback()
    if method not in METHODS:
        raise InputError(f"Unknown method {method!r}; use one of {', '.join(METHODS)}.")
    if training not in SERIES_TRAININGS:
        raise InputError(f"Unknown training {training!r}; use one of {', '.join(SERIES_TRAININGS)}.")
    if resampling not in grids.RESAMPLINGS:
        raise InputError(f"Unknown resampling {resampling!r}; use one of {', '.join(grids.RESAMPLINGS)}.")
    check_polygon_options(None, min_area, connectivity)
    if not os.path.isdir(out_dir):
        raise InputError(f"The output folder {out_dir} does not exist. Create it or choose another folder.")
    images, labels = order_images(images, dates, feedback)
    infos = [raster_io.raster_info(p) for p in images]
    off_grid = check_series_grid(infos, align)
    model = kwargs.get("model")
    shared = method == "hypernet" and not model and training == "shared"
    names = [f"change_{i + 1}_{labels[i]}_{labels[i + 1]}.tif" for i in range(len(images) - 1)]
    finals = [os.path.join(out_dir, n) for n in names] + [
        os.path.join(out_dir, n) for n in ("first_change.tif", "change_count.tif")
    ]
    poly_out = os.path.join(out_dir, "change_polygons.gpkg") if polygons else None
    model_out = os.path.join(out_dir, MODEL_NAME) if shared else None
    raster_io.refuse_overwriting_inputs(finals + [poly_out, model_out], images + [model, kwargs.get("unchanged_mask")])
    drop_bad, drop_water = kwargs.pop("drop_bad_bands", True), kwargs.pop("drop_water", False)
    if not model:  # (a model file brings its own bands: pipeline matches them by wavelength)
        kwargs["bands"] = _series_bands(images, kwargs.get("bands"), drop_bad, drop_water, feedback)
    work = tempfile.mkdtemp(prefix=".hypernet-series-", dir=out_dir)
    try:
        paths, notes = list(images), []
        for k in off_grid:
            paths[k] = os.path.join(work, f"date_{k + 1}_on_first_grid.vrt")
            notes.append(
                grids.warp_onto_grid(
                    infos[k],
                    infos[0],
                    paths[k],
                    resampling=resampling,
                    what=("date 1", f"date {k + 1}"),
                    feedback=feedback,
                )
            )
        n_pairs = len(images) - 1
        done = 0.0
        if shared:
            feedback.info(
                f"Training one model on all {n_pairs} consecutive pairs (training: shared); every pair's "
                "change map comes from it."
            )
            done = 0.5
            pipeline.train_pairs_files(
                list(zip(paths[:-1], paths[1:])),
                os.path.join(work, MODEL_NAME),
                bands=kwargs.get("bands"),
                unchanged_mask=kwargs.pop("unchanged_mask", None),
                config=kwargs.get("config"),
                feedback=SubFeedback(feedback, 0.0, done),
                metadata={"series": {"dates": labels, "images": [str(p) for p in images], "training": "shared"}},
            )
            kwargs.update(model=os.path.join(work, MODEL_NAME), bands=None)  # its bands, by wavelength
        elif method == "hypernet" and model:
            feedback.info("Every pair uses the given model file.")
        first: np.ndarray | None = None
        count: np.ndarray | None = None
        invalid: np.ndarray | None = None
        changed: list[int] = []
        pair_gpkgs: list[str] = []
        for i in range(n_pairs):
            check_cancelled(feedback)
            feedback.info(
                f"Pair {i + 1} of {n_pairs}: {os.path.basename(images[i])} ({labels[i]}) -> "
                f"{os.path.basename(images[i + 1])} ({labels[i + 1]})."
            )
            sub = SubFeedback(feedback, done + (1 - done) * i / n_pairs, done + (1 - done) * (i + 1) / n_pairs)
            out = os.path.join(work, names[i])
            common: dict[str, Any] = {"align": False, "drop_bad_bands": False, "drop_water": False, "feedback": sub}
            if method == "hypernet":
                res = pipeline.detect_files(paths[i], paths[i + 1], out, **common, **kwargs)
            else:
                res = pipeline.baseline_files(method, paths[i], paths[i + 1], out, **common, **kwargs)
            binary = res.binary
            if first is None or count is None or invalid is None:
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
                polygonize_change(
                    out,
                    gpkg,
                    intensity=res.intensity,
                    min_area=min_area,
                    connectivity=connectivity,
                    dates=(labels[i], labels[i + 1]),
                )
                pair_gpkgs.append(gpkg)
        if first is None or count is None or invalid is None:
            raise InputError("A series needs at least two dates.")
        first[invalid] = NODATA
        count[invalid] = NODATA
        meta = {f"pair_{i + 1}": f"{labels[i]}/{labels[i + 1]}" for i in range(n_pairs)}
        raster_io.write_raster(
            os.path.join(work, "first_change.tif"),
            first,
            infos[0],
            nodata=NODATA,
            dtype="uint16",
            metadata={**meta, "meaning": "1-based pair index of the first change; 0 never changed"},
        )
        raster_io.write_raster(
            os.path.join(work, "change_count.tif"),
            count,
            infos[0],
            nodata=NODATA,
            dtype="uint16",
            metadata={**meta, "meaning": "number of pairs that changed"},
        )
        if polygons:
            _merge_polygons(pair_gpkgs, os.path.join(work, "change_polygons.gpkg"))
        check_cancelled(feedback)
        for name in (
            names
            + ["first_change.tif", "change_count.tif"]
            + (["change_polygons.gpkg"] if polygons else [])
            + ([MODEL_NAME] if shared else [])
        ):
            os.replace(os.path.join(work, name), os.path.join(out_dir, name))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ever = int(((count > 0) & (count != NODATA)).sum())
    feedback.info(
        f"Series of {len(images)} dates: {ever} pixels changed at least once; changed pixels per pair: "
        + ", ".join(str(c) for c in changed)
        + "."
    )
    how = None if method != "hypernet" else "model file" if model else training
    return SeriesResult(
        images,
        labels,
        [os.path.join(out_dir, n) for n in names],
        os.path.join(out_dir, "first_change.tif"),
        os.path.join(out_dir, "change_count.tif"),
        poly_out,
        changed,
        model_out,
        how,
        notes,
    )


def _merge_polygons(parts: Sequence[str], out: str) -> None:
    """One GeoPackage layer with the features of every pair's GeoPackage (fields and date pair kept)."""
    target = ogr.GetDriverByName("GPKG").CreateDataSource(out)
    layer = None
    for path in parts:
        src = ogr.Open(path)
        src_layer = src.GetLayer(0)
        if layer is None:
            layer = target.CreateLayer("change_polygons", src_layer.GetSpatialRef(), ogr.wkbPolygon, ["FID=fid"])
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
