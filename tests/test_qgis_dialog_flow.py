"""What the Processing dialog loads into the project, run headless the way the dialog runs an algorithm.

The dialog (processing/gui/AlgorithmDialog.py) builds output values as QgsProcessingOutputLayerDefinition with the
project as destination, calls checkParameterValues in the main thread, runs a QgsProcessingAlgRunnerTask (the
algorithm is prepared in the main thread and runs in a worker thread with its own context) and then loads
``context.layersToLoadOnCompletion()`` with Postprocessing.handleAlgorithmResults. These tests do exactly that and
look at the project: which layers arrived, their names, order and styles, and what the Processing log says.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_qgis_support import hypernet_provider, pair_dir, trained_model  # noqa: F401 (fixtures)

TEMPORARY = "TEMPORARY_OUTPUT"


def _output(value: str):
    """An output value as the dialog makes it ("Open output file after running algorithm" ticked)."""
    from qgis.core import QgsProcessingOutputLayerDefinition, QgsProject

    return QgsProcessingOutputLayerDefinition(value, QgsProject.instance())


def run_like_the_dialog(alg_id: str, params: dict, timeout_ms: int = 240000) -> dict:
    """checkParameterValues, a QgsProcessingAlgRunnerTask, then handleAlgorithmResults: as AlgorithmDialog."""
    from processing.gui.Postprocessing import handleAlgorithmResults
    from qgis.core import (
        Qgis,
        QgsApplication,
        QgsProcessingAlgRunnerTask,
        QgsProcessingContext,
        QgsProcessingFeedback,
        QgsProject,
    )
    from qgis.PyQt.QtCore import QEventLoop, QTimer

    alg = QgsApplication.processingRegistry().createAlgorithmById(alg_id)
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    errors: list[str] = []

    class Feedback(QgsProcessingFeedback):
        def reportError(self, error, fatalError=False):  # noqa: N802
            errors.append(error)
            super().reportError(error, fatalError)

    feedback = Feedback()
    critical: list[str] = []

    def logged(message, tag, level):
        if level == Qgis.Critical:
            critical.append(f"{tag}: {message}")

    QgsApplication.messageLog().messageReceived.connect(logged)
    ok, message = alg.checkParameterValues(params, context)
    assert ok, message
    state: dict = {"ok": None, "results": None, "ended": None, "errors": errors, "critical": critical}
    loop = QEventLoop()
    task = QgsProcessingAlgRunnerTask(alg, params, context, feedback)

    def executed(success, results):
        state["ok"], state["results"] = success, dict(results)
        if success:
            state["loaded"] = handleAlgorithmResults(alg, context, feedback, False, params)
        loop.quit()

    task.executed.connect(executed)
    QTimer.singleShot(timeout_ms, loop.quit)
    QgsApplication.taskManager().addTask(task)
    del task
    loop.exec_()
    QgsApplication.messageLog().messageReceived.disconnect(logged)
    return state


def _tree_names() -> list[str]:
    """Layer names in the Layers panel, top to bottom."""
    from qgis.core import QgsProject

    return [node.name() for node in QgsProject.instance().layerTreeRoot().findLayers()]


def _layer(name: str):
    from qgis.core import QgsProject

    found = QgsProject.instance().mapLayersByName(name)
    assert len(found) == 1, (name, _tree_names())
    return found[0]


def check_change_style(layer) -> None:
    """Paletted: change strong red, no change transparent (the map reads as an overlay), nodata 255 not drawn."""
    from qgis.core import QgsPalettedRasterRenderer

    renderer = layer.renderer()
    assert isinstance(renderer, QgsPalettedRasterRenderer), type(renderer)
    classes = {c.value: c.color for c in renderer.classes()}
    assert set(classes) == {0, 1}
    assert classes[1].red() > 200 and classes[1].green() < 80 and classes[1].alpha() == 255
    assert classes[0].alpha() == 0  # "no change" lets the image beneath show through
    assert layer.dataProvider().sourceNoDataValue(1) == 255


@pytest.fixture
def clean_project(hypernet_provider):  # noqa: F811
    from qgis.core import QgsProject

    QgsProject.instance().removeAllMapLayers()
    yield QgsProject.instance()
    QgsProject.instance().removeAllMapLayers()


@pytest.mark.parametrize("named", [True, False], ids=["named-files", "temporary-files"])
def test_detect_change_lands_in_the_project_styled_on_top(
    clean_project,
    pair_dir,
    trained_model,
    tmp_path,  # noqa: F811
    named,
):
    change = str(tmp_path / "harbour_change.tif") if named else TEMPORARY
    intensity = str(tmp_path / "harbour_intensity.tif") if named else TEMPORARY
    state = run_like_the_dialog(
        "hypernet:detectchange",
        {
            "INPUT_T1": str(pair_dir / "t1.tif"),
            "INPUT_T2": str(pair_dir / "t2.tif"),
            "MODEL": trained_model,
            "OUTPUT_CHANGE": _output(change),
            "OUTPUT_INTENSITY": _output(intensity),
        },
    )
    assert state["ok"] is True and state["loaded"] is True, state
    assert state["errors"] == [] and state["critical"] == [], state
    names = _tree_names()
    expected = (
        ["harbour_change", "harbour_intensity"] if named else ["Change map (HyperNet)", "Change intensity (HyperNet)"]
    )
    assert names == expected, names  # both loaded, the change map above the intensity
    layer = _layer(expected[0])
    assert os.path.realpath(layer.source()) == os.path.realpath(state["results"]["OUTPUT_CHANGE"])
    check_change_style(layer)


def test_classic_change_lands_in_the_project(clean_project, pair_dir, tmp_path):  # noqa: F811
    state = run_like_the_dialog(
        "hypernet:classicchange",
        {
            "METHOD": "cva",
            "INPUT_T1": str(pair_dir / "t1.tif"),
            "INPUT_T2": str(pair_dir / "t2.tif"),
            "OUTPUT_CHANGE": _output(TEMPORARY),
        },
    )
    assert state["ok"] is True and state["loaded"] is True, state
    assert state["errors"] == [] and state["critical"] == [], state
    assert _tree_names() == ["Change map (CVA)"]
    check_change_style(_layer("Change map (CVA)"))


def test_checking_parameters_registers_and_creates_nothing(clean_project, pair_dir, tmp_path):  # noqa: F811
    """checkParameterValues runs on every dialog/batch row check: no phantom output, no temporary folder."""
    import tempfile

    from qgis.core import QgsApplication, QgsProcessingContext, QgsProject

    alg = QgsApplication.processingRegistry().createAlgorithmById("hypernet:classicchange")
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    temp_root = Path(tempfile.gettempdir())
    before = set(temp_root.glob("processing_*/*"))
    for _ in range(3):
        ok, message = alg.checkParameterValues(
            {
                "METHOD": "cva",
                "INPUT_T1": str(pair_dir / "t1.tif"),
                "INPUT_T2": str(pair_dir / "t2.tif"),
                "OUTPUT_CHANGE": _output(TEMPORARY),
                "OUTPUT_INTENSITY": _output(TEMPORARY),
            },
            context,
        )
        assert ok, message
    assert dict(context.layersToLoadOnCompletion()) == {}
    assert set(temp_root.glob("processing_*/*")) == before


def test_identical_dates_are_refused_up_front(clean_project, pair_dir):  # noqa: F811
    from qgis.core import QgsApplication, QgsProcessingContext, QgsProject, QgsRasterLayer

    layer = QgsRasterLayer(str(pair_dir / "t1.tif"), "T1")
    again = QgsRasterLayer(str(pair_dir / "t1.tif"), "T1 again")
    QgsProject.instance().addMapLayers([layer, again])
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    for alg_id in ("hypernet:detectchange", "hypernet:trainhypernet", "hypernet:classicchange"):
        alg = QgsApplication.processingRegistry().createAlgorithmById(alg_id)
        for t2 in (layer.id(), again.id(), str(pair_dir / "t1.tif")):
            ok, message = alg.checkParameterValues(
                {
                    "METHOD": "cva",
                    "INPUT_T1": layer.id(),
                    "INPUT_T2": t2,
                    "OUTPUT_CHANGE": _output(TEMPORARY),
                    "OUTPUT_MODEL": TEMPORARY,
                },
                context,
            )
            # the engine's check (core.pair.check_pair_files), worded with the dialog's labels
            assert not ok and "Image T1 and Image T2 are the same image" in message, (alg_id, message)


def test_dialog_details(hypernet_provider):  # noqa: F811
    """Small things a user notices: short labels, GeoTIFF as the only output format, no "HTML output has been
    generated" notice without a report, no parameter said to be optional twice."""
    from qgis.core import QgsApplication

    assert hypernet_provider.supportedOutputRasterLayerExtensions() == ["tif"]
    for alg in hypernet_provider.algorithms():
        if not alg.id().startswith("hypernet:") or " " in alg.id():
            continue
        assert alg.hasHtmlOutputs() is False
        for definition in alg.parameterDefinitions():
            label = definition.description()
            assert len(label) <= 40, (alg.id(), label)  # fits the dialog's default width
            assert "optional" not in label.lower(), (alg.id(), label)  # QGIS adds "[optional]" itself
    assert QgsApplication.processingRegistry().algorithmById("hypernet:detectchange").tags()


def test_train_keeps_a_temporary_model_next_to_t1(clean_project, tmp_path):
    """A model is worth keeping: "Save to a temporary file" saves it next to T1, never over an existing file."""
    from test_qgis_support import make_pair

    files = make_pair(tmp_path / "pair")
    (tmp_path / "pair" / "t1_t2.hypernet").write_bytes(b"an earlier model")
    state = run_like_the_dialog(
        "hypernet:trainhypernet",
        {"INPUT_T1": files["t1"], "INPUT_T2": files["t2"], "EPOCHS": 2, "OUTPUT_MODEL": TEMPORARY},
    )
    assert state["ok"] is True, state
    assert state["results"]["OUTPUT_MODEL"] == str(tmp_path / "pair" / "t1_t2_2.hypernet")
    assert (tmp_path / "pair" / "t1_t2_2.hypernet").stat().st_size > 1000
    assert (tmp_path / "pair" / "t1_t2.hypernet").read_bytes() == b"an earlier model"
