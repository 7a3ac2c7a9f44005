"""CLI forms of the change polygons: ``detect``/``baseline ... --polygons P.gpkg --min-area A``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from osgeo import gdal, ogr
from test_cli import cli


def _features(path) -> list[dict]:
    ds = ogr.Open(str(path))
    return [f.items() for f in ds.GetLayer(0)]


def test_baseline_writes_polygons_whose_areas_add_up(synthetic_pair, tmp_path):
    t1, t2 = str(synthetic_pair["t1"]), str(synthetic_pair["t2"])
    change, poly = tmp_path / "cva.tif", tmp_path / "cva.gpkg"
    r = cli("baseline", "cva", t1, t2, "--output", str(change), "--polygons", str(poly), "--connectivity", "4")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    binary = gdal.Open(str(change)).ReadAsArray()
    feats = _features(poly)
    assert out["polygons"] == str(poly) and out["polygon_count"] == len(feats) > 0
    assert sum(f["pixels"] for f in feats) == int((binary == 1).sum()) == out["changed_pixels"]
    assert out["changed_hectares"] == pytest.approx((binary == 1).sum() * 900 / 1e4)  # 30 m pixels
    assert "Changed area:" in r.stderr and "% of the valid area" in r.stderr
    assert all(f["mean_intensity"] is not None and f["max_intensity"] >= f["mean_intensity"] for f in feats)


def test_min_area_and_sieve_from_the_cli(synthetic_pair, tmp_path):
    t1, t2 = str(synthetic_pair["t1"]), str(synthetic_pair["t2"])
    change, poly = tmp_path / "cva.tif", tmp_path / "cva.gpkg"
    r = cli(
        "baseline",
        "cva",
        t1,
        t2,
        "--output",
        str(change),
        "--polygons",
        str(poly),
        "--threshold",
        "1.0",
        "--min-area",
        "9000",
        "--sieve",
        "--dates",
        "2019-05-01,2020-05-01",
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    feats = _features(poly)
    assert all(f["area"] >= 9000 for f in feats) and out["dropped_regions"] > 0  # noise regions dropped
    binary = gdal.Open(str(change)).ReadAsArray()
    assert sum(f["pixels"] for f in feats) == int((binary == 1).sum()) == out["changed_pixels"]
    assert {f["date_t2"] for f in feats} == {"2020-05-01"}


def test_detect_writes_polygons(synthetic_pair, tmp_path):
    t1, t2 = str(synthetic_pair["t1"]), str(synthetic_pair["t2"])
    poly = tmp_path / "hn.gpkg"
    r = cli(
        "detect",
        t1,
        t2,
        "--output",
        str(tmp_path / "hn.tif"),
        "--epochs",
        "2",
        "--device",
        "cpu",
        "--polygons",
        str(poly),
        "--min-area",
        "1800",
        "--quiet",
        "--report",
        str(tmp_path / "r.html"),
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["polygon_count"] == len(_features(poly)) and np.isfinite(out["changed_hectares"])
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "changed area" in html and f"{out['changed_hectares']:.4g} ha" in html and "hn.gpkg" in html


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--polygons", "p.shp"], "GeoPackage"),
        (["--polygons", "p.gpkg", "--min-area", "-5"], "0 or more"),
        (["--min-area", "100"], "add --polygons"),
        (["--polygons", "p.gpkg", "--dates", "2019"], "two dates"),
    ],
)
def test_bad_polygon_options_exit_2_with_one_line(synthetic_pair, tmp_path, extra, message):
    t1, t2 = str(synthetic_pair["t1"]), str(synthetic_pair["t2"])
    extra = [str(tmp_path / e) if e.endswith((".gpkg", ".shp")) else e for e in extra]
    r = cli("baseline", "cva", t1, t2, "--output", str(tmp_path / "c.tif"), *extra)
    assert r.returncode == 2 and message in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "c.tif").exists()
