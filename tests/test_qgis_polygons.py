"""Change polygons from QGIS: run the dialog way (the project gets the polygons on top, styled), through
processing.run with MIN_AREA/SIEVE, through qgis_process, and the bad parameter values refused up front."""

from __future__ import annotations

import os

import numpy as np
import pytest
from osgeo import gdal, ogr
from test_qgis_dialog_flow import (
    TEMPORARY,
    _layer,
    _output,
    _tree_names,
    check_change_style,
    clean_project,  # noqa: F401 (fixture)
    run_like_the_dialog,
)
from test_qgis_process import QGIS_PROCESS_BIN, results_of, run, wrapper  # noqa: F401 (fixture)
from test_qgis_support import hypernet_provider, pair_dir, same_crs, trained_model  # noqa: F401 (fixtures)


def check_polygon_style(layer) -> None:
    """Red outline, no or a light fill."""
    from qgis.core import QgsSingleSymbolRenderer

    renderer = layer.renderer()
    assert isinstance(renderer, QgsSingleSymbolRenderer), type(renderer)
    symbol = renderer.symbol()
    fill = symbol.symbolLayer(0)
    outline = fill.strokeColor()
    assert outline.red() > 200 and outline.green() < 80 and outline.alpha() == 255
    assert fill.color().alpha() <= 64  # light fill: the image beneath shows


def _features(path: str) -> list[dict]:
    ds = ogr.Open(path)
    return [f.items() for f in ds.GetLayer(0)]


@pytest.mark.parametrize("named", [True, False], ids=["named-files", "temporary-files"])
def test_classic_polygons_land_in_the_project_styled_on_top(clean_project, pair_dir, tmp_path, named):  # noqa: F811
    change = str(tmp_path / "harbour_cva.tif") if named else TEMPORARY
    poly = str(tmp_path / "harbour_cva_regions.gpkg") if named else TEMPORARY
    state = run_like_the_dialog(
        "hypernet:classicchange",
        {
            "METHOD": "cva",
            "INPUT_T1": str(pair_dir / "t1.tif"),
            "INPUT_T2": str(pair_dir / "t2.tif"),
            "OUTPUT_CHANGE": _output(change),
            "OUTPUT_POLYGONS": _output(poly),
        },
    )
    assert state["ok"] is True and state["loaded"] is True, state
    assert state["errors"] == [] and state["critical"] == [], state
    names = _tree_names()
    expected = ["harbour_cva_regions", "harbour_cva"] if named else ["Change polygons (CVA)", "Change map (CVA)"]
    assert names == expected, names  # the polygons above the change map
    layer = _layer(expected[0])
    check_polygon_style(layer)
    check_change_style(_layer(expected[1]))
    results = state["results"]
    path = results["OUTPUT_POLYGONS"]
    assert os.path.realpath(layer.source().split("|")[0]) == os.path.realpath(path)
    assert os.path.exists(os.path.splitext(path)[0] + ".qml")  # the sidecar: styled when opened later too
    assert layer.crs().authid() == "EPSG:32633" and layer.featureCount() == results["POLYGON_COUNT"] >= 1
    binary = gdal.Open(results["OUTPUT_CHANGE"]).ReadAsArray()
    feats = _features(path)
    assert sum(f["pixels"] for f in feats) == int((binary == 1).sum()) == results["CHANGED_PIXELS"]
    assert results["CHANGED_AREA_HA"] == pytest.approx((binary == 1).sum() * 100.0 / 1e4)  # 10 m pixels


def test_detect_change_polygons_with_min_area_and_sieve(
    hypernet_provider,
    pair_dir,
    trained_model,  # noqa: F811
    tmp_path,
):
    import processing

    args = {"INPUT_T1": str(pair_dir / "t1.tif"), "INPUT_T2": str(pair_dir / "t2.tif"), "MODEL": trained_model}
    first = processing.run(
        "hypernet:detectchange",
        {**args, "OUTPUT_CHANGE": str(tmp_path / "otsu.tif"), "OUTPUT_INTENSITY": str(tmp_path / "i.tif")},
    )
    intensity = gdal.Open(first["OUTPUT_INTENSITY"]).ReadAsArray()
    args.update(THRESHOLD_METHOD="fixed", THRESHOLD=float(np.percentile(intensity, 75)))  # many small regions
    plain = processing.run(
        "hypernet:detectchange",
        {
            **args,
            "OUTPUT_CHANGE": str(tmp_path / "all.tif"),
            "OUTPUT_POLYGONS": str(tmp_path / "all.gpkg"),
            "CONNECTIVITY": "4",
        },
    )
    sieved = processing.run(
        "hypernet:detectchange",
        {
            **args,
            "OUTPUT_CHANGE": str(tmp_path / "big.tif"),
            "OUTPUT_POLYGONS": str(tmp_path / "big.gpkg"),
            "CONNECTIVITY": "4",
            "MIN_AREA": 500.0,
            "SIEVE": True,
            "DATES": "2019-05-01,2020-05-01",
        },
    )
    every = _features(plain["OUTPUT_POLYGONS"])
    kept = _features(sieved["OUTPUT_POLYGONS"])
    assert len(every) == plain["POLYGON_COUNT"] and len(kept) == sieved["POLYGON_COUNT"]
    assert sorted(f["pixels"] for f in kept) == sorted(f["pixels"] for f in every if f["area"] >= 500.0)
    assert len(kept) < len(every)
    binary = gdal.Open(sieved["OUTPUT_CHANGE"]).ReadAsArray()
    assert int((binary == 1).sum()) == sum(f["pixels"] for f in kept) == sieved["CHANGED_PIXELS"]
    assert {f["date_t1"] for f in kept} == {"2019-05-01"}
    assert all(f["max_intensity"] >= f["mean_intensity"] > 0.0 for f in kept)


@pytest.mark.parametrize(
    "extra, words",
    [
        ({"SIEVE": True}, "Change polygons is not"),
        ({"OUTPUT_POLYGONS": "{tmp}/p.shp"}, "GeoPackage (.gpkg)"),
        ({"OUTPUT_POLYGONS": "{tmp}/p.gpkg", "DATES": "2019-05-01"}, "two dates"),
    ],
)
def test_bad_polygon_parameters_are_refused_up_front(
    hypernet_provider,
    pair_dir,
    tmp_path,
    extra,  # noqa: F811
    words,
):
    from qgis.core import QgsApplication, QgsProcessingContext, QgsProject

    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    params = {
        "METHOD": "cva",
        "INPUT_T1": str(pair_dir / "t1.tif"),
        "INPUT_T2": str(pair_dir / "t2.tif"),
        "OUTPUT_CHANGE": str(tmp_path / "c.tif"),
    }
    params.update({k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in extra.items()})
    for alg_id in ("hypernet:classicchange", "hypernet:detectchange"):
        alg = QgsApplication.processingRegistry().createAlgorithmById(alg_id)
        ok, message = alg.checkParameterValues(params, context)
        assert not ok and words in message, (alg_id, message)


@pytest.mark.skipif(not QGIS_PROCESS_BIN.exists(), reason="qgis_process.bin is not installed")
def test_qgis_process_writes_styled_polygons(wrapper, pair_dir, tmp_path):  # noqa: F811
    poly = tmp_path / "sam_regions.gpkg"
    res = results_of(
        run(
            wrapper,
            "--json",
            "run",
            "hypernet:classicchange",
            "--",
            "METHOD=sam",
            f"INPUT_T1={pair_dir / 't1.tif'}",
            f"INPUT_T2={pair_dir / 't2.tif'}",
            f"OUTPUT_CHANGE={tmp_path / 'sam.tif'}",
            f"OUTPUT_POLYGONS={poly}",
            "MIN_AREA=200",
            "CONNECTIVITY=4",
        )
    )
    assert res["OUTPUT_POLYGONS"] == str(poly) and res["POLYGON_COUNT"] == len(_features(str(poly))) >= 1
    assert res["CHANGED_AREA_HA"] > 0
    qml = (tmp_path / "sam_regions.qml").read_text()
    assert "SimpleFill" in qml and "227,26,28,255" in qml
    ds = ogr.Open(str(poly))
    assert same_crs(ds.GetLayer(0).GetSpatialRef().ExportToWkt())


def test_classic_change_aligns_a_shifted_t2_and_refuses_with_align_off(clean_project, pair_dir, tmp_path):  # noqa: F811,E501
    """ALIGN (default on): T2 on another grid is warped onto T1's; the dialog check accepts it; off: refused."""
    from qgis.core import QgsApplication, QgsProcessingContext, QgsProject
    from test_qgis_support import GEOTRANSFORM, write_tif

    x2 = gdal.Open(str(pair_dir / "t2.tif")).ReadAsArray()
    shifted = write_tif(tmp_path / "t2_shifted.tif", x2, geotransform=(GEOTRANSFORM[0] + 30.0, *GEOTRANSFORM[1:]))
    params = {
        "METHOD": "cva",
        "INPUT_T1": str(pair_dir / "t1.tif"),
        "INPUT_T2": shifted,
        "OUTPUT_CHANGE": _output(str(tmp_path / "aligned.tif")),
        "RESAMPLING": "nearest",
    }
    state = run_like_the_dialog("hypernet:classicchange", params)
    assert state["ok"] is True and state["loaded"] is True, state
    change = gdal.Open(state["results"]["OUTPUT_CHANGE"])
    assert (change.RasterXSize, change.RasterYSize) == (21, 24)  # the common area: 3 columns fewer
    assert change.GetGeoTransform()[0] == pytest.approx(GEOTRANSFORM[0] + 30.0)
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    alg = QgsApplication.processingRegistry().createAlgorithmById("hypernet:classicchange")
    ok, message = alg.checkParameterValues({**params, "ALIGN": False}, context)
    assert not ok and "not on the same grid" in message
    far = write_tif(tmp_path / "t2_far.tif", x2, geotransform=(GEOTRANSFORM[0] + 1e5, *GEOTRANSFORM[1:]))
    ok, message = alg.checkParameterValues({**params, "INPUT_T2": far}, context)
    assert not ok and "do not overlap" in message
