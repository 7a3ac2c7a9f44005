"""Helpers shared by the QGIS tests: tiny real GeoTIFFs, the provider registered once, file hashes.

(Named test_qgis_* so it belongs with the QGIS tests; it holds no tests itself.)
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

EPSG = 32633
GEOTRANSFORM = (500000.0, 10.0, 0.0, 4000000.0, 0.0, -10.0)
#: The changed block of the synthetic pair (rows, cols).
CHANGED = (slice(6, 14), slice(5, 13))


def write_tif(
    path: Path | str,
    array: np.ndarray,
    nodata: float | None = None,
    epsg: int | None = EPSG,
    geotransform: tuple = GEOTRANSFORM,
) -> str:
    """A GeoTIFF written with GDAL: (bands, rows, cols) or (rows, cols); ``epsg=None`` writes no CRS."""
    from osgeo import gdal, osr

    arr = np.asarray(array)
    if arr.ndim == 2:
        arr = arr[None]
    types = {
        "f": gdal.GDT_Float32,
        "u": gdal.GDT_Byte if arr.dtype.itemsize == 1 else gdal.GDT_UInt16,
        "i": gdal.GDT_Int16,
    }
    ds = gdal.GetDriverByName("GTiff").Create(
        str(path), arr.shape[2], arr.shape[1], arr.shape[0], types[arr.dtype.kind]
    )
    ds.SetGeoTransform(geotransform)
    if epsg:
        srs = osr.SpatialReference()
        srs.ImportFromEPSG(epsg)
        ds.SetProjection(srs.ExportToWkt())
    for i in range(arr.shape[0]):
        band = ds.GetRasterBand(i + 1)
        if nodata is not None:
            band.SetNoDataValue(nodata)
        band.WriteArray(arr[i])
    ds = None
    return str(path)


def make_pair(folder: Path, bands: int = 6, size: int = 24, seed: int = 0, shift: float = 4.0) -> dict[str, str]:
    """T1, T2 (T2 = T1 + small noise, a block shifted strongly in every band) and the reference (1 in the block)."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=(bands, size, size)).astype(np.float32)
    x2 = x1 + 0.05 * rng.normal(size=x1.shape).astype(np.float32)
    x2[:, CHANGED[0], CHANGED[1]] += shift
    ref = np.zeros((size, size), np.uint8)
    ref[CHANGED] = 1
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "t1": write_tif(folder / "t1.tif", x1),
        "t2": write_tif(folder / "t2.tif", x2),
        "ref": write_tif(folder / "ref.tif", ref),
    }


def read(path: str) -> tuple[np.ndarray, tuple, str, float | None]:
    """(first band, geotransform, CRS WKT, nodata) of a raster."""
    from osgeo import gdal

    ds = gdal.Open(str(path))
    band = ds.GetRasterBand(1)
    out = band.ReadAsArray(), ds.GetGeoTransform(), ds.GetProjection(), band.GetNoDataValue()
    ds = None
    return out


def same_crs(wkt: str, epsg: int = EPSG) -> bool:
    from osgeo import osr

    a, b = osr.SpatialReference(), osr.SpatialReference()
    a.ImportFromWkt(wkt)
    b.ImportFromEPSG(epsg)
    return bool(a.IsSame(b))


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def hashes(folder: Path) -> dict[str, str]:
    """Hash of every file in a folder (to prove inputs are never changed).

    GDAL ``.aux.xml`` statistics files are left out: QGIS itself writes them when it opens a raster layer (as
    when a user adds the layer to a map), not the plugin.
    """
    return {
        p.name: sha256(p) for p in sorted(Path(folder).iterdir()) if p.is_file() and not p.name.endswith(".aux.xml")
    }


@pytest.fixture(scope="session")
def hypernet_provider(qgis_app):
    """The hypernet provider registered in the session's QGIS (once)."""
    from qgis.core import QgsApplication

    from hypernet_qgis.provider import HyperNetProvider

    registry = QgsApplication.processingRegistry()
    provider = registry.providerById("hypernet")
    if provider is None:
        provider = HyperNetProvider()
        assert registry.addProvider(provider)
    yield provider


@pytest.fixture(scope="session")
def pair_dir(tmp_path_factory) -> Path:
    """A tiny synthetic pair (6 bands, 24x24, a changed 8x8 block) with its reference."""
    folder = tmp_path_factory.mktemp("pair")
    make_pair(folder)
    return folder


@pytest.fixture(scope="session")
def trained_model(hypernet_provider, pair_dir, tmp_path_factory) -> str:
    """A model file trained (3 epochs) on pair_dir through processing.run."""
    import processing

    out = str(tmp_path_factory.mktemp("model") / "pair.hypernet")
    processing.run(
        "hypernet:trainhypernet",
        {
            "INPUT_T1": str(pair_dir / "t1.tif"),
            "INPUT_T2": str(pair_dir / "t2.tif"),
            "EPOCHS": 3,
            "SEED": 1,
            "DEVICE": "cpu",
            "OUTPUT_MODEL": out,
        },
    )
    assert os.path.exists(out)
    return out
