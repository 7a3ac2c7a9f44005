"""The shipped Processing model resources/models/hypernet_train_detect_evaluate.model3, run on the sample data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_qgis_support import hashes, hypernet_provider, read  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[1]
MODEL3 = REPO / "resources" / "models" / "hypernet_train_detect_evaluate.model3"


def _load():
    from qgis.core import QgsProcessingModelAlgorithm

    model = QgsProcessingModelAlgorithm()
    assert model.fromFile(str(MODEL3))
    return model


def test_model_file_describes_train_detect_evaluate(hypernet_provider):  # noqa: F811
    model = _load()
    assert model.displayName() == "Train and detect, then evaluate"
    children = model.childAlgorithms()
    assert {c.algorithmId() for c in children.values()} == {
        "hypernet:trainhypernet",
        "hypernet:detectchange",
        "hypernet:evaluatechange",
    }
    assert all(c.algorithm() is not None for c in children.values())  # every step resolves to our algorithms
    names = {p.name() for p in model.parameterDefinitions()}
    assert {
        "T1",
        "T2",
        "REFERENCE",
        "EPOCHS",
        "train:Model file",
        "detect:Change map",
        "evaluate:Evaluation report",
    } <= names
    # detect uses the trained model, evaluate scores detect's map
    assert children["detect"].parameterSources()["MODEL"][0].outputChildId() == "train"
    assert children["evaluate"].parameterSources()["INPUT"][0].outputChildId() == "detect"
    assert model.shortHelpString()


def test_model_validates_with_inputs_in_a_natural_order(hypernet_provider):  # noqa: F811
    """The Model Designer shows no red box and the run dialog asks T1, T2, the reference, then the options."""
    from hypernet_qgis.qgis_compat import FLAG_ADVANCED, has_flag

    model = _load()
    ok, issues = model.validate()
    assert ok and not issues, issues
    for child in model.childAlgorithms().values():  # every parameter of every step has a value
        algorithm = child.algorithm()
        missing = [
            d.name()
            for d in algorithm.parameterDefinitions()
            if not d.isDestination() and d.name() not in child.parameterSources()
        ]
        assert missing == [], (child.childId(), missing)
    names = [p.name() for p in model.parameterDefinitions()]
    assert names[:5] == ["T1", "T2", "REFERENCE", "EPOCHS", "SEED"], names
    advanced = [p.name() for p in model.parameterDefinitions() if has_flag(p.flags(), FLAG_ADVANCED)]
    assert advanced == []  # no (empty or lone) "Advanced Parameters" group in the run dialog


def test_model_runs_on_the_sample_data(hypernet_provider, sample_dir, tmp_path):  # noqa: F811
    from qgis.core import QgsProcessingContext, QgsProcessingFeedback

    pair = sample_dir / "taizhou_crop"
    if not (pair / "t1.tif").exists():
        pytest.skip("resources/sample/taizhou_crop is missing")
    before = hashes(pair)
    model = _load()
    params = {
        "T1": str(pair / "t1.tif"),
        "T2": str(pair / "t2.tif"),
        "REFERENCE": str(pair / "reference.tif"),
        "EPOCHS": 2,
        "SEED": 0,
        "train:Model file": str(tmp_path / "taizhou.hypernet"),
        "detect:Change map": str(tmp_path / "change.tif"),
        "evaluate:Evaluation report": str(tmp_path / "evaluation.html"),
    }
    context = QgsProcessingContext()
    ok, message = model.checkParameterValues(params, context)
    assert ok, message
    results, ok = model.run(params, context, QgsProcessingFeedback())
    assert ok, results
    assert Path(results["train:Model file"]).is_file()
    change, gt, wkt, nodata = read(results["detect:Change map"])
    _, gt1, wkt1, _ = read(str(pair / "t1.tif"))
    assert gt == pytest.approx(gt1) and wkt == wkt1 and nodata == 255
    assert (tmp_path / "change.qml").is_file()
    assert "data:image/png;base64," in (tmp_path / "evaluation.html").read_text(encoding="utf-8")
    # The evaluation step's numbers agree with the map and the reference (hand-computed here).
    metrics = results["CHILD_RESULTS"]["evaluate"]
    ref = read(str(pair / "reference.tif"))[0]
    labelled = np.isin(ref, (0, 1)) & (change != 255)
    pred, truth = change[labelled] == 1, ref[labelled] == 1
    assert metrics["OA"] == pytest.approx((pred == truth).mean())
    tp = (pred & truth).sum()
    assert metrics["RECALL"] == pytest.approx(tp / truth.sum())
    assert metrics["PRECISION"] == pytest.approx(tp / max(pred.sum(), 1))
    assert results["CHILD_RESULTS"]["detect"]["CHANGED_PIXELS"] == int((change == 1).sum())
    assert hashes(pair) == before
