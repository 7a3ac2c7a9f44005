"""Processing algorithm ``hypernet:detectchange``: HyperNet change map (and intensity) of a pair of images."""

from __future__ import annotations

import os
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingOutputNumber,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
)

from ..core import options
from ..core.errors import InputError
from .base import (
    MODEL_FILTER,
    HyperNetAlgorithm,
    Job,
    QgisFeedback,
    check_band_choice,
    check_device,
    check_mask,
    check_pair,
    layer_path,
    model_band_count,
    model_band_selection,
    parse_band_list,
)

#: Detect Change's threshold methods: "auto" is the engine's default for its intensity (core/fusion.py).
DETECT_THRESHOLDS = ["auto", "otsu", "kmeans", "mixture", "mrf", "fixed"]


class DetectChangeAlgorithm(HyperNetAlgorithm):
    """Change detection with HyperNet: a model file, or training on the pair first."""

    ALG_ID = "detectchange"
    DISPLAY = "Detect Change"
    GROUP = "HyperNet (deep learning)"
    GROUP_ID = "hypernetdeep"
    ICON = "detect.svg"
    SHORT = "Change map of two dates with the self-supervised HyperNet network (trains on the pair, no labels)."
    TAGS = ("hypernet", "deep learning", "self-supervised", "change map", "torch")
    ANCHOR = "detect-change"
    HELP = (
        "<p>Finds where two images of the same place, taken at two dates, have changed, with the self-supervised "
        "<b>HyperNet</b> network (Hu, Wu and Zhang, IEEE TGRS 2022). Without a model file it first trains HyperNet "
        "on this pair (no labels needed; the training settings are under <i>Advanced</i>).</p>"
        "<p><b>Inputs</b>: <i>T1</i> and <i>T2</i>, multi- or hyperspectral rasters on the same grid (size, "
        "pixel size, CRS) with the same bands; optionally a model file from <i>Train HyperNet</i> (same sensor and "
        "bands), a band list, and the threshold method: <i>auto</i> (default: <i>mrf</i>, a two-Gaussian "
        "mixture whose map is regularised by each pixel's 5x5 neighbours), <i>otsu</i>, <i>kmeans</i>, "
        "<i>mixture</i> (pixel by pixel), <i>mrf</i>, or <i>fixed</i> with your fixed threshold.</p>"
        "<p><b>Intensity</b>: by default HyperNet's feature distance averaged with IR-MAD and CVA, each divided "
        "by its median (more accurate and far more stable than any of them alone on the benchmark pairs; "
        "BENCHMARKS.md); <i>Evidence = hypernet</i> uses HyperNet's distance alone.</p>"
        "<p><b>Outputs</b>: the change map, a GeoTIFF on T1's grid with 1 = change (red), 0 = no change "
        "(transparent, so the image beneath shows), 255 = nodata; optionally the change intensity (the larger, "
        "the more change; float GeoTIFF). Also the number and fraction of changed pixels and the changed area in "
        "hectares. Optionally the <i>change polygons</i> (GeoPackage): one polygon per connected changed region "
        "with its area (map units², hectares) and mean and maximum intensity; regions below the minimum area are "
        "dropped (and, as an option, removed from the change map). Styles are saved next to the files (.qml).</p>"
        "<p><b>Time</b>: seconds with a model; with training about a minute for a few hundred thousand pixels of "
        "~200 bands on a CPU (default schedule), much less on a CUDA GPU. The log says which device ran. "
        "Cancelling stops within one epoch or tile and writes nothing.</p>"
    )

    def initAlgorithm(self, config: dict | None = None) -> None:  # noqa: N802
        self.add_pair()
        self._add(
            QgsProcessingParameterFile(
                "MODEL", "Model file (empty = train on this pair)", extension="hypernet", optional=True
            ),
            help_text="A model from Train HyperNet (same sensor and bands). Empty: train on this pair first; "
            "the training settings are under Advanced.",
        )
        self.add_bands()
        self.add_threshold(DETECT_THRESHOLDS, default="auto")
        self._add(
            QgsProcessingParameterEnum(
                "EVIDENCE",
                "Change evidence",
                options=list(options.EVIDENCE_MODES),
                defaultValue=options.DEFAULT_EVIDENCE,
                usesStaticStrings=True,
            ),
            True,
            "fused (default): HyperNet's feature distance averaged with IR-MAD and CVA, each divided by its median; "
            "hypernet: HyperNet's distance alone (Otsu on its root).",
        )
        self.add_device()
        self.add_change_outputs()
        self.add_training(advanced=True)
        self.add_training_advanced()
        self._add(
            QgsProcessingParameterFileDestination(
                "OUTPUT_MODEL", "Save the model trained on the fly", MODEL_FILTER, optional=True, createByDefault=False
            ),
            True,
        )
        self.add_report("Detection report (HTML)")
        self.addOutput(QgsProcessingOutputNumber("CHANGED_PIXELS", "Changed pixels"))
        self.addOutput(QgsProcessingOutputNumber("CHANGED_FRACTION", "Changed fraction of the valid pixels"))
        self.addOutput(QgsProcessingOutputNumber("THRESHOLD_USED", "Threshold on the intensity"))
        self.add_polygon_outputs()
        self.add_align()
        self.add_band_choice()

    def resolve(self, parameters: dict, context: QgsProcessingContext) -> Job:
        t1 = layer_path(self, parameters, "INPUT_T1", context, "Image T1")
        t2 = layer_path(self, parameters, "INPUT_T2", context, "Image T2")
        bands = parse_band_list(self.parameterAsString(parameters, "BANDS", context))
        model = self.parameterAsFile(parameters, "MODEL", context) or None
        if model:
            model = os.path.abspath(model)
            trained_on = model_band_count(model)
            if bands is None:  # the model's bands: by wavelength when both know them, else its own numbers
                from ..core.hypernet.model_metadata import read_metadata
                from ..core.io.bands import bands_for_model

                bands = bands_for_model(t1, read_metadata(model)) or model_band_selection(model)
        aligning = {**self.align_values(parameters, context), **self.band_choice_values(parameters, context)}
        info = check_pair(t1, t2, bands, min_bands=2, align=aligning["align"])
        if not (model and bands is None):  # (a model brings its own band selection)
            check_band_choice(t1, t2, bands, aligning)
        if model:
            count = len(bands) if bands is not None else info.bands
            if trained_on != count:
                raise InputError(
                    f"The model {os.path.basename(model)} was trained on {trained_on} bands but the images have "
                    f"{count}{' after the band selection' if bands else ''}. Use images from the same sensor with "
                    "the same Bands as in training, or leave Model file empty to train on this pair."
                )
        mask = layer_path(self, parameters, "UNCHANGED_MASK", context, "Known unchanged pixels", optional=True)
        if mask:
            check_mask(mask, info)
        method, value = self.threshold_values(parameters, context, DETECT_THRESHOLDS)
        config = self.training_values(parameters, context)
        check_device(config["device"])
        job = Job(
            {
                "t1": t1,
                "t2": t2,
                "bands": bands,
                "model": model,
                "mask": mask,
                "threshold": method,
                "threshold_value": value,
                "config": config,
                "evidence": self.enum_string(parameters, "EVIDENCE", context, list(options.EVIDENCE_MODES)),
                **aligning,
            },
            inputs=[t1, t2, model, mask],
        )
        self.declare_output(job, parameters, context, "OUTPUT_CHANGE", "change", "change", "Change map (HyperNet)")
        self.declare_output(
            job, parameters, context, "OUTPUT_INTENSITY", "intensity", "intensity", "Change intensity (HyperNet)"
        )
        model_out = self.declare_output(job, parameters, context, "OUTPUT_MODEL", "model_out")
        self.declare_output(job, parameters, context, "OUTPUT_REPORT", "report")
        job.values.update(self.polygon_values(parameters, context))
        self.declare_output(
            job, parameters, context, "OUTPUT_POLYGONS", "polygons", "polygons", "Change polygons (HyperNet)"
        )
        self.check_polygon_request(job)
        if model and model_out.requested:
            raise InputError(
                "Save the model trained on the fly is set, but a Model file is given (nothing is "
                "trained). Leave one of them empty."
            )
        return job

    def run_job(self, job: Job, feedback: QgisFeedback) -> dict[str, Any]:
        """The engine's ``detect`` in a child process (engine_process.py): the same core.pipeline.detect_files the
        CLI runs, with polygons, the model trained on the fly and the report."""
        from ..engine_process import detect_argv

        if job["model"]:
            feedback.info(f"Using the model {job['model']}; the training parameters are not used.")
        if job.get("min_area") and not job.get("polygons"):
            feedback.info("Minimum region area applies to the Change polygons, which were not asked for.")
        summary = self.run_engine(detect_argv(job.values), feedback)
        return {
            "OUTPUT_CHANGE": job["change"],
            "OUTPUT_INTENSITY": job["intensity"],
            "CHANGED_PIXELS": int(summary["changed_pixels"]),
            "CHANGED_FRACTION": float(summary["changed_fraction"]),
            "THRESHOLD_USED": float(summary["threshold"]),
            "OUTPUT_MODEL": summary.get("model"),
            "OUTPUT_REPORT": job["report"] or None,
            "OUTPUT_POLYGONS": summary.get("polygons"),
            "POLYGON_COUNT": summary.get("polygon_count"),
            "CHANGED_AREA_HA": summary.get("changed_hectares"),
        }
