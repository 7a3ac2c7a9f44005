"""The real desktop QGIS with the plugin, under xvfb: menu action, provider in the Toolbox, Detect Change dialog."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    shutil.which("xvfb-run") is None or shutil.which("qgis") is None,
    reason="xvfb-run or the qgis desktop is not installed",
)


def _tool():
    spec = importlib.util.spec_from_file_location("screenshot_qgis", REPO / "tools" / "screenshot_qgis.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_desktop_qgis_shows_the_plugin(tmp_path):
    out = tmp_path / "qgis.png"
    state = _tool().take(out, timeout=120)
    assert state["errors"] == []
    assert state["provider"] is True
    assert {
        "hypernet:trainhypernet",
        "hypernet:detectchange",
        "hypernet:evaluatechange",
        "hypernet:classicchange",
    } <= set(state["algorithms"])
    assert state["action"] == "HyperNet change detection..."  # initGui's menu/toolbar entry ...
    assert state["action_opens"] == "Detect Change"  # ... opens the Detect Change dialog
    assert state["toolbox"] is True and state["dialog"] is True and state["dialog_title"] == "Detect Change"
    # unload() removes the provider and the action
    assert state["unloaded"] is True
    assert state["provider_after_unload"] is False and state["action_after_unload"] is False
    # A real picture, not a blank screen.
    from qgis.PyQt.QtGui import QImage

    image = QImage(str(out))
    assert not image.isNull() and image.width() >= 1000 and image.height() >= 700
    colours = {image.pixel(x, y) for x in range(0, image.width(), 37) for y in range(0, image.height(), 29)}
    assert len(colours) > 20
