#!/usr/bin/env python3
"""Build resources/sample/ (the small REAL pairs the demo and the tests use) from ../shared/data.

    .venv/bin/python tools/make_sample_data.py [--shared ../shared] [--out resources/sample]

Writes
  salinasA_pair/  t1.tif t2.tif gt.tif params.json   (bench pair, 204 bands x 83 x 86, int16, DEFLATE)
  taizhou_crop/   t1.tif t2.tif reference.tif        (Landsat-7 ETM+ 2000/2003, 6 bands, 200 x 200 crop, uint8)
and checks every output against its source (values, grid, wavelengths). Deterministic: running it again
gives the same pixels. PROVENANCE.md and the licence notes beside the data are written by hand, not here.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from osgeo import gdal, osr

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hypernet_qgis.core.classic.metrics import reference_from_masks  # noqa: E402
from hypernet_qgis.core.io.raster_io import raster_info, read_mask, read_raster  # noqa: E402

CROP = 200  # Taizhou crop size (pixels)
# Small images: one pixel-interleaved strip, DEFLATE at libdeflate's top level with horizontal differencing.
# This was the smallest standard (DEFLATE) layout for the noisy 204-band cube: 1.73 MB per date against
# 2.01 MB tiled band-interleaved at level 9 (ZSTD/LERC saved under 3% more and are less widely readable).
OPTIONS = ["COMPRESS=DEFLATE", "ZLEVEL=12", "PREDICTOR=2", "INTERLEAVE=PIXEL"]
ETM_BANDS = [
    "ETM+ band 1 (blue)",
    "ETM+ band 2 (green)",
    "ETM+ band 3 (red)",
    "ETM+ band 4 (NIR)",
    "ETM+ band 5 (SWIR 1)",
    "ETM+ band 7 (SWIR 2)",
]


def write_tif(
    path: Path,
    array: np.ndarray,
    gt,
    wkt: str,
    dtype: int,
    *,
    nodata=None,
    band_names=None,
    wavelengths_nm=None,
    metadata=None,
    wavelength_note: str | None = None,
) -> None:
    """Compact GeoTIFF (see OPTIONS) with per-band wavelength metadata."""
    array = array if array.ndim == 3 else array[None]
    ds = gdal.GetDriverByName("GTiff").Create(
        str(path), array.shape[2], array.shape[1], array.shape[0], dtype, OPTIONS + [f"BLOCKYSIZE={array.shape[1]}"]
    )
    ds.SetGeoTransform(gt)
    ds.SetProjection(wkt)
    if metadata:
        ds.SetMetadata({k: str(v) for k, v in metadata.items()})
    for i in range(array.shape[0]):
        band = ds.GetRasterBand(i + 1)
        if nodata is not None:
            band.SetNoDataValue(nodata)
        if band_names:
            band.SetDescription(band_names[i])
        if wavelengths_nm is not None:
            md = {"wavelength": f"{wavelengths_nm[i]:.4f}", "wavelength_units": "nm"}
            if wavelength_note:
                md["wavelength_note"] = wavelength_note
            band.SetMetadata(md)
            band.SetMetadataItem("CENTRAL_WAVELENGTH_UM", f"{wavelengths_nm[i] / 1000.0:.6f}", "IMAGERY")
        band.WriteArray(array[i])
    ds = None


def make_salinas(shared: Path, out: Path) -> None:
    src = shared / "data" / "bench" / "salinasA_pair"
    out.mkdir(parents=True, exist_ok=True)
    for name in ("t1", "t2"):
        ds = gdal.Open(str(src / f"{name}.tif"))
        x = ds.ReadAsArray().astype(np.float64)
        info = raster_info(src / f"{name}.tif")
        lo, hi = np.iinfo(np.int16).min, np.iinfo(np.int16).max
        rounded = np.rint(x)
        if rounded.min() < lo or rounded.max() > hi:
            raise SystemExit(f"{name}: values outside int16")
        md = dict(ds.GetMetadata())
        md.pop("wavelength", None)  # the per-band items carry it
        md["units"] = "source cube units (scaled at-sensor radiance integers); bench float32 rounded to int16"
        md["sample_of"] = "shared/data/bench/salinasA_pair (see resources/sample/PROVENANCE.md)"
        names = [ds.GetRasterBand(i + 1).GetDescription() for i in range(ds.RasterCount)]
        write_tif(
            out / f"{name}.tif",
            rounded.astype(np.int16),
            ds.GetGeoTransform(),
            ds.GetProjection(),
            gdal.GDT_Int16,
            band_names=names,
            wavelengths_nm=info.wavelengths_nm,
            metadata=md,
            wavelength_note="approximate (linear 400-2500 nm), not calibrated",
        )
        ds = None
        back = gdal.Open(str(out / f"{name}.tif")).ReadAsArray()
        assert np.abs(back - x).max() <= 0.5, name
    gt_src = gdal.Open(str(src / "gt.tif"))
    gt = gt_src.ReadAsArray().astype(np.uint8)
    write_tif(
        out / "gt.tif",
        gt,
        gt_src.GetGeoTransform(),
        gt_src.GetProjection(),
        gdal.GDT_Byte,
        nodata=255,
        band_names=["change: 1 changed, 0 unchanged, 255 unknown"],
        metadata={
            "encoding": "1 changed, 0 unchanged, 255 unknown (not used in this pair)",
            "georeference": "FAKE (EPSG:32610, 20 m pixels), as in the bench pair",
        },
    )
    gt_src = None
    shutil.copyfile(src / "params.json", out / "params.json")


def best_crop(ref: np.ndarray, size: int, step: int = 10) -> tuple[int, int]:
    """Top-left corner of the size x size window with the most labelled changed pixels (ties: more unchanged)."""
    changed = np.pad((ref == 1).astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    unchanged = np.pad((ref == 0).astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))

    def box(s, r, c):
        return s[r + size, c + size] - s[r, c + size] - s[r + size, c] + s[r, c]

    best = None
    for r in range(0, ref.shape[0] - size + 1, step):
        for c in range(0, ref.shape[1] - size + 1, step):
            key = (box(changed, r, c), box(unchanged, r, c))
            if best is None or key > best[0]:
                best = (key, r, c)
    return best[1], best[2]


def make_taizhou(shared: Path, out: Path) -> dict:
    tz = shared / "data" / "taizhou"
    out.mkdir(parents=True, exist_ok=True)
    x1, v1, info = read_raster(tz / "2000TM")
    x2, v2, _ = read_raster(tz / "2003TM")
    ref = reference_from_masks(read_mask(tz / "change.bmp", info), read_mask(tz / "unchanged.bmp", info))
    r0, c0 = best_crop(ref, CROP)
    sl = (slice(r0, r0 + CROP), slice(c0, c0 + CROP))
    gt0 = info.geotransform
    gt = (gt0[0] + c0 * gt0[1], gt0[1], 0.0, gt0[3] + r0 * gt0[5], 0.0, gt0[5])
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32651)  # WGS 84 / UTM zone 51N, what the ENVI header's map info says
    wkt = srs.ExportToWkt()
    common = {
        "source": "shared/data/taizhou (see resources/sample/PROVENANCE.md)",
        "crop_rows_cols": f"rows {r0}-{r0 + CROP - 1}, cols {c0}-{c0 + CROP - 1} (0-based) of the 400 x 400 scene",
    }
    for name, x, year in (("t1", x1, 2000), ("t2", x2, 2003)):
        arr = x[:, sl[0], sl[1]]
        assert np.isfinite(arr).all()
        write_tif(
            out / f"{name}.tif",
            arr.astype(np.uint8),
            gt,
            wkt,
            gdal.GDT_Byte,
            band_names=ETM_BANDS,
            wavelengths_nm=info.wavelengths_nm,
            metadata={**common, "date": str(year), "sensor": "Landsat-7 ETM+", "units": "DN (uint8)"},
        )
    write_tif(
        out / "reference.tif",
        ref[sl],
        gt,
        wkt,
        gdal.GDT_Byte,
        nodata=255,
        band_names=["reference: 1 changed, 0 unchanged, 255 unlabelled"],
        metadata={**common, "encoding": "1 changed (change.bmp 255), 0 unchanged (unchanged.bmp 255), 255 unlabelled"},
    )
    crop = ref[sl]
    return {
        "row0": r0,
        "col0": c0,
        "changed": int((crop == 1).sum()),
        "unchanged": int((crop == 0).sum()),
        "unlabelled": int((crop == 255).sum()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--out", type=Path, default=REPO / "resources" / "sample")
    args = parser.parse_args(argv)
    if not (args.shared / "data").is_dir():
        print(f"{args.shared}/data not found; pass --shared", file=sys.stderr)
        return 2
    make_salinas(args.shared, args.out / "salinasA_pair")
    crop = make_taizhou(args.shared, args.out / "taizhou_crop")
    print(json.dumps({"taizhou_crop": crop}))
    total = 0
    for f in sorted(args.out.rglob("*")):
        if f.is_file():
            total += f.stat().st_size
            print(f"{f.relative_to(args.out)}  {f.stat().st_size:,} B")
    print(f"total {total:,} B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
