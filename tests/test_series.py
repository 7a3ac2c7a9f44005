"""A series of dates (core.series, CLI ``series``): per-pair maps, first date and number of changes, polygons with
the date pair, ordering by date, and the bad series refused with one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from osgeo import gdal, ogr
from test_align import smooth_pair, write

from hypernet_qgis.core import series
from hypernet_qgis.core.errors import InputError

A = (slice(5, 15), slice(5, 15))     # changes between date 1 and 2
B = (slice(30, 45), slice(40, 60))   # changes between date 2 and 3, and back between 3 and 4


def dates_stack(tmp_path, n: int = 4) -> list[str]:
    x1, _ = smooth_pair()
    xs = [x1.copy() for _ in range(n)]
    for k in range(1, n):
        xs[k][:, A[0], A[1]] += 60.0
    if n > 2:
        xs[2][:, B[0], B[1]] += 80.0
    rng = np.random.default_rng(0)
    return [write(tmp_path / f"d{k + 1}.tif", x + rng.normal(0, 0.3, x.shape)) for k, x in enumerate(xs)]


def test_first_change_count_and_polygons(tmp_path):
    images = dates_stack(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    dates = ["2018-06-01", "2019-06-01", "2020-06-01", "2021-06-01"]
    res = series.series_files(images, str(out), dates=dates, method="cva", polygons=True, min_area=900.0)
    assert len(res.pair_maps) == 3 and all((out / p.split("/")[-1]).exists() for p in res.pair_maps)
    first = gdal.Open(res.first_change).ReadAsArray()
    count = gdal.Open(res.change_count).ReadAsArray()
    assert np.all(first[A] == 1) and np.all(count[A] == 1)
    assert np.all(first[B] == 2) and np.all(count[B] == 2)  # changed 2->3 and back 3->4
    assert first[50, 5] == 0 and count[50, 5] == 0
    assert gdal.Open(res.first_change).GetMetadataItem("pair_2") == "2019-06-01/2020-06-01"
    ds = ogr.Open(res.polygons)
    feats = [f.items() for f in ds.GetLayer(0)]
    assert sorted((f["pair"], f["date_t1"], f["date_t2"], f["pixels"]) for f in feats) == [
        (1, "2018-06-01", "2019-06-01", 100), (2, "2019-06-01", "2020-06-01", 300),
        (3, "2020-06-01", "2021-06-01", 300)]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_images_are_ordered_by_date(tmp_path):
    images = dates_stack(tmp_path, 3)
    out = tmp_path / "out"
    out.mkdir()
    lines: list[str] = []

    class Log:
        info = staticmethod(lines.append)

        def set_progress(self, f):
            pass

        def is_cancelled(self):
            return False

    res = series.series_files([images[2], images[0], images[1]], str(out), method="cva", feedback=Log(),
                              dates=["2020-01-01", "2018-01-01", "2019-01-01"])
    assert res.images == images and res.dates == ["2018-01-01", "2019-01-01", "2020-01-01"]
    assert any("ordered by the dates given: d1.tif (2018-01-01), d2.tif" in m for m in lines)


@pytest.mark.parametrize("case, words", [
    ("one", "at least two dates; got 1 image"),
    ("count", "3 dates were given for 2 images"),
    ("same", "have the same date 2019-01-01"),
    ("notdate", "'soon' is not a date"),
    ("grid", "A series needs all dates on one grid"),
    ("method", "Unknown method"),
])
def test_bad_series_are_refused_with_one_line(tmp_path, case, words):
    images = dates_stack(tmp_path, 3)
    out = tmp_path / "out"
    out.mkdir()
    kwargs: dict = {"method": "cva"}
    if case == "one":
        images = images[:1]
    elif case == "count":
        images, kwargs["dates"] = images[:2], ["2018-01-01", "2019-01-01", "2020-01-01"]
    elif case == "same":
        kwargs["dates"] = ["2018-01-01", "2019-01-01", "2019-01-01"]
    elif case == "notdate":
        kwargs["dates"] = ["2018-01-01", "soon", "2020-01-01"]
    elif case == "grid":
        x1, _ = smooth_pair()
        images[1] = write(tmp_path / "moved.tif", x1, gt=(500090.0, 30.0, 0.0, 4600000.0, 0.0, -30.0))
    else:
        kwargs["method"] = "magic"
    with pytest.raises(InputError, match=words) as err:
        series.series_files(images, str(out), **kwargs)
    assert "\n" not in str(err.value) and list(out.iterdir()) == []


def test_dates_from_the_metadata(tmp_path):
    images = dates_stack(tmp_path, 2)
    for path, day in zip(images, ("2021:05:03 10:00:00", "2020:04:01 10:00:00")):
        ds = gdal.Open(path, gdal.GA_Update)
        ds.SetMetadataItem("TIFFTAG_DATETIME", day)
        ds = None
    assert series.metadata_date(images[0]).isoformat() == "2021-05-03"
    out = tmp_path / "out"
    out.mkdir()
    res = series.series_files(images, str(out), method="cva")
    assert res.dates == ["2020-04-01", "2021-05-03"] and res.images == images[::-1]


def test_cli_series(tmp_path):
    from test_cli import cli

    images = dates_stack(tmp_path, 3)
    out = tmp_path / "out"
    out.mkdir()
    r = cli("series", *images, "--output-dir", str(out), "--method", "cva", "--polygons",
            "--dates", "2018-01-01,2019-01-01,2020-01-01", "--quiet")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["polygons"].endswith("change_polygons.gpkg") and len(res["pair_maps"]) == 2
    r = cli("series", images[0], "--output-dir", str(out))
    assert r.returncode == 2 and "at least two dates" in r.stderr


def test_hypernet_series_trains_per_pair(tmp_path):
    from hypernet_qgis.core.hypernet.training import TrainConfig

    images = dates_stack(tmp_path, 3)
    out = tmp_path / "out"
    out.mkdir()
    res = series.series_files(images, str(out), method="hypernet", config=TrainConfig(epochs=2, seed=0,
                                                                                         device="cpu"))
    first = gdal.Open(res.first_change).ReadAsArray()
    assert first[10, 10] == 1 and first[37, 50] == 2 and len(res.changed_pixels) == 2
