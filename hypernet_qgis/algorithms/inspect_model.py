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
from .base import HTML_FILTER, HyperNetAlgorithm, Job, QgisFeedback, check_output_path


def read_model_metadata(path: str) -> dict:
    """A model file's JSON metadata, read safely (core.model_file; no code in the file is run)."""
    from ..core import model_file

    reader = getattr(model_file, "read_metadata", None)
    return reader(path) if reader is not None else model_file.load_model(path)[1]


class InspectModelAlgorithm(HyperNetAlgorithm):
    """Writes an HTML report of what a model file records: training settings, loss per epoch, versions."""

    ALG_ID = "inspectmodel"
    DISPLAY = "Inspect HyperNet model"
    GROUP = "HyperNet (deep learning)"
    GROUP_ID = "hypernetdeep"
    ICON = "hypernet.svg"
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
        self._add(QgsProcessingParameterFile(
            "INPUT", "HyperNet model file", behavior=QgsProcessingParameterFile.File,
            fileFilter="HyperNet model (*.hypernet *.pt);;All files (*.*)"))
        self._add(QgsProcessingParameterFileDestination("OUTPUT_REPORT", "Model report (HTML)", HTML_FILTER))
        self.addOutput(QgsProcessingOutputNumber("BANDS", "Bands the model was trained on"))
        self.addOutput(QgsProcessingOutputNumber("EPOCHS", "Training epochs"))
        self.addOutput(QgsProcessingOutputNumber("FINAL_LOSS", "Final training loss"))
        self.addOutput(QgsProcessingOutputString("DEVICE_USED", "Device that trained the model"))

    def resolve(self, parameters: dict, context: QgsProcessingContext) -> Job:
        model = self.parameterAsFile(parameters, "INPUT", context)
        if not model:
            raise InputError("INPUT needs a HyperNet model file (written by Train HyperNet).")
        model = os.path.abspath(os.path.expanduser(model))
        if not os.path.isfile(model):
            raise InputError(f"Model file {model} does not exist. Pick a model file written by Train HyperNet.")
        report = self.parameterAsFileOutput(parameters, "OUTPUT_REPORT", context)
        if not report:
            raise InputError("OUTPUT_REPORT needs an output file name such as model.html.")
        report = check_output_path(report, "Model report")
        from ..core.paths import check_job_paths

        try:  # also a link to the model, or another spelling of its path
            check_job_paths({"The model report": report}, [model])
        except InputError as exc:
            if "would overwrite" not in str(exc):
                raise
            raise InputError("The report would overwrite the model file; choose another file name such as "
                             "model.html.") from None
        return Job({"model": model, "report": report})

    def run_job(self, job: Job, feedback: QgisFeedback) -> dict[str, Any]:
        from ..core.report import model_report

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
        feedback.info(f"{os.path.basename(job['model'])}: {bands:g} bands, {len(history)} epochs, final loss "
                      f"{final_loss:.6g}, trained on {device or 'an unrecorded device'}.")
        return {"OUTPUT_REPORT": job["report"], "BANDS": bands, "EPOCHS": float(len(history)),
                "FINAL_LOSS": final_loss, "DEVICE_USED": device}
