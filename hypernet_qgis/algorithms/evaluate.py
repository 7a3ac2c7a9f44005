"""Processing algorithm ``hypernet:evaluatechange``: accuracy of a change map against a reference."""

from __future__ import annotations

import math
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingOutputNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from ..core.errors import InputError
from .base import HyperNetAlgorithm, Job, QgisFeedback, layer_path, parse_values, pipeline

#: Output name -> accepted keys of core.classic.metrics' result (first found wins).
METRICS = {
    "OA": ("OA", "oa", "overall_accuracy"),
    "KAPPA": ("kappa", "KAPPA", "Kappa"),
    "F1": ("F1", "f1"),
    "PRECISION": ("precision", "PRECISION", "Precision"),
    "RECALL": ("recall", "RECALL", "Recall"),
    "AUC": ("AUC", "auc"),
}


class EvaluateChangeAlgorithm(HyperNetAlgorithm):
    """Scores a change map (or intensity) against reference labels."""

    ALG_ID = "evaluatechange"
    DISPLAY = "Evaluate change map"
    GROUP = "Evaluation"
    GROUP_ID = "evaluation"
    ICON = "evaluate.svg"
    NEEDS_ENGINE = False
    SHORT = "Accuracy of a change map (or intensity) against reference labels: OA, kappa, F1, AUC."
    TAGS = ("accuracy", "kappa", "f1", "auc", "roc", "confusion matrix", "validation", "ground truth")
    ANCHOR = "evaluate-change-map"
    HELP = (
        "<p>Measures how well a change map agrees with a reference (ground truth) raster on the same grid.</p>"
        "<p><b>Inputs</b>: the change map (1 change, 0 no change, 255 nodata, as written by <i>Detect Change</i> "
        "or <i>Classic change detection</i>) or a change intensity (then only AUC is computed); the reference "
        "raster; which reference values mean <i>changed</i> (default 1) and <i>unchanged</i> (default 0), and "
        "values to ignore. Reference pixels with other values or nodata are not scored.</p>"
        "<p><b>Outputs</b>: overall accuracy (OA), Cohen's kappa, F1, precision and recall of the change class, "
        "and the area under the ROC curve (AUC; with a binary map it is that of a single point) as numbers "
        "that a model can pass on; optionally an HTML report.</p>"
        "<p><b>Time</b>: a second or two.</p>"
    )

    def initAlgorithm(self, config: dict | None = None) -> None:  # noqa: N802
        self._add(QgsProcessingParameterRasterLayer("INPUT", "Change map (or change intensity)"))
        self._add(QgsProcessingParameterRasterLayer("REFERENCE", "Reference (ground truth)"))
        self._add(QgsProcessingParameterString("CHANGED_VALUES", "Reference values meaning changed", defaultValue="1"))
        self._add(
            QgsProcessingParameterString("UNCHANGED_VALUES", "Reference values meaning unchanged", defaultValue="0")
        )
        self._add(QgsProcessingParameterString("IGNORE_VALUES", "Reference values to ignore", optional=True))
        self.add_report("Evaluation report (HTML)", advanced=False)
        for name, label in (
            ("OA", "Overall accuracy"),
            ("KAPPA", "Kappa"),
            ("F1", "F1 score"),
            ("PRECISION", "Precision"),
            ("RECALL", "Recall"),
            ("AUC", "AUC"),
        ):
            self.addOutput(QgsProcessingOutputNumber(name, label))

    def resolve(self, parameters: dict, context: QgsProcessingContext) -> Job:
        from ..core.io import raster_io

        change = layer_path(self, parameters, "INPUT", context, "Change map")
        reference = layer_path(self, parameters, "REFERENCE", context, "Reference")
        ci, ri = raster_io.raster_info(change), raster_io.raster_info(reference)
        if (ci.rows, ci.cols) != (ri.rows, ri.cols):
            raise InputError(
                f"The change map is {ci.cols}x{ci.rows} pixels but the reference is {ri.cols}x{ri.rows};"
                " they must cover the same grid. Resample or clip the reference to the change map."
            )
        changed = parse_values(
            self.parameterAsString(parameters, "CHANGED_VALUES", context), self.label("CHANGED_VALUES")
        )
        unchanged = parse_values(
            self.parameterAsString(parameters, "UNCHANGED_VALUES", context), self.label("UNCHANGED_VALUES")
        )
        ignore = parse_values(self.parameterAsString(parameters, "IGNORE_VALUES", context), self.label("IGNORE_VALUES"))
        if not changed or not unchanged:
            raise InputError(
                "Reference values meaning changed and meaning unchanged each need at least one value (e.g. 1 and 0)."
            )
        overlap = set(changed) & set(unchanged) | (set(changed) | set(unchanged)) & set(ignore)
        if overlap:
            raise InputError(
                f"The value {sorted(overlap)[0]:g} is in more than one of the reference values meaning "
                "changed, unchanged and to ignore; each reference value can have one meaning only."
            )
        job = Job(
            {"change": change, "reference": reference, "changed": changed, "unchanged": unchanged, "ignore": ignore},
            inputs=[change, reference],
        )
        self.declare_output(job, parameters, context, "OUTPUT_REPORT", "report")
        return job

    def run_job(self, job: Job, feedback: QgisFeedback) -> dict[str, Any]:
        metrics = pipeline(engine=False).evaluate_files(
            job["change"], job["reference"], changed=job["changed"], unchanged=job["unchanged"], ignore=job["ignore"]
        )
        outputs: dict[str, Any] = {}
        for name, keys in METRICS.items():
            value = next((metrics[k] for k in keys if k in metrics), None)
            outputs[name] = float(value) if value is not None else math.nan
        if metrics.get("input_kind") == "intensity":
            feedback.info("INPUT is a change intensity, not a 1/0 map: only AUC is computed.")
        feedback.info(", ".join(f"{k} {v:.4f}" for k, v in outputs.items() if not math.isnan(v)))
        outputs["OUTPUT_REPORT"] = None
        if job["report"]:
            from ..core.report.report import write_evaluation_report

            write_evaluation_report(
                job["report"], job["change"], job["reference"], job["changed"], job["unchanged"], job["ignore"]
            )
            outputs["OUTPUT_REPORT"] = job["report"]
        return outputs
