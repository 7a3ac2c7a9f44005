"""Processing algorithm ``hypernet:classicchange``: CVA, SAM, IR-MAD or PCA-k-means change detection."""

from __future__ import annotations

from typing import Any

from qgis.core import QgsProcessingContext, QgsProcessingOutputNumber, QgsProcessingParameterEnum

from ..core import options
from .base import (
    HyperNetAlgorithm,
    Job,
    QgisFeedback,
    check_band_choice,
    check_pair,
    layer_path,
    parse_band_list,
    pipeline,
)

METHODS = list(options.CLASSIC_METHODS)
CLASSIC_THRESHOLDS = ["default", "otsu", "kmeans", "fixed"]


class ClassicChangeAlgorithm(HyperNetAlgorithm):
    """Classic (non-deep) change detection, for comparison with HyperNet."""

    ALG_ID = "classicchange"
    DISPLAY = "Classic change detection"
    GROUP = "Classic methods"
    GROUP_ID = "classic"
    ICON = "classic.svg"
    NEEDS_ENGINE = False
    SHORT = "CVA, SAM, IR-MAD or PCA-k-means change map of two dates, to compare with HyperNet (no torch needed)."
    TAGS = (
        "cva",
        "change vector analysis",
        "sam",
        "spectral angle",
        "ir-mad",
        "irmad",
        "mad",
        "pca",
        "k-means",
        "kmeans",
        "baseline",
        "classic",
    )
    ANCHOR = "classic-change-detection"
    HELP = (
        "<p>Classic change detection between two images of the same place at two dates, to compare with "
        "HyperNet or when no deep learning is wanted. Methods: <b>cva</b> (change vector analysis: length of "
        "the difference of the per-date standardised spectra), <b>sam</b> (spectral angle), <b>irmad</b> "
        "(iteratively reweighted multivariate alteration detection, robust to gain and offset between the dates) "
        "and <b>pcakmeans</b> (PCA of difference-image blocks, then 2-means).</p>"
        "<p><b>Inputs</b>: <i>T1</i> and <i>T2</i> on the same grid with the same bands (SAM, IR-MAD and "
        "PCA-k-means need at least 2 bands); optionally a band list and the threshold method (<i>default</i> "
        "= the method's usual one).</p>"
        "<p><b>Outputs</b>: the change map (1 change, 0 no change, 255 nodata, styled) and optionally the "
        "change intensity; the number and fraction of changed pixels and the changed area in hectares; "
        "optionally the change polygons (GeoPackage, one polygon per connected changed region with its area "
        "and intensity; regions below the minimum area dropped).</p>"
        "<p><b>Time</b>: seconds for a few hundred thousand pixels (IR-MAD iterates, a little longer).</p>"
    )

    def initAlgorithm(self, config: dict | None = None) -> None:  # noqa: N802
        self._add(
            QgsProcessingParameterEnum("METHOD", "Method", options=METHODS, defaultValue="cva", usesStaticStrings=True)
        )
        self.add_pair()
        self.add_bands()
        self.add_threshold(CLASSIC_THRESHOLDS, default="default")
        self.add_change_outputs()
        self.addOutput(QgsProcessingOutputNumber("CHANGED_PIXELS", "Changed pixels"))
        self.addOutput(QgsProcessingOutputNumber("CHANGED_FRACTION", "Changed fraction of the valid pixels"))
        self.addOutput(QgsProcessingOutputNumber("THRESHOLD_USED", "Threshold on the intensity"))
        self.add_polygon_outputs()
        self.add_align()
        self.add_band_choice()

    def resolve(self, parameters: dict, context: QgsProcessingContext) -> Job:
        method = self.enum_string(parameters, "METHOD", context, METHODS)
        t1 = layer_path(self, parameters, "INPUT_T1", context, "Image T1")
        t2 = layer_path(self, parameters, "INPUT_T2", context, "Image T2")
        bands = parse_band_list(self.parameterAsString(parameters, "BANDS", context))
        aligning = {**self.align_values(parameters, context), **self.band_choice_values(parameters, context)}
        check_pair(t1, t2, bands, min_bands=1 if method == "cva" else 2, what=method.upper(), align=aligning["align"])
        check_band_choice(t1, t2, bands, aligning)
        threshold, value = self.threshold_values(parameters, context, CLASSIC_THRESHOLDS)
        job = Job(
            {
                "method": method,
                "t1": t1,
                "t2": t2,
                "bands": bands,
                "threshold": None if threshold == "default" else threshold,
                "threshold_value": value,
                **aligning,
            },
            inputs=[t1, t2],
        )
        self.declare_output(
            job, parameters, context, "OUTPUT_CHANGE", "change", "change", f"Change map ({method.upper()})"
        )
        self.declare_output(
            job,
            parameters,
            context,
            "OUTPUT_INTENSITY",
            "intensity",
            "intensity",
            f"Change intensity ({method.upper()})",
        )
        job.values.update(self.polygon_values(parameters, context))
        self.declare_output(
            job, parameters, context, "OUTPUT_POLYGONS", "polygons", "polygons", f"Change polygons ({method.upper()})"
        )
        self.check_polygon_request(job)
        return job

    def run_job(self, job: Job, feedback: QgisFeedback) -> dict[str, Any]:
        result = pipeline(engine=False).baseline_files(
            job["method"],
            job["t1"],
            job["t2"],
            job["change"],
            intensity_out=job["intensity"],
            threshold=job["threshold"],
            threshold_value=job["threshold_value"],
            bands=job["bands"],
            feedback=feedback,
            align=job["align"],
            resampling=job["resampling"],
            drop_bad_bands=job["drop_bad_bands"],
            drop_water=job["drop_water"],
        )
        feedback.info(
            f"{job['method'].upper()}: threshold {result.threshold:.6g} ({result.threshold_method}); "
            f"{result.changed_pixels} of {result.valid_pixels} valid pixels changed."
        )
        return {
            "OUTPUT_CHANGE": job["change"],
            "OUTPUT_INTENSITY": job["intensity"],
            "CHANGED_PIXELS": int(result.changed_pixels),
            "CHANGED_FRACTION": float(result.changed_fraction),
            "THRESHOLD_USED": float(result.threshold),
            **self.finish_polygons(job, result, feedback),
        }
