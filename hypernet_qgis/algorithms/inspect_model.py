"""Processing algorithm ``hypernet:inspectmodel``: an HTML page describing a HyperNet model file."""

from __future__ import annotations

import math
import os
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
)

from ..core.errors import InputError
from ..qgis_compat import FILE_BEHAVIOR_FILE
from .base import HTML_FILTER, HyperNetAlgorithm, Job, QgisFeedback


def read_model_metadata(path: str) -> dict:
    """A model file's JSON metadata, read safely and without torch (core.hypernet.model_metadata; no code in the
    file is run, no weight is read)."""
    from ..core.hypernet.model_metadata import read_metadata

    return read_metadata(path)


class InspectModelAlgorithm(HyperNetAlgorithm):
    """Writes an HTML report of what a model file records: training settings, loss per epoch, versions."""

    ALG_ID = "inspectmodel"
    DISPLAY = "Inspect HyperNet model"
    GROUP = "HyperNet (deep learning)"
    GROUP_ID = "hypernetdeep"
    ICON = "hypernet.svg"
    NEEDS_ENGINE = False  # the metadata is read without torch (core.hypernet.model_metadata)
    SHORT = "An HTML page of what a HyperNet model file records: bands, widths, loss curve, settings, versions."
    TAGS = ("hypernet", "model", "metadata", "report")
    ANCHOR = "inspect-hypernet-model"
    HELP = (
        "<p>Shows what a HyperNet model file records about how it was made, as an HTML page: the number of bands "
        "and the network widths, the training loss per epoch (as a curve), the training settings (epochs, "
        "learning rate, seed, device, training pixels), the scaling statistics and the software versions.</p>"
        "<p><b>Input</b>: a model file written by <i>Train HyperNet</i> (or <i>Detect Change</i>). It is read "
        "safely: a file that carries program code instead of weights is refused.</p>"
        "<p><b>Output</b>: a self-contained HTML report (pictures included) that opens in the Results Viewer or "
        "any web browser; also the band count, epochs and final loss as numbers.</p>"
        "<p><b>Time</b>: about a second.</p>"
    )

    def initAlgorithm(self, config: dict | None = None) -> None:  # noqa: N802
        self._add(
            QgsProcessingParameterFile(
                "INPUT",
                "HyperNet model file",
                behavior=FILE_BEHAVIOR_FILE,
                fileFilter="HyperNet model (*.hypernet *.pt);;All files (*.*)",
            )
        )
        self._add(QgsProcessingParameterFileDestination("OUTPUT_REPORT", "Model report (HTML)", HTML_FILTER))
        self.addOutput(QgsProcessingOutputNumber("BANDS", "Bands the model was trained on"))
        self.addOutput(QgsProcessingOutputNumber("EPOCHS", "Training epochs"))
        self.addOutput(QgsProcessingOutputNumber("FINAL_LOSS", "Final training loss"))
        self.addOutput(QgsProcessingOutputString("DEVICE_USED", "Device that trained the model"))

    def resolve(self, parameters: dict, context: QgsProcessingContext) -> Job:
        model = self.parameterAsFile(parameters, "INPUT", context)
        if not model:
            raise InputError("HyperNet model file is empty: pick a model file written by Train HyperNet.")
        model = os.path.abspath(os.path.expanduser(model))
        if not os.path.isfile(model):
            raise InputError(f"Model file {model} does not exist. Pick a model file written by Train HyperNet.")
        job = Job({"model": model}, inputs=[model])
        report = self.declare_output(job, parameters, context, "OUTPUT_REPORT", "report")
        if report.chosen and os.path.exists(report.chosen) and os.path.samefile(report.chosen, model):
            raise InputError("The report would overwrite the model file; choose another file name such as model.html.")
        return job

    def run_job(self, job: Job, feedback: QgisFeedback) -> dict[str, Any]:
        from ..core.report.report import model_report

        meta = read_model_metadata(job["model"])
        feedback.set_progress(0.5)
        model_report(job["report"], meta, source=job["model"])
        feedback.set_progress(1.0)
        history = meta.get("loss_history") or []
        try:
            final_loss = float(history[-1]) if history else math.nan
        except (TypeError, ValueError):
            final_loss = math.nan
        bands = meta.get("band_count", meta.get("bands"))
        bands = float(bands) if isinstance(bands, (int, float)) and not isinstance(bands, bool) else math.nan
        device = str(meta.get("device") or "")
        feedback.info(
            f"{os.path.basename(job['model'])}: {bands:g} bands, {len(history)} epochs, final loss "
            f"{final_loss:.6g}, trained on {device or 'an unrecorded device'}."
        )
        return {
            "OUTPUT_REPORT": job["report"],
            "BANDS": bands,
            "EPOCHS": float(len(history)),
            "FINAL_LOSS": final_loss,
            "DEVICE_USED": device,
        }
