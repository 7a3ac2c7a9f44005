"""The four algorithms run for real in QGIS (processing.run, the Toolbox's loader, the task manager)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from test_qgis_support import (  # noqa: F401 (fixtures)
    CHANGED,
    GEOTRANSFORM,
    hashes,
    hypernet_provider,
    pair_dir,
    read,
    same_crs,
    trained_model,
    write_tif,
)


def _feedback():
    """A real QgsProcessingFeedback that keeps the log and the progress values."""
    from qgis.core import QgsProcessingFeedback

    class Recorder(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.lines: list[str] = []
            self.progress: list[float] = []
            self.progressChanged.connect(self.progress.append)

        def pushInfo(self, info):  # noqa: N802
            self.lines.append(info)
            super().pushInfo(info)

    return Recorder()


def _scores(change: np.ndarray) -> tuple[float, float]:
    ref = np.zeros(change.shape, bool)
    ref[CHANGED] = True
    pred = change == 1
    tp = (pred & ref).sum()
    return tp / max(pred.sum(), 1), tp / ref.sum()


def test_train_writes_a_model_and_logs_the_device(hypernet_provider, pair_dir, tmp_path):  # noqa: F811
    import processing

    before = hashes(pair_dir)
    feedback = _feedback()
    out = str(tmp_path / "m.hypernet")
    result = processing.run(
        "hypernet:trainhypernet",
        {
            "INPUT_T1": str(pair_dir / "t1.tif"),
            "INPUT_T2": str(pair_dir / "t2.tif"),
            "EPOCHS": 3,
            "DEVICE": "auto",
            "OUTPUT_MODEL": out,
        },
        feedback=feedback,
    )
    assert result["OUTPUT_MODEL"] == out and os.path.getsize(out) > 0
    assert math.isfinite(result["FINAL_LOSS"])
    log = "\n".join(feedback.lines)
    on_cpu = "Training HyperNet on CPU, " in log and "(no CUDA device)" in log
    assert on_cpu or "Training HyperNet on CUDA: " in log, log
    assert max(feedback.progress) == pytest.approx(100.0)
    assert len(set(round(p) for p in feedback.progress)) >= 3  # progress per epoch, not one jump
    from hypernet_qgis.core.hypernet.model_file import load_model

    model, meta = load_model(out)
    assert model.bands == 6
    assert meta["training"]["epochs"] == 3
    assert hashes(pair_dir) == before


def test_detect_trains_then_maps_the_changed_block(hypernet_provider, pair_dir, tmp_path):  # noqa: F811
    import processing

    before = hashes(pair_dir)
    change, intensity = str(tmp_path / "change.tif"), str(tmp_path / "intensity.tif")
    result = processing.run(
        "hypernet:detectchange",
        {
            "INPUT_T1": str(pair_dir / "t1.tif"),
            "INPUT_T2": str(pair_dir / "t2.tif"),
            "EPOCHS": 3,
            "SEED": 0,
            "DEVICE": "cpu",
            "OUTPUT_CHANGE": change,
            "OUTPUT_INTENSITY": intensity,
        },
    )
    values, gt, wkt, nodata = read(change)
    assert values.dtype == np.uint8 and set(np.unique(values)) <= {0, 1}
    assert nodata == 255
    assert gt == pytest.approx(GEOTRANSFORM) and same_crs(wkt)
    precision, recall = _scores(values)
    assert precision > 0.8 and recall > 0.8, (precision, recall)
    assert result["CHANGED_PIXELS"] == int((values == 1).sum())
    assert result["CHANGED_FRACTION"] == pytest.approx((values == 1).mean())
    ivalues, igt, iwkt, _ = read(intensity)
    assert ivalues.dtype == np.float32 and igt == pytest.approx(GEOTRANSFORM) and same_crs(iwkt)
    # The map is the intensity above the reported threshold.
    assert np.array_equal(values == 1, ivalues > result["THRESHOLD_USED"])
    assert os.path.exists(str(tmp_path / "change.qml")) and os.path.exists(str(tmp_path / "intensity.qml"))
    assert hashes(pair_dir) == before


def test_detect_with_a_model_and_fixed_threshold(hypernet_provider, pair_dir, trained_model, tmp_path):  # noqa: F811
    import processing

    change, intensity = str(tmp_path / "c.tif"), str(tmp_path / "i.tif")
    first = processing.run(
        "hypernet:detectchange",
        {
            "INPUT_T1": str(pair_dir / "t1.tif"),
            "INPUT_T2": str(pair_dir / "t2.tif"),
            "MODEL": trained_model,
            "OUTPUT_CHANGE": change,
            "OUTPUT_INTENSITY": intensity,
        },
    )
    ivalues = read(intensity)[0]
    value = float(np.median(ivalues))
    fixed = processing.run(
        "hypernet:detectchange",
        {
            "INPUT_T1": str(pair_dir / "t1.tif"),
            "INPUT_T2": str(pair_dir / "t2.tif"),
            "MODEL": trained_model,
            "THRESHOLD_METHOD": "fixed",
            "THRESHOLD": value,
            "OUTPUT_CHANGE": str(tmp_path / "f.tif"),
        },
    )
    assert fixed["THRESHOLD_USED"] == pytest.approx(value)
    assert fixed["CHANGED_PIXELS"] == int((ivalues > value).sum())
    assert first["CHANGED_PIXELS"] != fixed["CHANGED_PIXELS"]


def test_a_model_trained_on_a_band_subset_keeps_it(hypernet_provider, pair_dir, tmp_path):  # noqa: F811
    """BANDS=2-5 at training; Detect Change with that model and no BANDS uses bands 2-5 again."""
    import processing

    model = str(tmp_path / "sub.hypernet")
    processing.run(
        "hypernet:trainhypernet",
        {
            "INPUT_T1": str(pair_dir / "t1.tif"),
            "INPUT_T2": str(pair_dir / "t2.tif"),
            "BANDS": "2-5",
            "EPOCHS": 2,
            "OUTPUT_MODEL": model,
        },
    )
    from hypernet_qgis.core.hypernet.model_file import load_model

    assert load_model(model)[0].bands == 4
    result = processing.run(
        "hypernet:detectchange",
        {
            "INPUT_T1": str(pair_dir / "t1.tif"),
            "INPUT_T2": str(pair_dir / "t2.tif"),
            "MODEL": model,
            "OUTPUT_CHANGE": str(tmp_path / "c.tif"),
        },
    )
    assert result["CHANGED_PIXELS"] > 0


def test_evaluate_gives_hand_computed_metrics(hypernet_provider, tmp_path):  # noqa: F811
    """TP 20, FN 5, FP 10, TN 65 -> OA .85, precision 2/3, recall .8, F1 8/11, kappa .625; 255 and 9 not scored."""
    import processing

    pred = np.zeros(100, np.uint8)
    ref = np.zeros(100, np.uint8)
    ref[:25] = 1  # 25 changed in the reference
    pred[:20] = 1  # 20 of them found (TP), 5 missed (FN)
    pred[25:35] = 1  # 10 false alarms (FP); the remaining 65 are TN
    pred, ref = pred.reshape(10, 10), ref.reshape(10, 10)
    pred_big = np.full((10, 12), 255, np.uint8)
    ref_big = np.full((10, 12), 9, np.uint8)  # ignored reference value
    pred_big[:, :10], ref_big[:, :10] = pred, ref
    pred_big[:, 10] = 1
    ref_big[:, 11] = 1  # change-map nodata on changed reference pixels: not scored
    a = write_tif(tmp_path / "pred.tif", pred_big, nodata=255)
    b = write_tif(tmp_path / "ref.tif", ref_big)
    out = processing.run(
        "hypernet:evaluatechange",
        {"INPUT": a, "REFERENCE": b, "CHANGED_VALUES": "1", "UNCHANGED_VALUES": "0", "IGNORE_VALUES": "9"},
    )
    assert out["OA"] == pytest.approx(0.85)
    assert out["PRECISION"] == pytest.approx(2 / 3)
    assert out["RECALL"] == pytest.approx(0.8)
    assert out["F1"] == pytest.approx(8 / 11)
    assert out["KAPPA"] == pytest.approx(0.625)
    # a binary map as a score: AUC = (recall + specificity) / 2 = (8/10 + 65/75) / 2
    assert out["AUC"] == pytest.approx((0.8 + 65 / 75) / 2)


def test_classic_cva_finds_the_block(hypernet_provider, pair_dir, tmp_path):  # noqa: F811
    import processing

    out = str(tmp_path / "cva.tif")
    result = processing.run(
        "hypernet:classicchange",
        {
            "METHOD": "cva",
            "INPUT_T1": str(pair_dir / "t1.tif"),
            "INPUT_T2": str(pair_dir / "t2.tif"),
            "OUTPUT_CHANGE": out,
            "OUTPUT_INTENSITY": str(tmp_path / "cva_i.tif"),
        },
    )
    values, gt, wkt, nodata = read(out)
    precision, recall = _scores(values)
    assert precision > 0.9 and recall > 0.9
    assert nodata == 255 and gt == pytest.approx(GEOTRANSFORM) and same_crs(wkt)
    assert result["CHANGED_PIXELS"] == int((values == 1).sum())
    assert (tmp_path / "cva.qml").exists() and (tmp_path / "cva_i.qml").exists()


def test_outputs_loaded_by_the_toolbox_are_styled(hypernet_provider, pair_dir, trained_model, tmp_path):  # noqa: F811
    """runAndLoadResults loads the outputs into the project like the Toolbox: paletted map, pseudocolour intensity."""
    import processing
    from qgis.core import QgsProject, QgsSingleBandPseudoColorRenderer

    project = QgsProject.instance()
    project.removeAllMapLayers()
    processing.runAndLoadResults(
        "hypernet:detectchange",
        {
            "INPUT_T1": str(pair_dir / "t1.tif"),
            "INPUT_T2": str(pair_dir / "t2.tif"),
            "MODEL": trained_model,
            "OUTPUT_CHANGE": str(tmp_path / "change.tif"),
            "OUTPUT_INTENSITY": str(tmp_path / "intensity.tif"),
        },
    )
    layers = {layer.name(): layer for layer in project.mapLayers().values()}
    assert {"change", "intensity"} <= set(layers), set(layers)  # named after the files the user chose
    _check_change_style(layers["change"])
    renderer = layers["intensity"].renderer()
    assert isinstance(renderer, QgsSingleBandPseudoColorRenderer)
    items = renderer.shader().rasterShaderFunction().colorRampItemList()
    assert len(items) >= 5 and items[0].value < items[-1].value
    project.removeAllMapLayers()


def _check_change_style(layer) -> None:
    from qgis.core import QgsPalettedRasterRenderer

    renderer = layer.renderer()
    assert isinstance(renderer, QgsPalettedRasterRenderer), type(renderer)
    classes = {c.value: c for c in renderer.classes()}
    assert set(classes) == {0, 1}
    change = classes[1].color
    assert change.red() > 200 and change.green() < 80 and change.alpha() == 255  # strong red
    assert classes[0].color.alpha() == 0  # no change: transparent, the image beneath shows through
    assert layer.dataProvider().sourceNoDataValue(1) == 255  # nodata: not drawn


def test_sidecar_styles_apply_when_the_file_is_opened_later(hypernet_provider, pair_dir, tmp_path):  # noqa: F811
    """A map written without the Toolbox (as by qgis_process) looks the same when added to a project later."""
    import processing
    from qgis.core import QgsProject, QgsRasterLayer, QgsSingleBandPseudoColorRenderer

    processing.run(
        "hypernet:classicchange",
        {
            "METHOD": "sam",
            "INPUT_T1": str(pair_dir / "t1.tif"),
            "INPUT_T2": str(pair_dir / "t2.tif"),
            "OUTPUT_CHANGE": str(tmp_path / "sam.tif"),
            "OUTPUT_INTENSITY": str(tmp_path / "sam_i.tif"),
        },
    )
    change = QgsRasterLayer(str(tmp_path / "sam.tif"), "later")
    intensity = QgsRasterLayer(str(tmp_path / "sam_i.tif"), "later intensity")
    QgsProject.instance().addMapLayers([change, intensity])
    try:
        _check_change_style(change)
        assert isinstance(intensity.renderer(), QgsSingleBandPseudoColorRenderer)
        values = read(str(tmp_path / "sam_i.tif"))[0]
        shader = intensity.renderer().shader().rasterShaderFunction()
        lo, hi = np.percentile(values[np.isfinite(values) & (values != -9999)], [2, 98])
        assert shader.minimumValue() == pytest.approx(lo, rel=1e-5)
        assert shader.maximumValue() == pytest.approx(hi, rel=1e-5)
    finally:
        QgsProject.instance().removeAllMapLayers()


# ------------------------------------------------------------------------------------------- task manager


def _run_task(alg_id: str, params: dict, cancel_at: float | None = None, timeout_ms: int = 240000):
    """Run through QgsApplication.taskManager() with QgsProcessingAlgRunnerTask, as the dialog does."""
    from qgis.core import (
        QgsApplication,
        QgsProcessingAlgRunnerTask,
        QgsProcessingContext,
        QgsProcessingFeedback,
        QgsProject,
    )
    from qgis.PyQt.QtCore import QEventLoop, QTimer

    alg = QgsApplication.processingRegistry().algorithmById(alg_id)
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    feedback = QgsProcessingFeedback()
    task = QgsProcessingAlgRunnerTask(alg, params, context, feedback)
    state: dict = {"ok": None, "results": None, "progress": [], "ended": None}
    loop = QEventLoop()

    def executed(ok, results):
        state["ok"], state["results"] = ok, dict(results)

    def progressed(value):
        state["progress"].append(value)
        if cancel_at is not None and value >= cancel_at and not feedback.isCanceled():
            feedback.cancel()

    def ended(how):
        state["ended"] = how
        loop.quit()

    task.executed.connect(executed)
    task.taskCompleted.connect(lambda: ended("completed"))
    task.taskTerminated.connect(lambda: ended("terminated"))
    feedback.progressChanged.connect(progressed)
    QTimer.singleShot(timeout_ms, loop.quit)
    QgsApplication.taskManager().addTask(task)
    del task  # the task manager owns it and deletes it when finished: only its signals are used
    loop.exec_()
    return state


def test_task_manager_run_completes(hypernet_provider, pair_dir, tmp_path):  # noqa: F811
    out = str(tmp_path / "task_change.tif")
    state = _run_task(
        "hypernet:detectchange",
        {
            "INPUT_T1": str(pair_dir / "t1.tif"),
            "INPUT_T2": str(pair_dir / "t2.tif"),
            "EPOCHS": 2,
            "DEVICE": "cpu",
            "OUTPUT_CHANGE": out,
        },
    )
    assert state["ended"] == "completed" and state["ok"] is True, state
    assert state["results"]["OUTPUT_CHANGE"] == out and os.path.exists(out)
    assert (tmp_path / "task_change.qml").exists()


def test_task_manager_cancel_leaves_no_output(hypernet_provider, pair_dir, tmp_path):  # noqa: F811
    import time

    change, model = tmp_path / "cancel_change.tif", tmp_path / "cancel.hypernet"
    start = time.perf_counter()
    state = _run_task(
        "hypernet:trainhypernet",
        {
            "INPUT_T1": str(pair_dir / "t1.tif"),
            "INPUT_T2": str(pair_dir / "t2.tif"),
            "EPOCHS": 5000,
            "SCHEDULE": "paper",
            "DEVICE": "cpu",
            "OUTPUT_MODEL": str(model),
        },
        cancel_at=1.0,
    )
    assert state["ended"] == "terminated" and not state["ok"], state
    assert time.perf_counter() - start < 60  # 5000 epochs would take minutes: it stopped early
    assert max(state["progress"]) < 50
    state = _run_task(
        "hypernet:detectchange",
        {
            "INPUT_T1": str(pair_dir / "t1.tif"),
            "INPUT_T2": str(pair_dir / "t2.tif"),
            "EPOCHS": 5000,
            "SCHEDULE": "paper",
            "DEVICE": "cpu",
            "OUTPUT_CHANGE": str(change),
        },
        cancel_at=1.0,
    )
    assert state["ended"] == "terminated"
    assert not model.exists() and not change.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no partial or temporary file either


def test_html_reports(hypernet_provider, pair_dir, trained_model, tmp_path):  # noqa: F811
    """OUTPUT_REPORT of each algorithm is a self-contained HTML page (figures as data URIs)."""
    import processing

    t1, t2 = str(pair_dir / "t1.tif"), str(pair_dir / "t2.tif")
    runs = {
        "train": (
            "hypernet:trainhypernet",
            {"INPUT_T1": t1, "INPUT_T2": t2, "EPOCHS": 2, "OUTPUT_MODEL": str(tmp_path / "m.hypernet")},
        ),
        "detect": (
            "hypernet:detectchange",
            {"INPUT_T1": t1, "INPUT_T2": t2, "MODEL": trained_model, "OUTPUT_CHANGE": str(tmp_path / "c.tif")},
        ),
        "evaluate": (
            "hypernet:evaluatechange",
            {"INPUT": str(pair_dir / "ref.tif"), "REFERENCE": str(pair_dir / "ref.tif")},
        ),
        "inspect": ("hypernet:inspectmodel", {"INPUT": trained_model}),
    }
    for name, (alg_id, params) in runs.items():
        report = tmp_path / f"{name}.html"
        result = processing.run(alg_id, dict(params, OUTPUT_REPORT=str(report)))
        assert result["OUTPUT_REPORT"] == str(report), name
        text = report.read_text(encoding="utf-8")
        assert text.lstrip().lower().startswith("<!doctype html") and "data:image/png;base64," in text, name
