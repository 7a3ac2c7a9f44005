#!/usr/bin/env python3
"""Screenshot of the real QGIS desktop with the HyperNet plugin: the provider in the Toolbox, Detect Change open.

Runs ``qgis`` under ``xvfb-run`` with a throw-away profile (the plugin enabled in it), QGIS_PLUGINPATH pointing at
the assembled plugin, and a startup script (``--code``) that opens the Processing Toolbox filtered on HyperNet,
loads the sample pair, opens the Detect Change dialog, grabs the screen to a PNG, records what it saw (provider,
algorithms, the menu action) as JSON, unloads the plugin (checking the action and provider are gone) and quits.

    .venv/bin/python tools/screenshot_qgis.py --out build/screenshot_qgis.png
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

STARTUP = r'''
import json, os, traceback
from qgis.PyQt.QtCore import QTimer, Qt
from qgis.PyQt.QtWidgets import QAction, QApplication, QDockWidget
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
from qgis.utils import iface

OUT = os.environ["HYPERNET_SHOT_PNG"]
REPORT = os.environ["HYPERNET_SHOT_JSON"]
SAMPLE = os.environ.get("HYPERNET_SHOT_SAMPLE", "")
state = {"errors": []}


def step1():
    try:
        screen = QApplication.primaryScreen().geometry()
        iface.mainWindow().setGeometry(0, 0, screen.width(), screen.height())  # no window manager under xvfb
        registry = QgsApplication.processingRegistry()
        provider = registry.providerById("hypernet")
        state["provider"] = provider is not None
        state["algorithms"] = sorted(a.id() for a in provider.algorithms()) if provider else []
        action = iface.mainWindow().findChild(QAction, "hypernetDetectChangeAction")
        state["action"] = action.text() if action is not None else None
        defaults = {}
        if SAMPLE:
            for name in ("t1", "t2"):
                layer = QgsRasterLayer(os.path.join(SAMPLE, name + ".tif"), f"Taizhou {name.upper()}")
                if layer.isValid():
                    QgsProject.instance().addMapLayer(layer)
                    defaults["INPUT_" + name.upper()] = layer.id()
            iface.mapCanvas().zoomToFullExtent()
        toolbox = iface.mainWindow().findChild(QDockWidget, "ProcessingToolbox")
        if toolbox is not None:
            toolbox.show()
            toolbox.raise_()
            box = getattr(toolbox, "searchBox", None)
            if box is not None:
                box.setText("HyperNet")
        state["toolbox"] = toolbox is not None
        import processing

        dialog = processing.createAlgorithmDialog("hypernet:detectchange", defaults)
        state["dialog"] = dialog is not None
        if dialog is not None:
            dialog.setAttribute(Qt.WA_DeleteOnClose, False)
            dialog.resize(760, 640)
            dialog.move(300, 150)  # over the map, leaving the Layers panel and the Toolbox (right) visible
            dialog.show()
            state["dialog_title"] = dialog.windowTitle()
            globals()["_dialog"] = dialog
    except Exception:
        state["errors"].append(traceback.format_exc())
    QTimer.singleShot(2500, step2)


def step2():
    try:
        QApplication.processEvents()
        pixmap = QApplication.primaryScreen().grabWindow(0)
        state["saved"] = bool(pixmap.save(OUT, "PNG"))
        state["size"] = [pixmap.width(), pixmap.height()]
        dialog = globals().get("_dialog")
        if dialog is not None:
            dialog.close()
        # The menu/toolbar entry opens the (modal) Detect Change dialog: note its title, then close it.
        action = iface.mainWindow().findChild(QAction, "hypernetDetectChangeAction")
        if action is not None:
            def close_modal(tries=[0]):
                shown = [w for w in QApplication.topLevelWidgets() if w.isVisible() and hasattr(w, "reject")
                         and w is not iface.mainWindow()]
                if shown:
                    state["action_opens"] = shown[0].windowTitle()
                    for widget in shown:
                        widget.reject()
                elif tries[0] < 20:
                    tries[0] += 1
                    QTimer.singleShot(500, close_modal)
            QTimer.singleShot(1500, close_modal)
            action.trigger()  # returns when close_modal has closed the dialog
        import qgis.utils

        state["unloaded"] = bool(qgis.utils.unloadPlugin("hypernet_qgis"))
    except Exception:
        state["errors"].append(traceback.format_exc())
    QTimer.singleShot(800, step3)


def step3():
    try:
        state["provider_after_unload"] = QgsApplication.processingRegistry().providerById("hypernet") is not None
        state["action_after_unload"] = iface.mainWindow().findChild(QAction, "hypernetDetectChangeAction") is not None
    except Exception:
        state["errors"].append(traceback.format_exc())
    QgsProject.instance().clear()
    QgsProject.instance().setDirty(False)  # no "save changes?" question on exit
    with open(REPORT, "w") as fh:
        json.dump(state, fh)
    QTimer.singleShot(200, iface.actionExit().trigger)


QTimer.singleShot(4000, step1)
'''


def assemble_plugin(target: Path) -> Path:
    """Package + resources (no sample data) + metadata + licence, as `make plugin` builds it."""
    plugin = target / "hypernet_qgis"
    shutil.copytree(REPO / "hypernet_qgis", plugin, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(REPO / "resources", plugin / "resources", ignore=shutil.ignore_patterns("sample"))
    for name in ("metadata.txt", "LICENSE"):
        shutil.copy(REPO / name, plugin / name)
    return plugin


def write_profile(profiles: Path) -> None:
    """A fresh QGIS profile with the plugin enabled and the first-start nags off."""
    ini = profiles / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True, exist_ok=True)
    ini.write_text(
        "[PythonPlugins]\nhypernet_qgis=true\nprocessing=true\n\n"
        "[qgis]\ncheckVersion=false\nshowTips=false\nshowTips322=false\n"
        "[core]\nfirstRunOfVersion=false\n"
    )


def take(
    out: Path,
    timeout: int = 180,
    keep: Path | None = None,
    startup: str = STARTUP,
    env_extra: dict[str, str] | None = None,
    venv: bool = True,
) -> dict:
    """Run QGIS under xvfb with a ``startup`` script (default: the screenshot tour), return its findings as written
    to $HYPERNET_SHOT_JSON (raises RuntimeError when QGIS gave none in time). ``env_extra``: more variables for
    the script. ``venv=False``: QGIS without the checkout's venv on its path (no torch: the first-use case)."""
    if shutil.which("xvfb-run") is None or shutil.which("qgis") is None:
        raise RuntimeError("xvfb-run and qgis are needed (apt-get install xvfb xauth qgis)")
    work = Path(tempfile.mkdtemp(prefix="hypernet-shot-")) if keep is None else keep
    plugins = work / "plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    assemble_plugin(plugins)
    profiles = work / "profiles"
    write_profile(profiles)
    script = work / "startup.py"
    script.write_text(startup)
    report = work / "report.json"
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    site = sorted((REPO / ".venv" / "lib").glob("python3*/site-packages")) if venv else []
    env = dict(os.environ)
    env.pop("QT_QPA_PLATFORM", None)  # a real X server (xvfb) this time
    runtime = work / "xdg"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env.update(
        QGIS_PLUGINPATH=str(plugins),
        XDG_RUNTIME_DIR=str(runtime),
        HYPERNET_SHOT_PNG=str(out),
        HYPERNET_SHOT_JSON=str(report),
        HYPERNET_SHOT_SAMPLE=str(REPO / "resources" / "sample" / "taizhou_crop"),
        PYTHONPATH=os.pathsep.join([str(p) for p in site] + ["/usr/share/qgis/python/plugins"]),
    )
    env.update(env_extra or {})
    command = [
        "xvfb-run",
        "-a",
        "-s",
        "-screen 0 1440x900x24",
        "qgis",
        "--profiles-path",
        str(profiles),
        "--nologo",
        "--noversioncheck",
        "--code",
        str(script),
    ]
    log = work / "qgis.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(command, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and proc.poll() is None and not report.exists():
                time.sleep(0.5)
            if report.exists():
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            if proc.poll() is None:  # our own xvfb-run session (Xvfb + qgis): end it
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
    if not report.exists():
        raise RuntimeError(f"QGIS gave no report within {timeout} s:\n{log.read_text()[-3000:]}")
    state = json.loads(report.read_text())
    if keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "build" / "screenshot_qgis.png")
    parser.add_argument("--timeout", type=int, default=180)
    parser.add_argument("--keep", type=Path, default=None, help="keep the profile, plugin copy and QGIS log here")
    args = parser.parse_args(argv)
    try:
        state = take(args.out, args.timeout, args.keep)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(state, indent=1))
    return 0 if state.get("saved") and not state.get("errors") else 1


if __name__ == "__main__":
    sys.exit(main())
