"""Detect change in a time series from QGIS: run the dialog way (first change, number of changes and polygons in
the project), and bad series refused before the run."""

from __future__ import annotations

import numpy as np
import pytest
from osgeo import gdal
from test_qgis_dialog_flow import _tree_names, clean_project, run_like_the_dialog  # noqa: F401 (fixture)
from test_qgis_polygons import check_polygon_style
from test_qgis_process import wrapper  # noqa: F401 (fixture)
from test_qgis_support import hypernet_provider  # noqa: F401 (fixture)
from test_series import A, B, dates_stack


def test_series_the_dialog_way(clean_project, tmp_path):  # noqa: F811
    images = dates_stack(tmp_path, 3)
    out = tmp_path / "series"
    state = run_like_the_dialog(
        "hypernet:detectseries",
        {"INPUTS": images, "DATES": "2018-01-01,2019-01-01,2020-01-01", "METHOD": "cva", "OUTPUT_FOLDER": str(out)},
    )
    assert state["ok"] is True and state["loaded"] is True, state
    assert state["errors"] == [] and state["critical"] == [], state
    res = state["results"]
    first = gdal.Open(res["FIRST_CHANGE"]).ReadAsArray()
    assert np.all(first[A] == 1) and np.all(first[B] == 2)
    assert (out / "change_1_2018-01-01_2019-01-01.tif").exists()
    names = _tree_names()
    assert names[0] == "Change polygons of the series", names
    assert {"First change (pair number)", "Number of changes"} <= set(names)
    from qgis.core import QgsProject

    check_polygon_style(QgsProject.instance().mapLayersByName("Change polygons of the series")[0])
    check_series_styles("2018-01-01", "2019-01-01", "2020-01-01")
    assert (out / "first_change.qml").exists() and (out / "change_count.qml").exists()  # styled when reopened


def check_series_styles(*dates: str) -> None:
    """First change: paletted, one class per date pair labelled by its dates, early and late in different
    colours; number of changes: one class per count; 0 (no change) transparent, 65535 nodata not drawn."""
    from qgis.core import QgsPalettedRasterRenderer, QgsProject

    first = QgsProject.instance().mapLayersByName("First change (pair number)")[0]
    renderer = first.renderer()
    assert isinstance(renderer, QgsPalettedRasterRenderer), type(renderer)
    classes = {c.value: c for c in renderer.classes()}
    pairs = len(dates) - 1
    assert set(classes) == set(range(pairs + 1))
    assert classes[0].color.alpha() == 0 and classes[0].label == "No change"
    for k in range(1, pairs + 1):
        assert classes[k].label == f"{dates[k - 1]} → {dates[k]}" and classes[k].color.alpha() == 255
    assert classes[1].color != classes[pairs].color
    assert first.dataProvider().sourceNoDataValue(1) == 65535
    count = QgsProject.instance().mapLayersByName("Number of changes")[0]
    renderer = count.renderer()
    assert isinstance(renderer, QgsPalettedRasterRenderer), type(renderer)
    labels = {c.value: c.label for c in renderer.classes()}
    assert labels == {0: "No change", 1: "1 change", **{k: f"{k} changes" for k in range(2, pairs + 1)}}
    assert {c.value: c.color.alpha() for c in renderer.classes()}[0] == 0


def test_hypernet_series_training_choice_and_align(hypernet_provider, tmp_path):  # noqa: F811
    """processing.run: one model for all pairs by default (OUTPUT_MODEL), a model per pair on request; a date on a
    moved grid is warped onto the first date's (ALIGN, default) or refused up front with ALIGN off."""
    import processing
    from qgis.core import QgsApplication, QgsProcessingContext, QgsProject
    from test_align import GT, write

    from hypernet_qgis.core.hypernet.model_file import read_metadata

    images = dates_stack(tmp_path, 3)
    images[2] = write(tmp_path / "d3_moved.tif", gdal.Open(images[2]).ReadAsArray(), gt=(GT[0] + 60.0, *GT[1:]))
    args = {
        "INPUTS": images,
        "DATES": "2018-01-01,2019-01-01,2020-01-01",
        "EPOCHS": 1,
        "DEVICE": "cpu",
        "POLYGONS": False,
    }
    shared = processing.run("hypernet:detectseries", {**args, "OUTPUT_FOLDER": str(tmp_path / "shared")})
    assert shared["OUTPUT_MODEL"] == str(tmp_path / "shared" / "series_model.hypernet")
    assert read_metadata(shared["OUTPUT_MODEL"])["pairs"] == 2
    first = gdal.Open(shared["FIRST_CHANGE"])
    assert first.GetGeoTransform() == GT and np.all(first.ReadAsArray()[:, :2] == 65535)  # date 3 does not reach
    per_pair = processing.run(
        "hypernet:detectseries", {**args, "TRAINING": "per-pair", "OUTPUT_FOLDER": str(tmp_path / "per_pair")}
    )
    assert not per_pair["OUTPUT_MODEL"] and not (tmp_path / "per_pair" / "series_model.hypernet").exists()
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    alg = QgsApplication.processingRegistry().createAlgorithmById("hypernet:detectseries")
    ok, message = alg.checkParameterValues({**args, "ALIGN": False, "OUTPUT_FOLDER": str(tmp_path / "off")}, context)
    assert not ok and "ALIGN is off" in message and "d3_moved.tif" in message, message


@pytest.mark.parametrize(
    "count, dates, words",
    [
        (1, "", "at least two dates"),
        (3, "2018-01-01,2019-01-01", "2 dates were given for 3 images"),
        (2, "2019-01-01,2019-01-01", "have the same date"),
    ],
)
def test_bad_series_are_refused_up_front(hypernet_provider, tmp_path, count, dates, words):  # noqa: F811
    from qgis.core import QgsApplication, QgsProcessingContext, QgsProject

    images = dates_stack(tmp_path, 3)[:count]
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    alg = QgsApplication.processingRegistry().createAlgorithmById("hypernet:detectseries")
    ok, message = alg.checkParameterValues(
        {"INPUTS": images, "DATES": dates, "METHOD": "cva", "OUTPUT_FOLDER": str(tmp_path / "out")}, context
    )
    assert not ok and words in message, message


def test_series_with_qgis_process(tmp_path, wrapper):  # noqa: F811
    from test_qgis_process import QGIS_PROCESS_BIN, results_of, run

    if not QGIS_PROCESS_BIN.exists():
        pytest.skip("qgis_process.bin is not installed")
    images = dates_stack(tmp_path, 3)
    res = results_of(
        run(
            wrapper,
            "--json",
            "run",
            "hypernet:detectseries",
            "--",
            *[f"INPUTS={p}" for p in images],
            "METHOD=cva",
            "DATES=2018-01-01,2019-01-01,2020-01-01",
            f"OUTPUT_FOLDER={tmp_path / 's'}",
        )
    )
    assert gdal.Open(res["CHANGE_COUNT"]).ReadAsArray()[B].min() == 1  # 3 dates: B changes once (2 -> 3)
    assert np.all(gdal.Open(res["FIRST_CHANGE"]).ReadAsArray()[B] == 2)
    assert (tmp_path / "s" / "change_polygons.gpkg").exists()
