"""Change polygons (core.io.polygons) on real GeoTIFFs and GeoPackages: georeferencing, areas, MIN_AREA, connectivity,
intensity statistics, sieving, bad input, and the by-rows path against the in-memory one."""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, ogr, osr

from hypernet_qgis.core.errors import InputError
from hypernet_qgis.core.io import polygons

GT = (500000.0, 10.0, 0.0, 4000000.0, 0.0, -10.0)


def write_map(
    path: Path, array: np.ndarray, epsg: int | None = 32633, gt=GT, dtype=gdal.GDT_Byte, nodata: float | None = 255
) -> str:
    ds = gdal.GetDriverByName("GTiff").Create(str(path), array.shape[1], array.shape[0], 1, dtype)
    ds.SetGeoTransform(gt)
    if epsg:
        srs = osr.SpatialReference()
        srs.ImportFromEPSG(epsg)
        ds.SetProjection(srs.ExportToWkt())
    if nodata is not None:
        ds.GetRasterBand(1).SetNoDataValue(nodata)
    ds.GetRasterBand(1).WriteArray(array)
    ds = None
    return str(path)


def features(path: str) -> tuple[list[dict], str]:
    ds = ogr.Open(path)
    layer = ds.GetLayer(0)
    srs = layer.GetSpatialRef()
    out = []
    for f in layer:
        item = f.items()
        geom = f.GetGeometryRef()
        item["_area"] = geom.GetArea()
        item["_env"] = geom.GetEnvelope()  # (minx, maxx, miny, maxy)
        out.append(item)
    return out, (srs.ExportToWkt() if srs else "")


def label(binary: np.ndarray, connectivity: int) -> list[list[tuple[int, int]]]:
    """Connected regions of the 1s by breadth-first search (an independent reference)."""
    steps = [(0, 1), (1, 0), (0, -1), (-1, 0)]
    if connectivity == 8:
        steps += [(1, 1), (1, -1), (-1, 1), (-1, -1)]
    seen = np.zeros(binary.shape, bool)
    regions = []
    for r, c in zip(*np.nonzero(binary == 1)):
        if seen[r, c]:
            continue
        queue, pixels = deque([(r, c)]), []
        seen[r, c] = True
        while queue:
            y, x = queue.popleft()
            pixels.append((y, x))
            for dy, dx in steps:
                v, u = y + dy, x + dx
                if 0 <= v < binary.shape[0] and 0 <= u < binary.shape[1] and not seen[v, u] and binary[v, u] == 1:
                    seen[v, u] = True
                    queue.append((v, u))
        regions.append(pixels)
    return regions


def pixel_envelope(pixels) -> tuple[float, float, float, float]:
    ys, xs = zip(*pixels)
    return (
        GT[0] + min(xs) * GT[1],
        GT[0] + (max(xs) + 1) * GT[1],
        GT[3] + (max(ys) + 1) * GT[5],
        GT[3] + min(ys) * GT[5],
    )


def random_map(seed: int = 3, size: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = (rng.random((size, size)) < 0.3).astype(np.uint8)
    a[:3, :5] = 255  # a nodata corner
    return a


@pytest.mark.parametrize("connectivity", [4, 8])
def test_polygons_line_up_with_the_pixels(tmp_path, connectivity):
    a = random_map()
    inten = np.random.default_rng(1).random(a.shape) * 5
    change = write_map(tmp_path / "change.tif", a)
    res = polygons.polygonize_change(change, str(tmp_path / "p.gpkg"), intensity=inten, connectivity=connectivity)
    feats, wkt = features(res.path)
    expected = label(a, connectivity)
    assert res.regions == res.kept == len(feats) == len(expected) > 50
    srs, ref = osr.SpatialReference(), osr.SpatialReference()
    srs.ImportFromWkt(wkt)
    ref.ImportFromEPSG(32633)
    assert srs.IsSame(ref)
    by_env = {}
    for pixels in expected:
        by_env.setdefault(pixel_envelope(pixels), []).append(pixels)
    for f in feats:
        candidates = by_env[tuple(f["_env"])]  # the feature's extent is its pixels' extent
        pixels = next(p for p in candidates if len(p) == f["pixels"])
        assert f["area"] == pytest.approx(len(pixels) * 100.0)
        assert f["_area"] == pytest.approx(f["area"])  # the geometry covers exactly those pixels
        assert f["area_ha"] == pytest.approx(len(pixels) * 100.0 / 1e4)
        values = [inten[p] for p in pixels]
        assert f["mean_intensity"] == pytest.approx(np.mean(values))
        assert f["max_intensity"] == pytest.approx(np.max(values))
    assert res.changed_pixels == int((a == 1).sum())
    assert res.valid_pixels == int((a != 255).sum())
    assert res.changed_hectares == pytest.approx((a == 1).sum() * 100.0 / 1e4)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporary file left


def test_connectivity_differs_on_a_diagonal_pattern(tmp_path):
    a = np.zeros((12, 12), np.uint8)
    for i in range(0, 12, 2):
        a[i, i] = 1  # pixels on the diagonal with one-pixel gaps
    a[1, 1] = 1  # closes the first gap: (0,0), (1,1), (2,2) touch at their corners
    change = write_map(tmp_path / "diag.tif", a)
    four = polygons.polygonize_change(change, str(tmp_path / "p4.gpkg"), connectivity=4)
    eight = polygons.polygonize_change(change, str(tmp_path / "p8.gpkg"), connectivity=8)
    assert four.kept == int(a.sum()) == 7
    assert eight.kept == 5  # the chain of 3 is one region, the 4 other pixels stand alone
    assert len(features(eight.path)[0]) == 5 and len(features(four.path)[0]) == 7


def test_min_area_drops_exactly_the_small_regions_and_sieve_removes_them(tmp_path):
    a = random_map(seed=5)
    change = write_map(tmp_path / "change.tif", a)
    expected = label(a, 8)
    min_area = 400.0  # 4 pixels of 10 m x 10 m
    res = polygons.polygonize_change(
        change,
        str(tmp_path / "p.gpkg"),
        min_area=min_area,
        connectivity=8,
        sieve=True,
        dates=("2019-05-01", "2020-05-01"),
    )
    feats, _ = features(res.path)
    big = [p for p in expected if len(p) * 100.0 >= min_area]
    small = [p for p in expected if len(p) * 100.0 < min_area]
    assert small and big
    assert res.kept == len(feats) == len(big) and res.dropped == len(small)
    assert sorted(f["pixels"] for f in feats) == sorted(len(p) for p in big)
    assert {(f["date_t1"], f["date_t2"]) for f in feats} == {("2019-05-01", "2020-05-01")}
    sieved = gdal.Open(change).ReadAsArray()
    want = a.copy()
    for pixels in small:
        for p in pixels:
            want[p] = 0
    np.testing.assert_array_equal(sieved, want)
    assert res.sieved_pixels == sum(len(p) for p in small)
    assert res.changed_pixels == int((sieved == 1).sum())


def test_without_sieve_the_change_map_is_untouched(tmp_path):
    a = random_map(seed=7)
    change = write_map(tmp_path / "change.tif", a)
    before = Path(change).read_bytes()
    res = polygons.polygonize_change(change, str(tmp_path / "p.gpkg"), min_area=1000.0)
    assert Path(change).read_bytes() == before and res.dropped > 0


def test_by_rows_with_scratch_files_gives_the_same_polygons(tmp_path):
    """A tiny memory budget: scratch rasters on disk and many row blocks; the same features as in memory."""
    rng = np.random.default_rng(11)
    a = (rng.random((300, 1200)) < 0.25).astype(np.uint8)
    inten = rng.random(a.shape).astype(np.float32)
    change = write_map(tmp_path / "change.tif", a)
    inten_path = write_map(tmp_path / "inten.tif", inten, dtype=gdal.GDT_Float32, nodata=-9999.0)
    small = polygons.polygonize_change(
        change, str(tmp_path / "rows.gpkg"), intensity=inten_path, min_area=300, memory_budget_mb=1
    )
    whole = polygons.polygonize_change(change, str(tmp_path / "whole.gpkg"), intensity=inten, min_area=300)
    f1, f2 = features(small.path)[0], features(whole.path)[0]
    key = lambda f: (f["_env"], f["pixels"])  # noqa: E731
    assert [(f["_env"], f["pixels"], round(f["mean_intensity"], 5)) for f in sorted(f1, key=key)] == [
        (f["_env"], f["pixels"], round(f["mean_intensity"], 5)) for f in sorted(f2, key=key)
    ]
    assert small.kept == whole.kept > 100
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]


def test_no_crs_and_geographic_crs_give_no_hectares(tmp_path):
    a = random_map()
    res = polygons.polygonize_change(write_map(tmp_path / "nocrs.tif", a, epsg=None), str(tmp_path / "a.gpkg"))
    assert res.changed_hectares is None and "no CRS" in res.messages[0]
    feats, wkt = features(res.path)
    assert (wkt == "" or "Undefined" in wkt) and all(f["area_ha"] is None for f in feats)  # GPKG: srs_id 0
    geo = write_map(tmp_path / "geo.tif", a, epsg=4326, gt=(10.0, 0.001, 0.0, 45.0, 0.0, -0.001))
    res = polygons.polygonize_change(geo, str(tmp_path / "b.gpkg"))
    assert res.changed_hectares is None and "geographic" in res.messages[0]
    assert "map units²" in polygons.area_message(10, 100, (10.0, 0.001, 0, 45.0, 0, -0.001), "")


def test_change_area_figures():
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    a = polygons.change_area(250, 1000, GT, srs.ExportToWkt())
    assert a == {"changed_area": 25000.0, "changed_hectares": 2.5, "changed_share": 0.25}
    assert polygons.area_message(250, 1000, GT, srs.ExportToWkt()) == "Changed area: 2.5 ha, 25.00% of the valid area."


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"out": "p.shp"}, "GeoPackage"),
        ({"min_area": -1.0}, "0 or more"),
        ({"min_area": float("nan")}, "0 or more"),
        ({"connectivity": 6}, r"4 \(edges\) or 8"),
        ({"out": "missing/p.gpkg"}, "does not exist"),
        ({"intensity": np.zeros((3, 3))}, "give the intensity of that change map"),
    ],
)
def test_bad_options_are_refused_with_one_clear_line(tmp_path, kwargs, words):
    change = write_map(tmp_path / "change.tif", random_map())
    out = str(tmp_path / kwargs.pop("out", "p.gpkg"))
    with pytest.raises(InputError, match=words) as err:
        polygons.polygonize_change(change, out, **kwargs)
    assert "\n" not in str(err.value)
    assert not os.path.exists(out)


def test_a_multiband_raster_is_not_a_change_map(tmp_path):
    path = str(tmp_path / "two.tif")
    ds = gdal.GetDriverByName("GTiff").Create(path, 5, 5, 2, gdal.GDT_Byte)
    ds.FlushCache()
    ds = None
    with pytest.raises(InputError, match="has 2 bands"):
        polygons.polygonize_change(path, str(tmp_path / "p.gpkg"))
