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
    state = run_like_the_dialog("hypernet:detectseries", {
        "INPUTS": images, "DATES": "2018-01-01,2019-01-01,2020-01-01", "METHOD": "cva",
        "OUTPUT_FOLDER": str(out)})
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


@pytest.mark.parametrize("count, dates, words", [
    (1, "", "at least two dates"),
    (3, "2018-01-01,2019-01-01", "2 dates were given for 3 images"),
    (2, "2019-01-01,2019-01-01", "have the same date"),
])
def test_bad_series_are_refused_up_front(hypernet_provider, tmp_path, count, dates, words):  # noqa: F811
    from qgis.core import QgsApplication, QgsProcessingContext, QgsProject

    images = dates_stack(tmp_path, 3)[:count]
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    alg = QgsApplication.processingRegistry().createAlgorithmById("hypernet:detectseries")
    ok, message = alg.checkParameterValues({"INPUTS": images, "DATES": dates, "METHOD": "cva",
                                            "OUTPUT_FOLDER": str(tmp_path / "out")}, context)
    assert not ok and words in message, message


def test_series_with_qgis_process(tmp_path, wrapper):  # noqa: F811
    from test_qgis_process import QGIS_PROCESS_BIN, results_of, run

    if not QGIS_PROCESS_BIN.exists():
        pytest.skip("qgis_process.bin is not installed")
    images = dates_stack(tmp_path, 3)
    res = results_of(run(wrapper, "--json", "run", "hypernet:detectseries", "--", *[f"INPUTS={p}" for p in images],
                         "METHOD=cva", "DATES=2018-01-01,2019-01-01,2020-01-01", f"OUTPUT_FOLDER={tmp_path / 's'}"))
    assert gdal.Open(res["CHANGE_COUNT"]).ReadAsArray()[B].min() == 1  # 3 dates: B changes once (2 -> 3)
    assert np.all(gdal.Open(res["FIRST_CHANGE"]).ReadAsArray()[B] == 2)
    assert (tmp_path / "s" / "change_polygons.gpkg").exists()
