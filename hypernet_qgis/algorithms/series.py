"""Processing algorithm ``hypernet:detectseries``: change along a series of dates (core.series)."""

from __future__ import annotations

import os
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingOutputFile,
    QgsProcessingOutputRasterLayer,
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from ..core import options
from ..core.errors import InputError
from ..qgis_compat import NUMBER_DOUBLE, SOURCE_RASTER
from .base import (
    CONNECTIVITIES,
    HyperNetAlgorithm,
    Job,
    Output,
    QgisFeedback,
    check_device,
    parse_band_list,
    require_engine,
)

METHODS = ["hypernet", "cva", "sam", "irmad", "pcakmeans"]
SERIES_THRESHOLDS = ["default", "otsu", "kmeans", "fixed"]
TRAININGS = list(options.SERIES_TRAININGS)


class DetectSeriesAlgorithm(HyperNetAlgorithm):
    """N dates -> a change map per consecutive pair, the first date and the number of changes, polygons."""

    ALG_ID = "detectseries"
    DISPLAY = "Detect change in a time series"
    GROUP = "HyperNet (deep learning)"
    GROUP_ID = "hypernetdeep"
    ICON = "detect.svg"
    NEEDS_ENGINE = False  # only the hypernet method needs torch (checked in resolve)
    SHORT = "Change maps of consecutive dates, the first date of change and the number of changes per pixel."
    TAGS = ("time series", "series", "multitemporal", "first change", "dates")
    ANCHOR = "a-series-of-dates"
    HELP = (
        "<p>Change along a series of images of the same place: a change map for each pair of consecutive dates "
        "(HyperNet, or a classic method), a <i>first change</i> raster (the first date pair that changed, 0 = "
        "never; styled with one colour per date pair) and a <i>number of changes</i> raster, and optionally the "
        "change polygons of every pair with their date pair.</p>"
        "<p><b>Inputs</b>: two or more images with the same bands; their dates (one per image, e.g. "
        "2019-05-01,2020-05-01,2021-05-01; empty: the acquisition dates in the files' metadata, else the order "
        "of the list). The images are ordered by date. A date on another grid than the first date's is warped "
        "onto it (advanced: ALIGN).</p>"
        "<p><b>HyperNet training</b>: <i>one model for all pairs</i> (default) trains once on crops of every "
        "consecutive pair: one training instead of one per pair, and every pair's map comes from the same "
        "features, so the maps compare across dates; the model is saved as series_model.hypernet for later "
        "dates. <i>A model per pair</i> fits each pair on its own (the paper's setting for one pair), at N-1 "
        "trainings. With a Model file, every pair uses that model.</p>"
        "<p><b>Outputs</b>: in the output folder change_&lt;i&gt;_&lt;date&gt;_&lt;date&gt;.tif per pair, "
        "first_change.tif, change_count.tif, change_polygons.gpkg and series_model.hypernet.</p>"
        "<p><b>Time</b>: one training (or one per pair) and one detection per pair.</p>"
    )

    def initAlgorithm(self, config: dict | None = None) -> None:  # noqa: N802
        self._add(
            QgsProcessingParameterMultipleLayers("INPUTS", "Images (two or more dates)", SOURCE_RASTER),
            help_text="The images of the series (same bands); ordered by their dates.",
        )
        self._add(
            QgsProcessingParameterString("DATES", "Dates, one per image (empty = metadata)", optional=True),
            help_text="e.g. 2019-05-01,2020-05-01,2021-05-01, in the order of the images.",
        )
        self._add(
            QgsProcessingParameterEnum(
                "METHOD", "Method", options=METHODS, defaultValue="hypernet", usesStaticStrings=True
            )
        )
        self._add(
            QgsProcessingParameterFile("MODEL", "Model file for every pair", extension="hypernet", optional=True),
            help_text="HyperNet only: a model from Train HyperNet applied to every pair; empty: train on the "
            "series (see HyperNet training).",
        )
        self._add(
            QgsProcessingParameterEnum(
                "TRAINING",
                "HyperNet training",
                options=TRAININGS,
                defaultValue=options.DEFAULT_SERIES_TRAINING,
                optional=True,
                usesStaticStrings=True,
            ),
            help_text="shared: one model for all pairs (default: one training, the same features for every pair, "
            "saved as series_model.hypernet); per-pair: a model trained on each pair.",
        )
        self.add_bands()
        self._add(
            QgsProcessingParameterEnum(
                "THRESHOLD_METHOD",
                "Threshold method",
                options=SERIES_THRESHOLDS,
                defaultValue="default",
                usesStaticStrings=True,
            )
        )
        self._add(QgsProcessingParameterNumber("THRESHOLD", "Fixed threshold", NUMBER_DOUBLE, optional=True))
        self.add_device()
        self._add(
            QgsProcessingParameterBoolean(
                "POLYGONS", "Also write the change polygons", defaultValue=True, optional=True
            )
        )
        self._add(
            QgsProcessingParameterNumber(
                "MIN_AREA",
                "Minimum region area (map units²)",
                NUMBER_DOUBLE,
                defaultValue=0.0,
                optional=True,
                minValue=0.0,
            )
        )
        self._add(
            QgsProcessingParameterEnum(
                "CONNECTIVITY",
                "Region connectivity",
                options=CONNECTIVITIES,
                defaultValue="8",
                optional=True,
                usesStaticStrings=True,
            ),
            True,
        )
        self.add_training(advanced=True)
        self.add_training_advanced()
        self.add_align(series=True)
        self._add(QgsProcessingParameterFolderDestination("OUTPUT_FOLDER", "Output folder"))
        self.addOutput(QgsProcessingOutputRasterLayer("FIRST_CHANGE", "First change (pair number)"))
        self.addOutput(QgsProcessingOutputRasterLayer("CHANGE_COUNT", "Number of changes"))
        self.addOutput(QgsProcessingOutputVectorLayer("OUTPUT_POLYGONS", "Change polygons of the series"))
        self.addOutput(QgsProcessingOutputFile("OUTPUT_MODEL", "Model trained on the series"))

    def resolve(self, parameters: dict, context: QgsProcessingContext) -> Job:
        layers = self.parameterAsLayerList(parameters, "INPUTS", context)
        images = []
        for layer in layers:
            if layer.providerType() != "gdal":
                raise InputError(
                    f"'{layer.name()}' is a '{layer.providerType()}' layer; the series reads raster "
                    "files. Save it as a GeoTIFF first."
                )
            images.append(layer.dataProvider().dataSourceUri().split("|")[0])
        if len(images) < 2:
            raise InputError(
                f"A series needs at least two dates; got {len(images)} image"
                f"{'s' if len(images) != 1 else ''}. Select two or more images."
            )
        text = self.parameterAsString(parameters, "DATES", context)
        dates = [d.strip() for d in text.replace(";", ",").split(",")] if text and text.strip() else None
        from ..core.series import order_images

        ordered, _ = order_images(images, dates, QgisFeedback(None))  # the date checks, up front
        from ..core.io.raster_io import raster_info
        from ..core.series import check_series_grid

        align = self.align_values(parameters, context)
        check_series_grid([raster_info(p) for p in ordered], align["align"])  # grids, up front
        method = self.enum_string(parameters, "METHOD", context, METHODS)
        if method == "hypernet":
            require_engine()
        model = self.parameterAsFile(parameters, "MODEL", context) or None
        if model and method != "hypernet":
            raise InputError("Model file applies to the hypernet method only; leave it empty for a classic method.")
        threshold = self.enum_string(parameters, "THRESHOLD_METHOD", context, SERIES_THRESHOLDS)
        value = self.optional_number(parameters, "THRESHOLD", context)
        if threshold == "fixed" and value is None:
            raise InputError("Threshold method is fixed but no Fixed threshold was given.")
        config = self.training_values(parameters, context)
        check_device(config["device"])
        connectivity = self.parameterAsEnumString(parameters, "CONNECTIVITY", context) or "8"
        polygons = parameters.get("POLYGONS") in (None, "") or self.parameterAsBool(parameters, "POLYGONS", context)
        training = (
            self.enum_string(parameters, "TRAINING", context, TRAININGS)
            if parameters.get("TRAINING") not in (None, "")
            else options.DEFAULT_SERIES_TRAINING
        )
        job = Job(
            {
                "images": images,
                "dates": dates,
                "method": method,
                "model": model,
                "training": training,
                **align,
                "bands": parse_band_list(self.parameterAsString(parameters, "BANDS", context)),
                "threshold": threshold,
                "threshold_value": value,
                "config": config,
                "polygons": bool(polygons),
                "min_area": self.optional_number(parameters, "MIN_AREA", context) or 0.0,
                "connectivity": int(connectivity),
            },
            inputs=list(images) + [model],
        )
        chosen = parameters.get("OUTPUT_FOLDER")
        if isinstance(chosen, str) and chosen and chosen != "TEMPORARY_OUTPUT":
            parent = os.path.dirname(os.path.abspath(chosen))
            if not os.path.isdir(parent):
                raise InputError(
                    f"Output folder: the folder {parent} does not exist. Create it or choose another output folder."
                )
        return job

    def bind_outputs(self, job: Job, parameters: dict, context: QgsProcessingContext) -> None:
        """The output folder (made if needed; a temporary one for "Save to a temporary folder")."""
        super().bind_outputs(job, parameters, context)
        folder = self.parameterAsFileOutput(parameters, "OUTPUT_FOLDER", context)
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise InputError(
                f"Output folder {folder} cannot be made ({exc.strerror or exc}). Choose another folder."
            ) from None
        job.values["folder"] = folder
        self._context = context  # the worker's context: the results are registered there for loading

    def run_job(self, job: Job, feedback: QgisFeedback) -> dict[str, Any]:
        from ..core.series import series_files

        folder = job["folder"]
        kwargs: dict[str, Any] = {"bands": job["bands"]}
        if job["threshold"] != "default":
            kwargs.update(threshold=job["threshold"], threshold_value=job["threshold_value"])
        if job["method"] == "hypernet":  # the engine in a child process, as Detect Change (engine_process.py)
            from types import SimpleNamespace

            from ..engine_process import series_argv

            summary = self.run_engine(series_argv(job.values), feedback)
            res = SimpleNamespace(
                first_change=summary["first_change"],
                change_count=summary["change_count"],
                polygons=summary.get("polygons"),
                model=summary.get("model"),
            )
        else:
            res = series_files(
                job["images"],
                folder,
                dates=job["dates"],
                method=job["method"],
                training=job["training"],
                align=job["align"],
                resampling=job["resampling"],
                polygons=job["polygons"],
                min_area=job["min_area"],
                connectivity=job["connectivity"],
                feedback=feedback,
                **kwargs,
            )
        self._register(res)
        return {
            "OUTPUT_FOLDER": folder,
            "FIRST_CHANGE": res.first_change,
            "CHANGE_COUNT": res.change_count,
            "OUTPUT_POLYGONS": res.polygons,
            "OUTPUT_MODEL": res.model,
        }

    def _register(self, res) -> None:
        """Load the first change, the number of changes and the polygons into the project when run from the
        dialog: styled (first change by date pair, number of changes by count, polygons outlined), named and
        stacked (polygons on top)."""
        from qgis.core import QgsProcessingContext as Context

        from ..styling import CHANGE_COUNT, FIRST_CHANGE, POLYGONS

        context = getattr(self, "_context", None)
        if context is None or context.project() is None:
            return
        for path, name, output, style in (
            (res.change_count, "Number of changes", "CHANGE_COUNT", CHANGE_COUNT),
            (res.first_change, "First change (pair number)", "FIRST_CHANGE", FIRST_CHANGE),
            (res.polygons, "Change polygons of the series", "OUTPUT_POLYGONS", POLYGONS),
        ):
            if not path:
                continue
            details = Context.LayerDetails(name, context.project(), output)
            context.addLayerToLoadOnCompletion(path, details)
            # named and stacked (polygons on top, styled) by the base class's post-processing
            self._job.outputs.append(
                Output(output, output.lower(), name, "file", temporary=True, style=style, layer_name=name)
            )
            self._job.values[output.lower()] = path
