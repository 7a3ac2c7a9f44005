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

A = (slice(5, 15), slice(5, 15))  # changes between date 1 and 2
B = (slice(30, 45), slice(40, 60))  # changes between date 2 and 3, and back between 3 and 4


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
        (1, "2018-06-01", "2019-06-01", 100),
        (2, "2019-06-01", "2020-06-01", 300),
        (3, "2020-06-01", "2021-06-01", 300),
    ]
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

    res = series.series_files(
        [images[2], images[0], images[1]],
        str(out),
        method="cva",
        feedback=Log(),
        dates=["2020-01-01", "2018-01-01", "2019-01-01"],
    )
    assert res.images == images and res.dates == ["2018-01-01", "2019-01-01", "2020-01-01"]
    assert any("ordered by the dates given: d1.tif (2018-01-01), d2.tif" in m for m in lines)


@pytest.mark.parametrize(
    "case, words",
    [
        ("one", "at least two dates; got 1 image"),
        ("count", "3 dates were given for 2 images"),
        ("same", "have the same date 2019-01-01"),
        ("notdate", "'soon' is not a date"),
        ("grid", r"A series needs all dates on one grid \(ALIGN is off\): date 1 \(d1.tif\) and date 2 \(moved.tif\)"),
        ("apart", r"date 1 \(d1.tif\) and date 3 \(far.tif\) do not overlap"),
        ("no_crs", r"date 2 \(nocrs.tif\) has no coordinate reference system"),
        ("bands", r"date 1 \(d1.tif\) has 5 bands but date 2 \(three.tif\) has 3"),
        ("training", "Unknown training 'sometimes'"),
        ("method", "Unknown method"),
    ],
)
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
        kwargs["align"] = False
    elif case == "apart":
        x1, _ = smooth_pair()
        images[2] = write(tmp_path / "far.tif", x1, gt=(600000.0, 30.0, 0.0, 4600000.0, 0.0, -30.0))
    elif case == "no_crs":
        x1, _ = smooth_pair()
        images[1] = write(tmp_path / "nocrs.tif", x1, gt=(500090.0, 30.0, 0.0, 4600000.0, 0.0, -30.0), epsg=None)
    elif case == "bands":
        x1, _ = smooth_pair(bands=3)
        images[1] = write(tmp_path / "three.tif", x1, gt=(500090.0, 30.0, 0.0, 4600000.0, 0.0, -30.0))
    elif case == "training":
        kwargs.update(method="hypernet", training="sometimes")
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
    r = cli(
        "series",
        *images,
        "--output-dir",
        str(out),
        "--method",
        "cva",
        "--polygons",
        "--dates",
        "2018-01-01,2019-01-01,2020-01-01",
        "--quiet",
    )
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
    res = series.series_files(
        images, str(out), method="hypernet", training="per-pair", config=TrainConfig(epochs=2, seed=0, device="cpu")
    )
    first = gdal.Open(res.first_change).ReadAsArray()
    assert first[10, 10] == 1 and first[37, 50] == 2 and len(res.changed_pixels) == 2
    assert res.training == "per-pair" and res.model is None and not (out / series.MODEL_NAME).exists()


class Log:
    """A Feedback that keeps the messages."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        self.lines.append(message)

    def set_progress(self, fraction: float) -> None:
        pass

    def is_cancelled(self) -> bool:
        return False


def test_hypernet_series_shared_model_trains_once(tmp_path):
    """training="shared" (the default): one model on crops of both pairs, saved in the output folder with the
    series it was trained on; every pair's map comes from it."""
    from hypernet_qgis.core.hypernet.model_file import read_metadata
    from hypernet_qgis.core.hypernet.training import TrainConfig

    images = dates_stack(tmp_path, 3)
    out = tmp_path / "out"
    out.mkdir()
    log = Log()
    res = series.series_files(
        images,
        str(out),
        dates=["2018-01-01", "2019-01-01", "2020-01-01"],
        method="hypernet",
        config=TrainConfig(epochs=2, seed=0, device="cpu"),
        feedback=log,
    )
    assert res.training == "shared" and res.model == str(out / series.MODEL_NAME)
    assert sum(m.startswith("Training HyperNet on") for m in log.lines) == 1
    assert any("2 pairs of 70x60 pixels" in m for m in log.lines)
    meta = read_metadata(res.model)
    assert meta["pairs"] == 2 and meta["series"]["dates"] == res.dates and meta["series"]["training"] == "shared"
    assert meta["inputs"]["pairs"] == [[images[0], images[1]], [images[1], images[2]]]
    assert meta["training_pixels"] >= 70 * 60  # mask g of both pairs (half the valid pixels of each)
    first = gdal.Open(res.first_change).ReadAsArray()
    assert first[10, 10] == 1 and first[37, 50] == 2 and len(res.pair_maps) == 2
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [p.split("/")[-1] for p in res.pair_maps] + ["first_change.tif", "change_count.tif", series.MODEL_NAME]
    )


def test_shared_training_follows_the_memory_budget(tmp_path):
    """Over the budget, the pairs of the shared model are read by windows (each gets an equal share)."""
    from hypernet_qgis.core.hypernet.training import TrainConfig
    from hypernet_qgis.core.memory import shared_pair_budget_mb

    assert shared_pair_budget_mb(4096, 4) == 1024
    images = dates_stack(tmp_path, 3)
    out = tmp_path / "out"
    out.mkdir()
    log = Log()
    res = series.series_files(
        images,
        str(out),
        method="hypernet",
        feedback=log,
        evidence="hypernet",
        config=TrainConfig(epochs=2, seed=0, device="cpu", memory_budget_mb=0.2),
    )
    assert any("more than half the 0.1 MB memory budget" in m for m in log.lines)  # 0.2 MB shared by 2 pairs
    assert gdal.Open(res.first_change).ReadAsArray()[10, 10] == 1


SAMPLE = __import__("pathlib").Path(__file__).resolve().parents[1] / "resources" / "sample" / "salinasA_pair"


@pytest.mark.parametrize("training", ["shared", "per-pair"])
def test_hypernet_series_on_the_salinas_sample(tmp_path, training):
    """A real series of three dates: the AVIRIS sample's T1, T2 and T1 again (the implanted change and back).
    Both training modes find the change in pair 1 and its return in pair 2 against the sample's reference."""
    from hypernet_qgis.core.classic.metrics import change_metrics
    from hypernet_qgis.core.hypernet.training import TrainConfig

    if not (SAMPLE / "t1.tif").exists():
        pytest.skip("the sample pair resources/sample/salinasA_pair is not in this checkout")
    import shutil

    images = [str(tmp_path / f"d{k}.tif") for k in (1, 2, 3)]
    for src, dst in zip(("t1.tif", "t2.tif", "t1.tif"), images):
        shutil.copy(SAMPLE / src, dst)
    out = tmp_path / "out"
    out.mkdir()
    log = Log()
    res = series.series_files(
        images,
        str(out),
        dates=["2019-06-01", "2020-06-01", "2021-06-01"],
        method="hypernet",
        training=training,
        feedback=log,
        config=TrainConfig(epochs=3, seed=0, device="cpu"),
    )
    trainings = sum(m.startswith("Training HyperNet on") for m in log.lines)
    assert trainings == (1 if training == "shared" else 2)
    assert (res.model is not None) is (training == "shared")
    reference = gdal.Open(str(SAMPLE / "gt.tif")).ReadAsArray()
    for path in res.pair_maps:
        f1 = change_metrics(gdal.Open(path).ReadAsArray(), reference)["F1"]
        assert f1 > 0.6, (path, f1)
    count = gdal.Open(res.change_count).ReadAsArray()
    assert np.mean(count[reference == 1] == 2) > 0.6  # changed, and changed back


def test_dates_off_the_first_grid_are_warped_onto_it(tmp_path):
    """ALIGN (default): a date on a shifted grid is warped onto the first date's grid (nodata where it does not
    reach); the maps equal the same-grid series' where it reaches, and the log and result say what was done."""
    from test_align import GT

    images = dates_stack(tmp_path, 3)
    same, moved = tmp_path / "same", tmp_path / "moved"
    same.mkdir()
    moved.mkdir()
    dates = ["2018-01-01", "2019-01-01", "2020-01-01"]
    ref = series.series_files(images, str(same), dates=dates, method="cva")
    x3 = gdal.Open(images[2]).ReadAsArray()
    dc, dr = 5, 3
    shifted = np.full(x3.shape, -9999.0)
    shifted[:, : x3.shape[1] - dr, : x3.shape[2] - dc] = x3[:, dr:, dc:]
    images[2] = write(
        tmp_path / "d3_shifted.tif", shifted, gt=(GT[0] + dc * GT[1], GT[1], 0.0, GT[3] + dr * GT[5], 0.0, GT[5])
    )
    log = Log()
    res = series.series_files(images, str(moved), dates=dates, method="cva", resampling="nearest", feedback=log)
    assert len(res.aligned) == 1 and "date 3 (d3_shifted.tif) warped onto date 1's grid" in res.aligned[0]
    assert any(m.startswith("Align: date 3 (d3_shifted.tif)") for m in log.lines)
    for ours_path, theirs_path in zip(
        res.pair_maps + [res.first_change, res.change_count], ref.pair_maps + [ref.first_change, ref.change_count]
    ):
        ours, theirs = gdal.Open(ours_path), gdal.Open(theirs_path)
        assert ours.GetGeoTransform() == theirs.GetGeoTransform() == GT
        a, b = ours.ReadAsArray(), theirs.ReadAsArray()
        nodata = ours.GetRasterBand(1).GetNoDataValue()
        reached = np.zeros(a.shape, bool)
        reached[dr:, dc:] = True
        assert np.all(a[~reached] == nodata) or ours_path == res.pair_maps[0]
        assert np.mean(a[reached] == b[reached]) > 0.995, ours_path
    with pytest.raises(InputError, match=r"ALIGN is off.*Or turn ALIGN on") as err:
        series.series_files(images, str(tmp_path / "same"), dates=dates, method="cva", align=False)
    assert "\n" not in str(err.value)


def test_cli_series_training_and_align(tmp_path):
    from test_align import GT
    from test_cli import cli

    images = dates_stack(tmp_path, 3)
    x2 = gdal.Open(images[1]).ReadAsArray()
    images[1] = write(tmp_path / "d2_moved.tif", x2, gt=(GT[0] + 60.0, *GT[1:]))
    out = tmp_path / "out"
    out.mkdir()
    r = cli(
        "series",
        *images,
        "--output-dir",
        str(out),
        "--training",
        "per-pair",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--dates",
        "2018-01-01,2019-01-01,2020-01-01",
    )
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["training"] == "per-pair" and res["model"] is None and len(res["aligned"]) == 1
    assert "Align: date 2 (d2_moved.tif) warped onto date 1's grid" in r.stderr
    r = cli("series", *images, "--output-dir", str(out), "--method", "cva", "--no-align", "--quiet")
    assert r.returncode == 2 and "ALIGN is off" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli("series", *images, "--output-dir", str(out), "--training", "sometimes")
    assert r.returncode == 2 and "invalid choice" in r.stderr
