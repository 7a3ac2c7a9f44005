"""The first-use prompt in the real QGIS desktop under xvfb, for a QGIS whose Python has no torch (the system
Python here; tools/desktop_engine_prompt.py drives it): the start-up line with its buttons, the set-up dialog it
opens, the menu action without the engine, Detect Change's one-line refusal with the line again, "Not now"."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    shutil.which("xvfb-run") is None or shutil.which("qgis") is None,
    reason="xvfb-run or the qgis desktop is not installed",
)


@pytest.fixture(scope="module")
def desktop(tmp_path_factory) -> dict:
    if subprocess.run(["/usr/bin/python3", "-c", "import torch"], capture_output=True).returncode == 0:
        pytest.skip("the system Python imports torch: this test needs a QGIS without it")
    spec = importlib.util.spec_from_file_location("desktop_engine_prompt", REPO / "tools" / "desktop_engine_prompt.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    shots = tmp_path_factory.mktemp("shots")
    state = module.run(shots, timeout=300)
    state["shots"] = str(shots)
    return state


def test_no_error_and_no_torch_in_qgis(desktop):
    assert desktop["errors"] == [], desktop["errors"]
    assert desktop["torch_importable"] is False  # the case this is about
    assert desktop["torch_loaded_at_end"] is False


def test_start_up_offers_the_set_up(desktop):
    prompt = desktop["steps"]["start"]["prompt"]
    assert prompt is not None, "no message-bar line at start-up"
    assert "need the HyperNet engine" in prompt["text"]
    assert prompt["buttons"] == ["Set up the engine...", "Not now"]
    button = desktop["steps"]["button"]
    assert button["dialog"] == "Set up the HyperNet engine" and button["prompt_after"] is None


def test_the_menu_action_opens_the_set_up_without_the_engine(desktop):
    menu = desktop["steps"]["menu"]
    assert menu["action"] == "HyperNet change detection..." and menu["dialog"] == "Set up the HyperNet engine"
    assert "Detect Change needs the HyperNet engine" in menu["prompt"]["text"]


def test_detect_change_refuses_in_one_line_naming_the_set_up(desktop):
    refusal = desktop["steps"]["refusal"]
    message = refusal["message"]
    assert "\n" not in message and "Set up the HyperNet engine (hypernet:setupengine" in message, message
    assert "'torch'" in message and "/usr/bin/python3" in message  # QGIS's Python, not the first python3 on PATH
    assert refusal["prompt"] is not None and refusal["prompt"]["buttons"] == ["Set up the engine..."]
    assert refusal["torch_loaded"] is False


def test_not_now_keeps_the_start_up_line_away(desktop):
    step = desktop["steps"]["not_now"]
    assert step["shown_again"] is True and step["setting"] == "never"
    assert step["prompt_after"] is None and step["shown_after_not_now"] is False


def test_screenshots(desktop):
    from qgis.PyQt.QtGui import QImage

    for name in ("qgis_engine_prompt.png", "qgis_engine_refusal.png"):
        image = QImage(str(Path(desktop["shots"]) / name))
        assert not image.isNull() and image.width() >= 1000, name
        # the message bar's Info background (#e7f5fe) across the top of the map area: the line is drawn
        info = sum(
            1
            for x in range(400, image.width(), 10)
            for y in range(90, 160, 4)
            if QImage.pixel(image, x, y) & 0xFFFFFF == 0xE7F5FE
        )
        assert info > 100, (name, info)
