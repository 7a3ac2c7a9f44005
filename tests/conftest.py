"""Shared test fixtures: paths, the optional ../shared data, and one real QGIS application per session."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# ../shared beside the checkout, or HYPERNET_SHARED (`make mutmut` runs the tests in a copy, mutants/)
SHARED = Path(os.environ.get("HYPERNET_SHARED") or REPO.parent / "shared")
SAMPLE = REPO / "resources" / "sample"

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
if "XDG_RUNTIME_DIR" not in os.environ:
    runtime = Path(tempfile.gettempdir()) / f"hypernet-xdg-{os.getuid()}"
    runtime.mkdir(mode=0o700, exist_ok=True)
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)
for extra in (str(REPO), "/usr/share/qgis/python/plugins"):
    if extra not in sys.path:
        sys.path.insert(0, extra)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the checkout (real data, fixtures); tests using it skip when it is absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared is not present")
    return SHARED


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The sample data shipped in resources/sample."""
    return SAMPLE


@pytest.fixture(scope="session")
def qgis_app():
    """A real headless QgsApplication with Processing initialised (started on first use, once per session)."""
    from qgis.core import QgsApplication

    app = QgsApplication.instance()
    if app is None:
        QgsApplication.setPrefixPath("/usr", True)
        app = QgsApplication([], False)
        app.initQgis()
    from processing.core.Processing import Processing

    Processing.initialize()
    yield app


def write_pair(
    folder: Path, bands: int = 8, rows: int = 40, cols: int = 36, seed: int = 0, nodata_corner: bool = True
) -> dict[str, Path]:
    """A small synthetic GeoTIFF pair (UTM 33N, 30 m) with smooth land cover, a gain/offset between the dates,
    an implanted changed rectangle and (optionally) a nodata corner in T1. Returns paths t1, t2, gt."""
    import numpy as np
    from osgeo import gdal, osr

    rng = np.random.default_rng(seed)
    classes = rng.normal(100, 30, size=(4, bands))
    yy, xx = np.mgrid[0:rows, 0:cols]
    label = ((yy // 10) + (xx // 9)) % 4
    t1 = classes[label].transpose(2, 0, 1) + rng.normal(0, 2, (bands, rows, cols))
    t2 = 1.05 * (classes[label].transpose(2, 0, 1) + rng.normal(0, 2, (bands, rows, cols))) + 3.0
    gt = np.zeros((rows, cols), np.uint8)
    r0, c0 = rows // 3, cols // 3
    gt[r0 : r0 + 10, c0 : c0 + 12] = 1
    t2[:, gt == 1] = (1.05 * (classes[(label + 2) % 4] + 40).transpose(2, 0, 1) + 3.0)[:, gt == 1]
    if nodata_corner:
        t1[:, :3, :3] = -9999.0
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    paths = {}
    for name, arr, nd in (("t1", t1, -9999.0), ("t2", t2, -9999.0), ("gt", gt[None], None)):
        path = folder / f"{name}.tif"
        dtype = gdal.GDT_Byte if name == "gt" else gdal.GDT_Float32
        ds = gdal.GetDriverByName("GTiff").Create(str(path), cols, rows, arr.shape[0], dtype)
        ds.SetGeoTransform((500000.0, 30.0, 0.0, 4600000.0, 0.0, -30.0))
        ds.SetProjection(srs.ExportToWkt())
        for b in range(arr.shape[0]):
            band = ds.GetRasterBand(b + 1)
            if nd is not None:
                band.SetNoDataValue(nd)
            band.WriteArray(arr[b])
        ds = None
        paths[name] = path
    return paths


@pytest.fixture
def synthetic_pair(tmp_path: Path) -> dict[str, Path]:
    """Paths t1, t2, gt of a small synthetic pair with known change (see write_pair)."""
    return write_pair(tmp_path)


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers",
        "network: needs the internet (pypi.org); skipped with its reason when offline, deselect with -m 'not network'",
    )
