"""Processing algorithm ``hypernet:detectchange``: HyperNet change map (and intensity) of a pair of images."""

from __future__ import annotations

import os
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingOutputNumber,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
)

from ..core.errors import InputError
from .base import MODEL_FILTER, HyperNetAlgorithm, Job, QgisFeedback, check_device, check_mask, \
    check_pair, layer_path, model_band_count, model_band_selection, parse_band_list, pipeline

#: Detect Change's threshold methods: "auto" is the engine's default for its intensity (core/fusion.py).
DETECT_THRESHOLDS = ["auto", "otsu", "kmeans", "mixture", "fixed"]


class DetectChangeAlgorithm(HyperNetAlgorithm):
    """Change detection with HyperNet: a model file, or training on the pair first."""

    ALG_ID = "detectchange"
    DISPLAY = "Detect Change"
    GROUP = "HyperNet (deep learning)"
    GROUP_ID = "hypernetdeep"
    ICON = "detect.svg"
    HELP = (
        "<p>Finds where two images of the same place, taken at two dates, have changed, with the self-supervised "
        "<b>HyperNet</b> network (Hu, Wu and Zhang, IEEE TGRS 2022). Without a model file it first trains HyperNet "
        "on this pair (no labels needed; the training settings are under <i>Advanced</i>).</p>"
        "<p><b>Inputs</b>: <i>T1</i> and <i>T2</i>, multi- or hyperspectral rasters on the same grid (size, "
        "pixel size, CRS) with the same bands; optionally a model file from <i>Train HyperNet</i> (same sensor and "
        "bands), a band list, and the threshold method: <i>auto</i> (default: a two-Gaussian mixture), "
        "<i>otsu</i>, <i>kmeans</i>, <i>mixture</i>, or <i>fixed</i> with your THRESHOLD.</p>"
        "<p><b>Intensity</b>: HyperNet's feature distance averaged with IR-MAD and CVA, each divided by its "
        "median (more accurate and stable than any of them alone on the benchmark pairs; BENCHMARKS.md).</p>"
        "<p><b>Outputs</b>: the change map, a GeoTIFF on T1's grid with 1 = change (red), 0 = no change (grey), "
        "255 = nodata; optionally the change intensity (the larger, the more change; float GeoTIFF). Also the "
        "number and fraction of changed pixels. Styles are saved next to the files (.qml).</p>"
        "<p><b>Time</b>: seconds with a model; with training about a minute for a few hundred thousand pixels of "
        "~200 bands on a CPU (default schedule), much less on a CUDA GPU. The log says which device ran. "
        "Cancelling stops within one epoch or tile and writes nothing.</p>"
    )

    def initAlgorithm(self, config: dict | None = None) -> None:  # noqa: N802
        self.add_pair()
        self._add(QgsProcessingParameterFile(
            "MODEL", "Model file (empty = train on this pair first)", extension="hypernet", optional=True))
        self.add_bands()
        self.add_threshold(DETECT_THRESHOLDS, default="auto")
        self.add_device()
        self.add_change_outputs()
        self.add_training(advanced=True)
        self.add_training_advanced()
        self._add(QgsProcessingParameterFileDestination(
            "OUTPUT_MODEL", "Save the model trained on the fly", MODEL_FILTER, optional=True, createByDefault=False),
            True)
        self.add_report("Detection report (HTML)")
        self.addOutput(QgsProcessingOutputNumber("CHANGED_PIXELS", "Changed pixels"))
        self.addOutput(QgsProcessingOutputNumber("CHANGED_FRACTION", "Changed fraction of the valid pixels"))
        self.addOutput(QgsProcessingOutputNumber("THRESHOLD_USED", "Threshold on the intensity"))

    def resolve(self, parameters: dict, context: QgsProcessingContext) -> Job:
        t1 = layer_path(self, parameters, "INPUT_T1", context, "Image T1")
        t2 = layer_path(self, parameters, "INPUT_T2", context, "Image T2")
        bands = parse_band_list(self.parameterAsString(parameters, "BANDS", context))
        model = self.parameterAsFile(parameters, "MODEL", context) or None
        if model:
            model = os.path.abspath(model)
            trained_on = model_band_count(model)
            if bands is None:  # the engine then uses the model's own band selection, if it has one
                bands = model_band_selection(model)
        info = check_pair(t1, t2, bands, min_bands=2)
        if model:
            count = len(bands) if bands is not None else info.bands
            if trained_on != count:
                raise InputError(
                    f"The model {os.path.basename(model)} was trained on {trained_on} bands but the images have "
                    f"{count}{' after the band selection' if bands else ''}. Use images from the same sensor with "
                    "the same BANDS as in training, or leave MODEL empty to train on this pair.")
        mask = layer_path(self, parameters, "UNCHANGED_MASK", context, "Unchanged mask", optional=True)
        if mask:
            check_mask(mask, info)
        method, value = self.threshold_values(parameters, context, DETECT_THRESHOLDS)
        config = self.training_values(parameters, context)
        check_device(config["device"])
        change = self.output_path(parameters, "OUTPUT_CHANGE", context, "Change map")
        intensity = self.output_path(parameters, "OUTPUT_INTENSITY", context, "Change intensity", optional=True)
        model_out = self.output_path(parameters, "OUTPUT_MODEL", context, "Model file", kind="file", optional=True)
        report = self.output_path(parameters, "OUTPUT_REPORT", context, "Report", kind="file", optional=True)
        if model and model_out:
            raise InputError("OUTPUT_MODEL saves a model trained on the fly, but MODEL is given (nothing is "
                             "trained). Leave one of them empty.")
        from ..core import raster_io

        raster_io.refuse_overwriting_inputs([change, intensity, model_out, report], [t1, t2, model, mask])
        job = Job({"t1": t1, "t2": t2, "bands": bands, "model": model, "mask": mask, "threshold": method,
                   "threshold_value": value, "config": config, "change": change, "intensity": intensity,
                   "model_out": model_out, "report": report})
        job.styled[change] = "change"
        job.names[change] = "Change map (HyperNet)"
        if intensity:
            job.styled[intensity] = "intensity"
            job.names[intensity] = "Change intensity (HyperNet)"
        return job

    def run_job(self, job: Job, feedback: QgisFeedback) -> dict[str, Any]:
        pipe = pipeline()
        from ..core.training import TrainConfig

        if job["model"]:
            feedback.info(f"Using the model {job['model']}; the training parameters are not used.")
        result = pipe.detect_files(
            job["t1"], job["t2"], job["change"], intensity_out=job["intensity"], model=job["model"],
            threshold=job["threshold"], threshold_value=job["threshold_value"], bands=job["bands"],
            unchanged_mask=job["mask"], config=TrainConfig(**job["config"]), feedback=feedback)
        outputs: dict[str, Any] = {
            "OUTPUT_CHANGE": job["change"], "OUTPUT_INTENSITY": job["intensity"],
            "CHANGED_PIXELS": int(result.changed_pixels), "CHANGED_FRACTION": float(result.changed_fraction),
            "THRESHOLD_USED": float(result.threshold), "OUTPUT_MODEL": None, "OUTPUT_REPORT": None,
        }
        if job["model_out"] and result.train is not None:
            from ..core.model_file import save_model

            save_model(job["model_out"], result.train.model, result.train.metadata())
            outputs["OUTPUT_MODEL"] = job["model_out"]
        if job["report"]:
            from ..core.report import write_detection_report

            write_detection_report(job["report"], result)
            outputs["OUTPUT_REPORT"] = job["report"]
        return outputs
