#!/usr/bin/env python3
"""Build resources/models/hypernet_train_detect_evaluate.model3 with the Processing model API.

Every parameter of every step gets a value (the model's inputs, the previous step's outputs, or the algorithm's
own default), so that the Model Designer validates the model without warnings; the inputs are ordered T1, T2,
reference, then the options. Run after changing an algorithm's parameters:

    .venv/bin/python tools/make_model.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "resources" / "models" / "hypernet_train_detect_evaluate.model3"

HELP = (
    "<p>Trains HyperNet on a pair of images (<i>Train HyperNet</i>), maps change with the trained model "
    "(<i>Detect Change</i>) and scores the map against reference labels (<i>Evaluate change map</i>).</p>"
    "<p><b>Inputs</b>: the images of the two dates (same grid and bands), a reference raster (1 changed, "
    "0 unchanged), the number of training epochs and the random seed.</p>"
    "<p><b>Outputs</b>: the model file, the change map (styled) and an HTML evaluation report; the accuracy "
    "numbers are in the log and in the step's results.</p>"
)


def build(path: Path = OUT) -> Path:
    """Write the model file; returns its path."""
    from qgis.core import (
        QgsApplication,
        QgsProcessingDestinationParameter,
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterNumber,
        QgsProcessingParameterRasterLayer,
    )
    from qgis.PyQt.QtCore import QPointF

    from hypernet_qgis.qgis_compat import NUMBER_INTEGER

    model = QgsProcessingModelAlgorithm("Train and detect, then evaluate", "HyperNet", "hypernettraindetectevaluate")
    model.setHelpContent({"ALG_DESC": HELP, "ALG_CREATOR": "HyperNet for QGIS"})
    inputs = [
        (QgsProcessingParameterRasterLayer("T1", "Image T1 (first date)"), 120),
        (QgsProcessingParameterRasterLayer("T2", "Image T2 (second date)"), 200),
        (QgsProcessingParameterRasterLayer("REFERENCE", "Reference (1 changed, 0 unchanged)"), 280),
        (QgsProcessingParameterNumber("EPOCHS", "Training epochs", NUMBER_INTEGER, defaultValue=60, minValue=1), 360),
        (QgsProcessingParameterNumber("SEED", "Random seed", NUMBER_INTEGER, defaultValue=0, minValue=0), 440),
    ]
    for definition, y in inputs:
        component = QgsProcessingModelParameter(definition.name())
        component.setPosition(QPointF(120, y))
        component.setDescription(definition.description())
        model.addModelParameter(definition, component)

    def source(name):
        return [QgsProcessingModelChildParameterSource.fromModelParameter(name)]

    def child_output(child_id, output):
        return [QgsProcessingModelChildParameterSource.fromChildOutput(child_id, output)]

    steps = [
        (
            "train",
            "hypernet:trainhypernet",
            "Train HyperNet on the pair",
            200,
            {"INPUT_T1": source("T1"), "INPUT_T2": source("T2"), "EPOCHS": source("EPOCHS"), "SEED": source("SEED")},
            {"Model file": "OUTPUT_MODEL"},
        ),
        (
            "detect",
            "hypernet:detectchange",
            "Detect Change with the trained model",
            330,
            {"INPUT_T1": source("T1"), "INPUT_T2": source("T2"), "MODEL": child_output("train", "OUTPUT_MODEL")},
            {"Change map": "OUTPUT_CHANGE"},
        ),
        (
            "evaluate",
            "hypernet:evaluatechange",
            "Evaluate the change map",
            460,
            {"INPUT": child_output("detect", "OUTPUT_CHANGE"), "REFERENCE": source("REFERENCE")},
            {"Evaluation report": "OUTPUT_REPORT"},
        ),
    ]
    registry = QgsApplication.processingRegistry()
    for child_id, alg_id, description, y, sources, outputs in steps:
        algorithm = registry.algorithmById(alg_id)
        if algorithm is None:
            raise SystemExit(f"error: {alg_id} is not registered (is the HyperNet provider loaded?)")
        child = QgsProcessingModelChildAlgorithm(alg_id)
        child.setChildId(child_id)
        child.setDescription(description)
        child.setPosition(QPointF(420, y))
        for definition in algorithm.parameterDefinitions():
            if isinstance(definition, QgsProcessingDestinationParameter):
                continue
            name = definition.name()
            child.addParameterSources(
                name,
                sources.get(name)
                or [QgsProcessingModelChildParameterSource.fromStaticValue(definition.defaultValue())],
            )
        model_outputs = {}
        for i, (name, output) in enumerate(outputs.items()):
            out = QgsProcessingModelOutput(name, name)
            out.setChildId(child_id)
            out.setChildOutputName(output)
            out.setMandatory(True)
            out.setPosition(QPointF(720, y + 40 * i))
            model_outputs[name] = out
        child.setModelOutputs(model_outputs)
        model.addChildAlgorithm(child)
    model.setParameterOrder(["T1", "T2", "REFERENCE", "EPOCHS", "SEED"])
    path.parent.mkdir(parents=True, exist_ok=True)
    if not model.toFile(str(path)):
        raise SystemExit(f"error: could not write {path}")
    return path


def main() -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    sys.path[:0] = [str(REPO), "/usr/share/qgis/python/plugins"]
    from qgis.core import QgsApplication

    QgsApplication.setPrefixPath("/usr", True)
    app = QgsApplication([], False)
    app.initQgis()
    from processing.core.Processing import Processing

    Processing.initialize()
    from hypernet_qgis.provider import HyperNetProvider

    provider = HyperNetProvider()
    QgsApplication.processingRegistry().addProvider(provider)
    print(build())
    QgsApplication.processingRegistry().removeProvider(provider)
    return 0


if __name__ == "__main__":
    sys.exit(main())
