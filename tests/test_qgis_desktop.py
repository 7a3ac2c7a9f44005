"""The real QGIS desktop under xvfb, driven the way a user works (tools/desktop_e2e.py): the Raster menu action's
dialog, batch mode and the shipped model each put named, styled change maps into the Layers panel."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    shutil.which("xvfb-run") is None or shutil.which("qgis") is None,
    reason="xvfb-run or the qgis desktop is not installed",
)

RED = [227, 26, 28, 255]


@pytest.fixture(scope="module")
def desktop(tmp_path_factory) -> dict:
    spec = importlib.util.spec_from_file_location("desktop_e2e", REPO / "tools" / "desktop_e2e.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    work = tmp_path_factory.mktemp("desktop")
    state = module.run(work / "out", shots=work / "shots", timeout=420)
    state["work"] = str(work)
    return state


def _names(layers: list[dict]) -> list[str]:
    return [row["name"] for row in layers]


def _check_change_layer(row: dict, path: str) -> None:
    assert os.path.realpath(row["source"]) == os.path.realpath(path)
    assert row["renderer"] == "QgsPalettedRasterRenderer"  # styled from the .qml
    assert row["palette"]["1"] == RED and row["palette"]["0"][3] == 0  # change red, no change transparent
    assert row["nodata"] == 255.0  # nodata not drawn


def test_no_error_and_no_critical_message(desktop):
    assert desktop["errors"] == [], desktop["errors"]
    assert desktop["critical"] == [], desktop["critical"]
    for step in ("dialog", "batch", "model"):
        log = desktop["steps"][step].get("log", "")
        assert "not correctly generated" not in log and "Traceback" not in log, (step, log)


def test_raster_menu_dialog_run_loads_the_change_map_on_top(desktop):
    step = desktop["steps"]["dialog"]
    assert desktop["action"] == "HyperNet change detection..." and step["title"] == "Detect Change"
    # T1 and T2 default to the two images of the project, oldest first, not the same layer twice
    assert step["default_t1"] == desktop["t1_id"] and step["default_t2"] == desktop["t2_id"]
    assert step["ok"] is True, step
    names = _names(step["layers"])
    assert names == ["taizhou_change", "taizhou_intensity", "Taizhou 2003 (T2)", "Taizhou 2000 (T1)"], names
    _check_change_layer(step["layers"][0], step["results"]["OUTPUT_CHANGE"])
    assert step["layers"][1]["renderer"] == "QgsSingleBandPseudoColorRenderer"


def test_two_row_batch_loads_two_distinct_maps(desktop):
    layers = {row["name"]: row for row in desktop["steps"]["batch"]["layers"]}
    work = Path(desktop["work"]) / "out"
    for tag in ("a", "b"):
        name = f"batch_{tag}_change"
        assert name in layers, list(layers)
        _check_change_layer(layers[name], str(work / f"{name}.tif"))


def test_shipped_model_runs_from_its_dialog(desktop):
    step = desktop["steps"]["model"]
    assert step["ok"] is True, step
    top = step["layers"][0]
    assert top["name"] == "model_change"
    _check_change_layer(top, step["results"]["detect:Change map"])
    assert Path(step["results"]["evaluate:Evaluation report"]).is_file()
    assert Path(step["results"]["train:Model file"]).is_file()


def test_screenshots_show_the_map(desktop):
    from qgis.PyQt.QtGui import QImage

    image = QImage(str(Path(desktop["work"]) / "shots" / "qgis_change_over_t2.png"))
    assert not image.isNull() and image.width() >= 1000
    reds = sum(
        1
        for x in range(0, image.width(), 7)
        for y in range(0, image.height(), 7)
        if QImage.pixel(image, x, y) & 0xFFFFFF == 0xE31A1C
    )
    assert reds > 50  # the red change pixels are drawn on the canvas
