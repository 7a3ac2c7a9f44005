#!/usr/bin/env python3
"""The first-use prompt in the real QGIS desktop (under xvfb) when QGIS's Python has no torch.

QGIS starts without the checkout's venv on its path (the system Python here has no torch) in a throw-away profile
with the plugin enabled. The startup script then records, as JSON:

1. start-up: the message-bar line ("... need the HyperNet engine ...", buttons "Set up the engine..." and
   "Not now"), and a screenshot of it (qgis_engine_prompt.png);
2. "Set up the engine..." clicked: the dialog that opens (Set up the HyperNet engine), closed again;
3. the Raster menu action "HyperNet change detection...": the dialog it opens without the engine;
4. Detect Change's dialog, Run: the refusal QGIS shows (its one line), the message-bar line shown again beside
   it, and a screenshot (qgis_engine_refusal.png); torch still not imported by QGIS;
5. "Not now": the setting that keeps the start-up line away.

    .venv/bin/python tools/desktop_engine_prompt.py --shots build/shots
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

STARTUP = r'''
import json, os, sys, traceback
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QAction, QApplication, QMessageBox, QPushButton
from qgis.core import QgsProject, QgsRasterLayer, QgsSettings
from qgis.utils import iface

REPORT = os.environ["HYPERNET_SHOT_JSON"]
SAMPLE = os.environ["HYPERNET_E2E_SAMPLE"]
SHOTS = os.environ.get("HYPERNET_E2E_SHOTS", "")
state = {"errors": [], "steps": {}}


def grab(name):
    if SHOTS:
        QApplication.processEvents()
        QApplication.primaryScreen().grabWindow(0).save(os.path.join(SHOTS, name), "PNG")


def prompt():
    """The engine prompt in the main window's message bar: its text and buttons, or None."""
    item = next((i for i in iface.messageBar().items() if i.objectName() == "hypernetEnginePrompt"), None)
    if item is None:
        return None
    return {"text": item.text() if hasattr(item, "text") else "",
            "buttons": [b.text() for b in item.findChildren(QPushButton) if b.text()]}


def top_dialogs():
    return [w for w in QApplication.topLevelWidgets() if w.isVisible() and w is not iface.mainWindow()
            and hasattr(w, "reject")]


def guarded(fn):
    def run(*args):
        try:
            fn(*args)
        except Exception:
            state["errors"].append(traceback.format_exc())
            finish()
    return run


def when_dialog(record, then, tries=[0]):
    """Wait for a modal dialog, record it (record(dialog)), then go on with ``then``."""
    @guarded
    def look():
        shown = top_dialogs()
        if not shown:
            tries[0] += 1
            if tries[0] > 40:
                raise RuntimeError("no dialog opened")
            QTimer.singleShot(250, look)
            return
        tries[0] = 0
        record(shown[0])
    QTimer.singleShot(250, look)


@guarded
def start():
    screen = QApplication.primaryScreen().geometry()
    iface.mainWindow().setGeometry(0, 0, screen.width(), screen.height())
    for name, title in (("t1", "Taizhou 2000 (T1)"), ("t2", "Taizhou 2003 (T2)")):
        layer = QgsRasterLayer(os.path.join(SAMPLE, name + ".tif"), title)
        QgsProject.instance().addMapLayer(layer)
        state[name + "_id"] = layer.id()
    iface.mapCanvas().zoomToFullExtent()
    state["torch_importable"] = __import__("importlib").util.find_spec("torch") is not None
    state["steps"]["start"] = {"prompt": prompt()}
    QTimer.singleShot(1500, shot_start)


@guarded
def shot_start():
    grab("qgis_engine_prompt.png")
    button = iface.messageBar().findChild(QPushButton, "hypernetEngineSetupButton")

    def record(dialog):
        state["steps"]["button"] = {"dialog": dialog.windowTitle(), "prompt_after": prompt()}
        dialog.reject()
        QTimer.singleShot(800, menu_action)

    when_dialog(record, None)
    button.click()  # modal: returns when record() has closed the dialog


@guarded
def menu_action():
    action = iface.mainWindow().findChild(QAction, "hypernetDetectChangeAction")

    def record(dialog):
        state["steps"]["menu"] = {"action": action.text(), "dialog": dialog.windowTitle(), "prompt": prompt()}
        dialog.reject()
        QTimer.singleShot(800, detect_run)

    iface.messageBar().clearWidgets()
    when_dialog(record, None)
    action.trigger()


@guarded
def detect_run():
    import processing
    iface.messageBar().clearWidgets()
    step = state["steps"]["refusal"] = {}
    dialog = processing.createAlgorithmDialog("hypernet:detectchange", {
        "INPUT_T1": state["t1_id"], "INPUT_T2": state["t2_id"]})
    dialog.resize(700, 560)
    dialog.move(420, 170)
    dialog.show()

    @guarded
    def look_for_box(tries=[0]):
        boxes = [w for w in QApplication.topLevelWidgets() if isinstance(w, QMessageBox) and w.isVisible()]
        if not boxes:
            tries[0] += 1
            if tries[0] > 40:
                raise RuntimeError("Run showed no refusal")
            QTimer.singleShot(250, look_for_box)
            return
        QApplication.processEvents()
        step["title"], step["message"] = boxes[0].windowTitle(), boxes[0].text()
        step["prompt"] = prompt()
        step["torch_loaded"] = "torch" in sys.modules
        grab("qgis_engine_refusal.png")
        boxes[0].accept()
        QTimer.singleShot(500, lambda: after_refusal(dialog))

    QTimer.singleShot(1500, look_for_box)
    QTimer.singleShot(800, dialog.runButton().click)


@guarded
def after_refusal(dialog):
    dialog.close()
    step = state["steps"]["not_now"] = {}
    # the start-up line again (a new session would show it): "Not now" stores the setting and hides it
    plugin = __import__("qgis.utils").utils.plugins["hypernet_qgis"]
    iface.messageBar().clearWidgets()
    QTimer.singleShot(300, lambda: not_now(plugin, step))


@guarded
def not_now(plugin, step):
    step["shown_again"] = plugin.offer_engine_setup()
    buttons = [b for b in iface.messageBar().findChildren(QPushButton, "hypernetEngineLaterButton") if b.isVisible()]
    buttons[0].click()
    QTimer.singleShot(500, lambda: after_not_now(plugin, step))


@guarded
def after_not_now(plugin, step):
    step["setting"] = QgsSettings().value("hypernet/engine_prompt", "")
    step["prompt_after"] = prompt()
    step["shown_after_not_now"] = plugin.offer_engine_setup()
    finish()


def finish():
    if state.get("done"):
        return
    state["done"] = True
    state["torch_loaded_at_end"] = "torch" in sys.modules
    with open(REPORT, "w") as fh:
        json.dump(state, fh)
    QgsProject.instance().clear()
    QgsProject.instance().setDirty(False)
    QTimer.singleShot(300, iface.actionExit().trigger)


QTimer.singleShot(4000, start)
'''


def _screenshot_tool():
    spec = importlib.util.spec_from_file_location("screenshot_qgis", REPO / "tools" / "screenshot_qgis.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(shots: Path | None = None, timeout: int = 240) -> dict:
    """Run the scenario in QGIS without torch; screenshots to ``shots`` (none when None)."""
    env = {"HYPERNET_E2E_SAMPLE": str(REPO / "resources" / "sample" / "taizhou_crop"), "PYTHONFAULTHANDLER": "1"}
    if shots is not None:
        shots.mkdir(parents=True, exist_ok=True)
        env["HYPERNET_E2E_SHOTS"] = str(shots.resolve())
    work = Path(tempfile.mkdtemp(prefix="hypernet-prompt-"))
    return _screenshot_tool().take(
        work / "unused.png", timeout=timeout, startup=STARTUP, env_extra=env, venv=False, keep=work
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shots", type=Path, default=None, help="save the screenshots in this folder")
    parser.add_argument("--timeout", type=int, default=240)
    args = parser.parse_args(argv)
    state = run(args.shots, args.timeout)
    print(json.dumps(state, indent=1))
    return 0 if not state.get("errors") else 1


if __name__ == "__main__":
    sys.exit(main())
