#!/usr/bin/env python3
"""End-to-end run of the real QGIS desktop (under xvfb), the way a user works, with screenshots.

In a throw-away profile with the plugin enabled, the startup script loads the Taizhou sample pair as two layers
and then, one after the other:

1. triggers the Raster menu action "HyperNet change detection..." (the modal Detect Change dialog opens), reads
   the dialog's default T1/T2, sets a few epochs and two named outputs, presses Run and waits for the task;
2. opens Detect Change in batch mode with two rows and runs it;
3. opens the shipped model "Train and detect, then evaluate" from the provider and runs it through its dialog;

and after each step records what is in the Layers panel (names top to bottom, sources, renderers, palette
colours, nodata), what the dialogs logged, and every CRITICAL message of the message log, as JSON. Screenshots:
the dialog before Run, and the change map over T2 in the map canvas (docs/qgis_change_over_t2.png).

    .venv/bin/python tools/desktop_e2e.py --shots docs            # run, print the findings, save screenshots
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
import json, os, traceback
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QAction, QApplication, QTextEdit
from qgis.core import Qgis, QgsApplication, QgsProject, QgsRasterLayer
from qgis.utils import iface

REPORT = os.environ["HYPERNET_SHOT_JSON"]
SAMPLE = os.environ["HYPERNET_E2E_SAMPLE"]
WORK = os.environ["HYPERNET_E2E_WORK"]
SHOTS = os.environ.get("HYPERNET_E2E_SHOTS", "")
state = {"errors": [], "critical": [], "steps": {}}


def logged(message, tag, level):
    if level == Qgis.Critical:
        state["critical"].append(f"{tag}: {message}")


def layers_panel():
    """What the Layers panel shows, top to bottom."""
    from qgis.core import QgsPalettedRasterRenderer
    out = []
    for node in QgsProject.instance().layerTreeRoot().findLayers():
        layer = node.layer()
        row = {"name": layer.name(), "source": layer.source(), "renderer": type(layer.renderer()).__name__,
               "visible": node.isVisible()}
        if isinstance(layer.renderer(), QgsPalettedRasterRenderer):
            row["palette"] = {int(c.value): [c.color.red(), c.color.green(), c.color.blue(), c.color.alpha()]
                              for c in layer.renderer().classes()}
            row["nodata"] = layer.dataProvider().sourceNoDataValue(1)
        out.append(row)
    return out


def grab(name, widget=None):
    if not SHOTS:
        return
    QApplication.processEvents()
    pixmap = (widget.grab() if widget is not None else QApplication.primaryScreen().grabWindow(0))
    pixmap.save(os.path.join(SHOTS, name), "PNG")


def guarded(fn):
    def run(*args):
        try:
            fn(*args)
        except Exception:
            state["errors"].append(traceback.format_exc())
            finish()
    return run


def log_text(dialog):
    """The text of a Processing dialog's Log tab."""
    return "\n".join(w.toPlainText() for w in dialog.findChildren(QTextEdit) if "log" in w.objectName().lower())


def dialog_widgets():
    return [w for w in QApplication.topLevelWidgets() if w.isVisible() and hasattr(w, "runButton")]


@guarded
def start():
    screen = QApplication.primaryScreen().geometry()
    iface.mainWindow().setGeometry(0, 0, screen.width(), screen.height())
    QgsApplication.messageLog().messageReceived.connect(logged)
    for name, title in (("t1", "Taizhou 2000 (T1)"), ("t2", "Taizhou 2003 (T2)")):
        layer = QgsRasterLayer(os.path.join(SAMPLE, name + ".tif"), title)
        assert layer.isValid(), name
        renderer = layer.renderer()
        renderer.setRedBand(3)  # Landsat bands 3, 2, 1: true colour
        renderer.setBlueBand(1)
        from qgis.core import QgsContrastEnhancement, QgsRasterMinMaxOrigin
        layer.setContrastEnhancement(QgsContrastEnhancement.StretchToMinimumMaximum,
                                     QgsRasterMinMaxOrigin.CumulativeCut)
        QgsProject.instance().addMapLayer(layer)
        state[name + "_id"] = layer.id()
    iface.mapCanvas().zoomToFullExtent()
    action = iface.mainWindow().findChild(QAction, "hypernetDetectChangeAction")
    state["action"] = action.text() if action is not None else None
    QTimer.singleShot(2000, drive_dialog)
    action.trigger()  # modal: returns when the dialog has closed
    QTimer.singleShot(1500, after_dialog)


@guarded
def drive_dialog(tries=[0]):
    shown = dialog_widgets()
    if not shown:
        tries[0] += 1
        if tries[0] > 30:
            raise RuntimeError("the Detect Change dialog did not open")
        QTimer.singleShot(500, drive_dialog)
        return
    dialog = shown[0]
    step = state["steps"]["dialog"] = {"title": dialog.windowTitle()}
    defaults = dialog.createProcessingParameters()
    step["default_t1"], step["default_t2"] = str(defaults.get("INPUT_T1")), str(defaults.get("INPUT_T2"))
    dialog.resize(760, 700)
    dialog.setParameters({"INPUT_T1": defaults["INPUT_T1"], "INPUT_T2": defaults["INPUT_T2"], "EPOCHS": 5,
                          "SEED": 0, "OUTPUT_CHANGE": os.path.join(WORK, "taizhou_change.tif"),
                          "OUTPUT_INTENSITY": os.path.join(WORK, "taizhou_intensity.tif")})
    grab("qgis_detect_dialog.png", dialog)

    def finished(ok, results):
        step["ok"], step["results"] = bool(ok), {k: str(v) for k, v in dict(results).items()}
        step["log"] = log_text(dialog)
        QTimer.singleShot(500, dialog.close)

    dialog.algorithmFinished.connect(finished)
    dialog.runButton().click()


@guarded
def after_dialog():
    step = state["steps"]["dialog"]
    step["layers"] = layers_panel()
    # the picture for the README: the change map over T2 (the intensity hidden, T1 below)
    root = QgsProject.instance().layerTreeRoot()
    for node in root.findLayers():
        if node.layer().name() in ("taizhou_intensity", "Taizhou 2000 (T1)"):
            node.setItemVisibilityChecked(False)
    iface.mapCanvas().zoomToFullExtent()
    iface.mapCanvas().refreshAllLayers()
    QTimer.singleShot(3000, shot_map)


@guarded
def shot_map():
    grab("qgis_change_over_t2.png")
    QTimer.singleShot(200, run_batch)


@guarded
def run_batch():
    from processing.gui.BatchAlgorithmDialog import BatchAlgorithmDialog
    from processing.tools import dataobjects
    alg = QgsApplication.processingRegistry().createAlgorithmById("hypernet:detectchange")
    dialog = BatchAlgorithmDialog(alg, parent=iface.mainWindow())
    dialog.show()
    panel = dialog.mainWidget()
    context = dataobjects.createContext()
    panel.clear()
    panel.checkLoadLayersOnCompletion.setChecked(True)  # "Load layers on completion", as a user ticks it
    for row, tag in enumerate(("a", "b")):
        panel.addRow()
        values = {"INPUT_T1": state["t1_id"], "INPUT_T2": state["t2_id"], "EPOCHS": 2, "SEED": row}
        for name, value in values.items():
            panel.wrappers[row][panel.parameter_to_column[name]].setParameterValue(value, context)
        column = panel.parameter_to_column["OUTPUT_CHANGE"]
        panel.tblParameters.cellWidget(row + 1, column).setValue(os.path.join(WORK, f"batch_{tag}_change.tif"))
    dialog.runAlgorithm()  # runs the rows in this thread, then loads the results
    state["steps"]["batch"] = {"log": log_text(dialog),
                               "layers": layers_panel()}
    dialog.close()
    QTimer.singleShot(500, run_model)


@guarded
def run_model():
    import processing
    provider = QgsApplication.processingRegistry().providerById("hypernet")
    models = [a for a in provider.algorithms() if a.id().startswith("hypernet:Train and detect")]
    assert models, "the shipped model is not in the provider"
    step = state["steps"]["model"] = {"id": models[0].id()}
    dialog = processing.createAlgorithmDialog(models[0].id(), {
        "T1": state["t1_id"], "T2": state["t2_id"], "REFERENCE": os.path.join(SAMPLE, "reference.tif"),
        "EPOCHS": 3, "SEED": 0,
        "train:Model file": os.path.join(WORK, "model_taizhou.hypernet"),
        "detect:Change map": os.path.join(WORK, "model_change.tif"),
        "evaluate:Evaluation report": os.path.join(WORK, "model_evaluation.html")})
    dialog.show()

    def finished(ok, results):
        step["ok"] = bool(ok)
        step["results"] = {k: str(v) for k, v in dict(results).items() if k != "CHILD_RESULTS"}
        step["log"] = log_text(dialog)
        QTimer.singleShot(500, dialog.close)
        QTimer.singleShot(1500, after_model)

    dialog.algorithmFinished.connect(finished)
    dialog.runButton().click()


@guarded
def after_model():
    state["steps"]["model"]["layers"] = layers_panel()
    finish()


def finish():
    if state.get("done"):
        return
    state["done"] = True
    try:
        QgsApplication.messageLog().messageReceived.disconnect(logged)
    except Exception:
        pass
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


def run(work: Path, shots: Path | None = None, timeout: int = 300) -> dict:
    """Run the scenario; outputs go to ``work``, screenshots to ``shots`` (none when None)."""
    sample = REPO / "resources" / "sample" / "taizhou_crop"
    work.mkdir(parents=True, exist_ok=True)
    env = {"HYPERNET_E2E_SAMPLE": str(sample), "HYPERNET_E2E_WORK": str(work)}
    if shots is not None:
        shots.mkdir(parents=True, exist_ok=True)
        env["HYPERNET_E2E_SHOTS"] = str(shots.resolve())
    return _screenshot_tool().take(work / "unused.png", timeout=timeout, startup=STARTUP, env_extra=env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shots", type=Path, default=None, help="save the screenshots in this folder")
    parser.add_argument("--work", type=Path, default=None, help="outputs here (default: a temporary folder)")
    parser.add_argument("--timeout", type=int, default=300)
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="hypernet-e2e-"))
    state = run(work, args.shots, args.timeout)
    print(json.dumps(state, indent=1))
    return 0 if not state.get("errors") else 1


if __name__ == "__main__":
    sys.exit(main())
