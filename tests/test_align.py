"""Pairs on different grids (core.io.align through the pipeline): a shifted or reprojected T2 gives the change map of
the pair made on one grid, over the common area; the bad cases are refused with one clear line."""

from __future__ import annotations

import os

import numpy as np
import pytest
from osgeo import gdal
from test_qgis_support import write_tif

from hypernet_qgis.core import pipeline
from hypernet_qgis.core.errors import InputError
from hypernet_qgis.core.io import align

GT = (500000.0, 30.0, 0.0, 4600000.0, 0.0, -30.0)
BLOCK = (slice(20, 34), slice(25, 41))


def write(path, arr, gt=GT, epsg: int | None = 32633, nodata: float | None = -9999.0) -> str:
    """A float32 GeoTIFF on ``gt`` (the shared test writer, with this module's grid and nodata)."""
    return write_tif(path, np.asarray(arr, np.float32), nodata=nodata, epsg=epsg, geotransform=gt)


def smooth_pair(rows: int = 60, cols: int = 70, bands: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """A smooth scene (resampling changes it little) and T2 with a strongly changed block."""
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float64)
    x1 = np.stack([100 + 20 * np.sin(xx / (7 + b)) + 15 * np.cos(yy / (9 + b)) for b in range(bands)])
    x2 = 1.02 * x1 + 1.0
    x2[:, BLOCK[0], BLOCK[1]] += 60.0
    return x1, x2


def read(path):
    ds = gdal.Open(str(path))
    out = ds.ReadAsArray(), ds.GetGeoTransform(), ds.GetProjection()
    ds = None
    return out


def test_a_pair_on_one_grid_is_used_as_it_is(tmp_path):
    x1, x2 = smooth_pair()
    t1, t2 = write(tmp_path / "t1.tif", x1), write(tmp_path / "t2.tif", x2)
    with align.aligned_pair(t1, t2) as pair:
        assert (pair.t1, pair.t2, pair.note) == (t1, t2, None)


def test_shifted_t2_gives_the_same_map_on_the_common_area(tmp_path):
    x1, x2 = smooth_pair()
    t1, t2 = write(tmp_path / "t1.tif", x1), write(tmp_path / "t2.tif", x2)
    # T2 on a grid 7 columns right and 4 rows down of T1's, covering beyond T1 (nodata outside the scene)
    dc, dr = 7, 4
    shifted = np.full(x2.shape, -9999.0)
    shifted[:, : x2.shape[1] - dr, : x2.shape[2] - dc] = x2[:, dr:, dc:]
    gt2 = (GT[0] + dc * GT[1], GT[1], 0.0, GT[3] + dr * GT[5], 0.0, GT[5])
    t2s = write(tmp_path / "t2_shifted.tif", shifted, gt=gt2)
    ref = pipeline.baseline_files("cva", t1, t2, str(tmp_path / "ref.tif"))
    messages: list[str] = []

    class Log:
        def info(self, m):
            messages.append(m)

        def set_progress(self, f):
            pass

        def is_cancelled(self):
            return False

    res = pipeline.baseline_files("cva", t1, t2s, str(tmp_path / "aligned.tif"), resampling="nearest", feedback=Log())
    ours, gt, wkt = read(res.change_path)
    assert ours.shape == (x1.shape[1] - dr, x1.shape[2] - dc)  # the common area only
    assert gt == pytest.approx((GT[0] + dc * GT[1], GT[1], 0.0, GT[3] + dr * GT[5], 0.0, GT[5]))
    theirs = read(ref.change_path)[0][dr:, dc:]
    assert np.mean(ours == theirs) > 0.995
    assert ours[BLOCK[0].start - dr + 2, BLOCK[1].start - dc + 2] == 1
    assert "warped onto T1's grid" in res.extra["align"] and any(m.startswith("Align: ") for m in messages)
    assert res.pair.info2.path == t2s  # the report names the user's file, not a temporary VRT
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".vrt")]


def test_reprojected_t2_gives_the_same_map_within_resampling(tmp_path):
    x1, x2 = smooth_pair()
    t1, t2 = write(tmp_path / "t1.tif", x1), write(tmp_path / "t2.tif", x2)
    t2r = str(tmp_path / "t2_utm32.tif")
    gdal.Warp(t2r, t2, dstSRS="EPSG:32632", xRes=30.0, yRes=30.0, resampleAlg="bilinear", dstNodata=-9999.0)
    ref = read(pipeline.baseline_files("cva", t1, t2, str(tmp_path / "ref.tif")).change_path)[0]
    res = pipeline.baseline_files("cva", t1, t2r, str(tmp_path / "aligned.tif"))
    ours, gt, _ = read(res.change_path)
    col0, row0 = round((gt[0] - GT[0]) / GT[1]), round((gt[3] - GT[3]) / GT[5])
    theirs = ref[row0 : row0 + ours.shape[0], col0 : col0 + ours.shape[1]]
    scored = (ours != 255) & (theirs != 255)
    edge = np.zeros(ref.shape, bool)  # pixels within 2 of the block's edge may go either way after resampling
    edge[BLOCK[0].start - 2 : BLOCK[0].stop + 2, BLOCK[1].start - 2 : BLOCK[1].stop + 2] = True
    edge[BLOCK[0].start + 2 : BLOCK[0].stop - 2, BLOCK[1].start + 2 : BLOCK[1].stop - 2] = False
    scored &= ~edge[row0 : row0 + ours.shape[0], col0 : col0 + ours.shape[1]]
    assert scored.sum() > 0.8 * ours.size
    assert np.array_equal(ours[scored], theirs[scored])


def test_no_align_refuses_differing_grids_as_before(tmp_path):
    x1, x2 = smooth_pair()
    t1 = write(tmp_path / "t1.tif", x1)
    t2 = write(tmp_path / "t2.tif", x2, gt=(GT[0] + 90.0, *GT[1:]))
    with pytest.raises(InputError, match="not on the same grid"):
        pipeline.baseline_files("cva", t1, t2, str(tmp_path / "c.tif"), align=False)


@pytest.mark.parametrize(
    "case, words",
    [
        ("apart", "do not overlap"),
        ("no_crs", "has no coordinate reference system"),
        ("bands", "bands"),
        ("resampling", "Unknown resampling"),
    ],
)
def test_bad_pairs_are_refused_with_one_line(tmp_path, case, words):
    x1, x2 = smooth_pair()
    t1 = write(tmp_path / "t1.tif", x1)
    kwargs = {}
    if case == "apart":
        t2 = write(tmp_path / "t2.tif", x2, gt=(GT[0] + 100000.0, *GT[1:]))
    elif case == "no_crs":
        t2 = write(tmp_path / "t2.tif", x2, gt=(GT[0] + 60.0, *GT[1:]), epsg=None)
    elif case == "bands":
        t2 = write(tmp_path / "t2.tif", x2[:3], gt=(GT[0] + 60.0, *GT[1:]))
    else:
        t2 = write(tmp_path / "t2.tif", x2, gt=(GT[0] + 60.0, *GT[1:]))
        kwargs["resampling"] = "lanczos9"
    with pytest.raises(InputError, match=words) as err:
        pipeline.baseline_files("cva", t1, t2, str(tmp_path / "c.tif"), **kwargs)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "c.tif").exists()


def test_cli_aligns_by_default_and_refuses_with_no_align(tmp_path):
    from test_cli import cli

    x1, x2 = smooth_pair()
    t1 = write(tmp_path / "t1.tif", x1)
    t2 = write(tmp_path / "t2.tif", x2, gt=(GT[0] + 90.0, *GT[1:]))  # 3 columns to the east
    r = cli("baseline", "cva", t1, t2, "-o", str(tmp_path / "c.tif"), "--resampling", "nearest")
    assert r.returncode == 0, r.stderr
    assert "Align: T2 (t2.tif) warped onto T1's grid (EPSG:32633" in r.stderr
    assert read(tmp_path / "c.tif")[0].shape == (60, 67)
    r = cli("baseline", "cva", t1, t2, "-o", str(tmp_path / "d.tif"), "--no-align")
    assert r.returncode == 2 and "not on the same grid" in r.stderr and not (tmp_path / "d.tif").exists()


# ------------------------------------------------------------- the windowed route (pairs over the memory budget)


def shifted_pair(tmp_path, rows: int = 60, cols: int = 70, dc: int = 7, dr: int = 4) -> tuple[str, str]:
    """T1 and a T2 on a grid ``dc`` columns right and ``dr`` rows down of T1's (nodata beyond the scene)."""
    x1, x2 = smooth_pair(rows, cols)
    shifted = np.full(x2.shape, -9999.0)
    shifted[:, : rows - dr, : cols - dc] = x2[:, dr:, dc:]
    gt2 = (GT[0] + dc * GT[1], GT[1], 0.0, GT[3] + dr * GT[5], 0.0, GT[5])
    return write(tmp_path / "t1.tif", x1), write(tmp_path / "t2_shifted.tif", shifted, gt=gt2)


def _features(path) -> list[tuple]:
    from osgeo import ogr

    ds = ogr.Open(str(path))
    out = sorted(
        (f["pixels"], f["area_ha"], round(f["mean_intensity"], 3), f.GetGeometryRef().ExportToWkt())
        for f in ds.GetLayer(0)
    )
    ds = None
    return out


def test_windowed_route_aligns_and_polygonises_like_the_in_memory_route(tmp_path):
    """Detect Change over the memory budget (read, trained and detected by windows) on a pair that needs ALIGN,
    with polygons: the same change map and polygons as in memory, the intensity to float rounding. Both budgets
    get the same training crops here (a tiny budget shrinks them to one 16-pixel crop a step, memory.crop_plan),
    so the routes train alike; the report of the windowed pair shows the warped T2."""
    from hypernet_qgis.core.hypernet.training import TrainConfig
    from hypernet_qgis.core.io.polygons import finish_detection
    from hypernet_qgis.core.report.report import write_detection_report

    t1, t2 = shifted_pair(tmp_path)
    got = {}
    for name, budget in (("memory", 4096), ("windows", 0.02)):
        cfg = TrainConfig(epochs=3, device="cpu", crop_size=16, pixels_per_step=256, memory_budget_mb=budget)
        res = pipeline.detect_files(
            t1,
            t2,
            str(tmp_path / f"{name}.tif"),
            intensity_out=str(tmp_path / f"{name}_i.tif"),
            config=cfg,
            evidence="hypernet",
            resampling="nearest",
        )
        finish_detection(res, polygons_out=str(tmp_path / f"{name}.gpkg"), memory_budget_mb=budget)
        assert "warped onto T1's grid" in res.extra["align"]
        assert res.extra.get("streamed", False) is (name == "windows")
        write_detection_report(str(tmp_path / f"{name}.html"), res)
        got[name] = (
            read(tmp_path / f"{name}.tif"),
            read(tmp_path / f"{name}_i.tif")[0],
            _features(tmp_path / f"{name}.gpkg"),
        )
    (mem, mem_gt, mem_crs), mem_i, mem_p = got["memory"]
    (win, win_gt, win_crs), win_i, win_p = got["windows"]
    assert mem.shape == (56, 63) and (mem_gt, mem_crs) == (win_gt, win_crs)
    assert np.array_equal(mem, win) and (mem == 1).sum() > 100
    assert np.max(np.abs(mem_i - win_i)) <= 1e-4 * (mem_i.max() - mem_i[mem_i > -9999].min())
    assert mem_p == win_p and len(mem_p) >= 1
    assert "t2_shifted.tif" in (tmp_path / "windows.html").read_text(encoding="utf-8")
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".vrt")]


def test_cli_windowed_detect_with_align_and_polygons(tmp_path):
    """The CLI with --memory-budget-mb 1 on a 5 x 130 x 140 pair (1.4 MB in memory) that needs ALIGN: read and
    detected by windows, with a model file (so both routes use the same network) the default (fused) change map
    and polygons equal the default budget's; training on the fly, the windowed route fuses too (IR-MAD by
    strips of the scratch files; it used to fall back to HyperNet alone)."""
    from test_cli import cli

    t1, t2 = shifted_pair(tmp_path, rows=130, cols=140)
    model = str(tmp_path / "m.hypernet")
    r = cli("train", t1, t2, "-o", model, "--epochs", "2", "--device", "cpu", "--quiet")
    assert r.returncode == 0, r.stderr
    runs = {}
    for name, budget in (("memory", "4096"), ("windows", "1")):
        r = cli(
            "detect",
            t1,
            t2,
            "--model",
            model,
            "-o",
            str(tmp_path / f"{name}.tif"),
            "--polygons",
            str(tmp_path / f"{name}.gpkg"),
            "--report",
            str(tmp_path / f"{name}.html"),
            "--memory-budget-mb",
            budget,
            "--device",
            "cpu",
        )
        assert r.returncode == 0, r.stderr
        assert "Align: T2 (t2_shifted.tif) warped onto T1's grid" in r.stderr
        assert ("read, standardised and used by windows" in r.stderr) is (name == "windows")
        runs[name] = read(tmp_path / f"{name}.tif")[0], _features(tmp_path / f"{name}.gpkg")
    assert np.array_equal(runs["memory"][0], runs["windows"][0]) and runs["memory"][0].shape == (126, 133)
    assert runs["memory"][1] == runs["windows"][1]
    r = cli(
        "detect",
        t1,
        t2,
        "-o",
        str(tmp_path / "fused.tif"),
        "--epochs",
        "1",
        "--memory-budget-mb",
        "1",
        "--device",
        "cpu",
        "--polygons",
        str(tmp_path / "fused.gpkg"),
    )
    assert r.returncode == 0, r.stderr
    assert "IR-MAD reads the windowed pair by strips" in r.stderr and (tmp_path / "fused.gpkg").exists()


def test_reports_of_an_aligned_pair_show_the_warped_dates(tmp_path):
    """The training report's pictures come from the warped T2 (the files it records are the user's, on other
    grids than the training mask)."""
    from hypernet_qgis.core.hypernet.training import TrainConfig
    from hypernet_qgis.core.report.report import write_training_report

    t1, t2 = shifted_pair(tmp_path)
    res = pipeline.train_files(t1, t2, str(tmp_path / "m.hypernet"), config=TrainConfig(epochs=1, device="cpu"))
    assert res.extra["inputs"]["t2"] == t2 and res.report_images[0].shape[1:] == res.training_mask.shape
    write_training_report(str(tmp_path / "train.html"), res)
    assert (tmp_path / "train.html").read_text(encoding="utf-8").count("<img") >= 3
