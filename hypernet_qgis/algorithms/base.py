"""Shared plumbing of the HyperNet Processing algorithms: ids, help, parameters, checks, feedback and errors.

Every algorithm resolves and checks its parameters once, in the main thread (``checkParameterValues`` and
``prepareAlgorithm``), into a plain :class:`Job` of file paths and numbers. ``processAlgorithm`` then runs in
a background thread and only touches that job, the core engine and the feedback (never the project or
widgets). Nothing here imports torch at module import, so the plugin loads when torch is missing.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from qgis.core import (
    QgsApplication,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputLayerDefinition,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
    QgsProperty,
)
from qgis.PyQt.QtGui import QIcon

from ..about import project_url
from ..core import options
from ..core.errors import Cancelled, InputError
from ..qgis_compat import (
    FLAG_ADVANCED,
    FLAG_OPTIONAL,
    NUMBER_DOUBLE,
    NUMBER_INTEGER,
    SOURCE_VECTOR_POLYGON,
    has_flag,
)
from ..resources import icon, icon_path

PROVIDER_ID = "hypernet"
DEVICES = list(options.DEVICES)
SCHEDULES = list(options.SCHEDULES)
THRESHOLD_METHODS = list(options.THRESHOLD_METHODS)
MIN_SIDE = options.MIN_SIDE
RASTER_EXTENSIONS = (".tif", ".tiff")
VECTOR_EXTENSIONS = (".gpkg",)
RESAMPLINGS = ["bilinear", "nearest", "cubic", "average"]
CONNECTIVITIES = ["8", "4"]
MODEL_FILTER = "HyperNet model (*.hypernet);;All files (*.*)"
HTML_FILTER = "HTML report (*.html *.htm)"
#: Third-party packages the engine imports; a ModuleNotFoundError for one of them gets install instructions.
EXTERNAL_PACKAGES = ("torch", "spectral", "numpy", "osgeo", "matplotlib")


# ------------------------------------------------------------------------------------- missing dependencies


def python_description() -> str:
    """Which Python runs inside QGIS (the one the engine is installed for and runs with), for messages."""
    from ..engine_setup import interpreter

    return f"{interpreter()}, Python {sys.version.split()[0]}"


def missing_dependency_message(module: str, detail: str = "") -> str:
    """One line: what is missing, for which Python, and the way out (the set-up algorithm)."""
    what = {"torch": "PyTorch ('torch')", "spectral": "the package 'spectral'"}.get(module, f"the package '{module}'")
    extra = f" ({detail})" if detail else ""
    if module not in ("torch", "spectral"):  # numpy, GDAL, matplotlib: QGIS's (the set-up never installs them)
        return (
            f"HyperNet needs {what}, which the Python QGIS runs ({python_description()}) cannot find{extra}: "
            "QGIS normally brings it; install it for that Python or repair QGIS (README 'When it fails')."
        )
    return (
        f"HyperNet needs {what}, which the Python QGIS runs ({python_description()}) cannot find{extra}: run "
        "Set up the HyperNet engine (hypernet:setupengine, in the Processing Toolbox under HyperNet change "
        "detection > Set-up) once, then run this again."
    )


class EngineMissing(InputError):
    """torch or spectral is not installed for QGIS's Python (the message names the set-up algorithm)."""


def require_engine() -> None:
    """Raise EngineMissing when torch or spectral cannot be found (looked up, never imported: the engine runs in
    a child process, engine_process.py)."""
    from .. import engine_setup

    missing = engine_setup.missing_packages(QgsApplication.qgisSettingsDirPath())
    if missing:
        raise EngineMissing(missing_dependency_message(missing[0]))


def pipeline(engine: bool = True):
    """The core pipeline module, imported on first use. ``engine``: the job needs torch (HyperNet itself); the
    classic and evaluation jobs do not, so they run in a QGIS whose Python lacks torch."""
    if engine:
        require_engine()
    from ..core import pipeline as module

    return module


# -------------------------------------------------------------------------------------------------- feedback


class QgisFeedback:
    """core.progress.Feedback on top of a QgsProcessingFeedback (progress 0..1 -> 0..100)."""

    def __init__(self, feedback: QgsProcessingFeedback | None) -> None:
        self.feedback = feedback

    def set_progress(self, fraction: float) -> None:
        if self.feedback is not None:
            self.feedback.setProgress(100.0 * max(0.0, min(1.0, float(fraction))))

    def info(self, message: str) -> None:
        if self.feedback is not None:
            self.feedback.pushInfo(message)

    def is_cancelled(self) -> bool:
        return self.feedback is not None and self.feedback.isCanceled()


# ---------------------------------------------------------------------------------------------- parsing


def parse_band_list(text: str | None, label: str = "Bands") -> list[int] | None:
    """'1,2,5-8' -> [1, 2, 5, 6, 7, 8]; empty -> None: the engine's one band-list syntax (core.options), messages
    naming the dialog's label."""
    return options.parse_band_list(text, label)


def parse_values(text: str | None, name: str) -> list[float]:
    """'1' or '1,2' (or '1;2') -> [1.0, 2.0]; empty -> []."""
    if text is None or not str(text).strip():
        return []
    try:
        return [float(v) for v in str(text).replace(";", ",").split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{name} {text!r} is not a list of numbers; write e.g. 1 or 1,2.") from None


def enum_by_number(raw: Any, options: list[str]) -> str | None:
    """An enum given by its number ("2" or 2, as `qgis_process help` lists them) -> the option; else None."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, str) and raw.strip().isdigit():
        raw = int(raw.strip())
    if isinstance(raw, int) and 0 <= raw < len(options):
        return options[raw]
    return None


def check_number_text(raw: Any, name: str, integer: bool = False) -> None:
    """InputError when a number parameter's raw value is not a (finite, whole if ``integer``) number.

    QGIS reads "abc" as 0, which would turn THRESHOLD=abc into a threshold of 0 (every pixel changed)."""
    if raw is None or raw == "" or isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        return
    try:
        value = float(raw)
    except ValueError:
        raise InputError(
            f"{name} {raw!r} is not a number. Enter a number{' (a whole number)' if integer else ''}."
        ) from None
    if not math.isfinite(value) or (integer and not value.is_integer()):
        raise InputError(
            f"{name} {raw!r} is not a {'whole' if integer else 'finite'} number. Enter a "
            f"{'whole' if integer else 'finite'} number."
        )


def unexpected_error_message(exc: BaseException) -> str:
    """One line for an exception that is not an InputError (so QGIS shows it instead of going down)."""
    return (
        f"Unexpected error while checking the parameters ({type(exc).__name__}: {exc}). Check the input files; "
        "if they look right, please report this."
    )


# ------------------------------------------------------------------------------------------------ checks


def layer_path(
    alg: QgsProcessingAlgorithm,
    parameters: dict,
    name: str,
    context: QgsProcessingContext,
    label: str,
    optional: bool = False,
) -> str | None:
    """File path of a raster layer parameter (a GDAL file); InputError when missing or not a file raster."""
    layer = alg.parameterAsRasterLayer(parameters, name, context)
    if layer is None:
        value = parameters.get(name)
        if optional and value in (None, ""):
            return None
        if isinstance(value, str) and os.path.exists(value):
            from ..core.io import raster_io

            raster_io.raster_info(value)  # raises InputError with GDAL's reason
        raise InputError(
            f"{label} could not be opened as a raster: {value!r}. Check that the file exists "
            "and is a raster GDAL can read (GeoTIFF, ENVI, ...)."
        )
    if layer.providerType() != "gdal":
        raise InputError(
            f"{label} '{layer.name()}' is a '{layer.providerType()}' layer; HyperNet reads raster "
            "files. Save the layer as a GeoTIFF first (Export > Save As)."
        )
    source = layer.dataProvider().dataSourceUri() if layer.dataProvider() else layer.source()
    return source.split("|")[0]


def check_output_path(path: str, label: str, extensions: tuple[str, ...] | None = None) -> str:
    """The extension fits the output's kind; then the engine's check (an existing folder that accepts a file)."""
    if not path:
        raise InputError(f"{label}: no output file was given.")
    path = os.path.abspath(os.path.expanduser(path))
    if extensions == VECTOR_EXTENSIONS and not path.lower().endswith(extensions):
        raise InputError(f"{label} {path} must be a GeoPackage (.gpkg). Change the file name's extension.")
    if extensions and not path.lower().endswith(extensions):
        raise InputError(
            f"{label} {path} must be a GeoTIFF ({', '.join(extensions)}); the change maps are written "
            "as tiled GeoTIFFs. Change the file name's extension."
        )
    from ..core.io.paths import check_output_file

    example = "changes.gpkg" if extensions == VECTOR_EXTENSIONS else "change.tif"
    return check_output_file(path, label, example)


def check_pair(t1: str, t2: str, bands: list[int] | None, min_bands: int, what: str = "HyperNet", align: bool = False):
    """The engine's pair check (``core.pair.check_pair_files``) with the dialog's labels; returns T1's RasterInfo."""
    from ..core.pair import DIALOG_LABELS, check_pair_files

    return check_pair_files(t1, t2, bands, min_bands, what, align=align, labels=DIALOG_LABELS)[0]


def check_band_choice(t1: str, t2: str, bands: list[int] | None, values: dict[str, Any]) -> None:
    """DROP_WATER without wavelengths, or no band left after leaving out the bad ones: refused up front."""
    from ..core.io.bands import choose_bands

    choose_bands(t1, t2, bands, drop_bad=values.get("drop_bad_bands", True), drop_water=values.get("drop_water", False))


def check_mask(path: str, like) -> None:
    """The unchanged mask is readable and covers T1's grid."""
    from ..core.io import raster_io

    info = raster_io.raster_info(path)
    if (info.rows, info.cols) != (like.rows, like.cols):
        raise InputError(
            f"The unchanged mask {info.name} is {info.cols}x{info.rows} pixels but the images are "
            f"{like.cols}x{like.rows}; it must cover the same grid."
        )


def model_band_count(path: str) -> int:
    """Band count a model file was trained on (InputError for a missing/damaged/foreign file). Read without torch
    (core.hypernet.model_metadata): the engine runs in its own process, QGIS only checks the file."""
    from ..core.hypernet.model_metadata import read_metadata

    return read_metadata(path)["band_count"]  # validated: a whole number from 1


def model_band_selection(path: str) -> list[int] | None:
    """The BANDS a model was trained with, if it records them (read without torch)."""
    from ..core.hypernet.model_metadata import read_metadata

    value = read_metadata(path).get("band_selection")
    return [int(v) for v in value] if isinstance(value, list) and value else None


def check_device(name: str) -> None:
    """DEVICE=cuda without a CUDA GPU is refused up front, without loading torch into QGIS: no NVIDIA driver, no
    CUDA (with a driver, the engine itself says whether its torch sees the GPU)."""
    from ..engine_setup import has_nvidia_driver

    name = (name or "auto").lower()
    if name not in DEVICES and not name.startswith("cuda:"):
        raise InputError(f"Unknown device {name!r}; use one of {', '.join(DEVICES)}.")
    if name.startswith("cuda") and not has_nvidia_driver():
        raise InputError(
            f"DEVICE={name} was asked for, but this machine has no NVIDIA driver, so torch sees no CUDA "
            "GPU. Use DEVICE=auto or cpu, or run on a machine with an NVIDIA GPU."
        )


# ------------------------------------------------------------------------------------------------- the job

#: The value Processing uses for "Save to a temporary file".
TEMPORARY = QgsProcessing.TEMPORARY_OUTPUT


@dataclass
class Output:
    """One output of a job: declared in the main thread (no file made, nothing registered), bound to a path in
    processAlgorithm, where Processing also registers it for loading in the context that is carried back."""

    name: str  # parameter name, e.g. OUTPUT_CHANGE
    key: str  # key of the path in Job.values, e.g. "change"
    label: str  # what the dialog calls it, for messages
    kind: str = "raster"  # "raster" (QgsProcessingParameterRasterDestination), "vector" or "file"
    chosen: str | None = None  # the file the user named; None for a temporary file or no output
    temporary: bool = False  # Processing makes a temporary file
    style: str | None = None  # "change" | "intensity": styled (and stacked) when loaded into the project
    layer_name: str = ""  # name of the loaded layer when the file is temporary

    @property
    def requested(self) -> bool:
        return self.temporary or self.chosen is not None

    def loaded_name(self) -> str:
        """The layer's name in the project: the file's base name when the user named the file."""
        if self.chosen and not self.temporary:
            return os.path.splitext(os.path.basename(self.chosen))[0]
        return self.layer_name


@dataclass
class Job:
    """Everything processAlgorithm needs, resolved in the main thread: paths, numbers, strings, outputs."""

    values: dict[str, Any] = field(default_factory=dict)
    outputs: list[Output] = field(default_factory=list)
    inputs: list[str | None] = field(default_factory=list)  # files the outputs must never overwrite

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)


def _project_raster_layers() -> list:
    """Multi-band file rasters of the current project, bottom of the Layers panel first (the order they were
    added, usually T1 before T2); empty outside the GUI's main thread."""
    try:
        from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
        from qgis.PyQt.QtCore import QThread

        app = QgsApplication.instance()
        if app is None or QThread.currentThread() is not app.thread():
            return []
        layers = [node.layer() for node in QgsProject.instance().layerTreeRoot().findLayers()]
    except Exception:  # no project, no GUI: no defaults
        return []
    return [
        lay
        for lay in reversed(layers)
        if isinstance(lay, QgsRasterLayer) and lay.providerType() == "gdal" and lay.bandCount() >= 2
    ]


def _extensions(kind: str) -> tuple[str, ...] | None:
    return RASTER_EXTENSIONS if kind == "raster" else VECTOR_EXTENSIONS if kind == "vector" else None


class HyperNetAlgorithm(QgsProcessingAlgorithm):
    """Base of the HyperNet algorithms: uniform ids, help, icons, parameter helpers, checks and errors."""

    ALG_ID = ""
    DISPLAY = ""
    GROUP = "Change detection"
    GROUP_ID = "changedetection"
    ICON = "hypernet.svg"
    HELP = ""
    #: One sentence for the Toolbox tooltip.
    SHORT = ""
    #: Words the Toolbox search finds the algorithm by.
    TAGS: tuple[str, ...] = ()
    #: README section of the algorithm (helpUrl).
    ANCHOR = "using-it"
    #: Needs torch and spectral (HyperNet itself); the classic and evaluation algorithms do not.
    NEEDS_ENGINE = True

    def __init__(self) -> None:
        super().__init__()
        self._job: Job | None = None

    # -- identity ----------------------------------------------------------------------------------------
    def name(self) -> str:
        return self.ALG_ID

    def displayName(self) -> str:  # noqa: N802
        return self.DISPLAY

    def group(self) -> str:
        return self.GROUP

    def groupId(self) -> str:  # noqa: N802
        return self.GROUP_ID

    def icon(self) -> QIcon:
        return icon(self.ICON)

    def svgIconPath(self) -> str:  # noqa: N802 (the Model Designer draws this on the algorithm's box)
        return icon_path(self.ICON)

    def shortHelpString(self) -> str:  # noqa: N802
        return self.HELP

    def shortDescription(self) -> str:  # noqa: N802
        return self.SHORT

    def tags(self) -> list[str]:
        return ["change detection", "hyperspectral", "multispectral", "bitemporal", *self.TAGS]

    def helpUrl(self) -> str:  # noqa: N802
        home = project_url("homepage")
        return f"{home}#{self.ANCHOR}" if home else ""

    def hasHtmlOutputs(self) -> bool:  # noqa: N802
        """The reports are optional: no "HTML output has been generated" notice unless one was asked for (the
        Results Viewer still lists a report that was written)."""
        return False

    def createInstance(self) -> HyperNetAlgorithm:  # noqa: N802
        return type(self)()

    # -- parameter helpers --------------------------------------------------------------------------------
    def _add(self, param: QgsProcessingParameterDefinition, advanced: bool = False, help_text: str = "") -> None:
        if advanced:
            param.setFlags(param.flags() | FLAG_ADVANCED)
        if help_text and hasattr(param, "setHelp"):
            param.setHelp(help_text)
        self.addParameter(param)

    def label(self, name: str) -> str:
        """The dialog's label of a parameter (for messages)."""
        definition = self.parameterDefinition(name)
        return definition.description() if definition is not None else name

    def add_pair(self) -> None:
        """T1 and T2; in the desktop they default to two different images of the project (oldest first)."""
        rasters = _project_raster_layers()
        t1 = rasters[0].id() if len(rasters) >= 2 else None
        t2 = rasters[1].id() if len(rasters) >= 2 else None
        self._add(
            QgsProcessingParameterRasterLayer("INPUT_T1", "Image T1 (first date)", defaultValue=t1),
            help_text="The image of the first date.",
        )
        self._add(
            QgsProcessingParameterRasterLayer("INPUT_T2", "Image T2 (second date)", defaultValue=t2),
            help_text="The image of the second date: same grid (size, pixel size, CRS) and bands as T1.",
        )

    def add_bands(self, advanced: bool = False) -> None:
        self._add(
            QgsProcessingParameterString("BANDS", "Bands (empty = all)", optional=True),
            advanced,
            "Band numbers from 1, e.g. 1-50,60,70-80; empty uses every band.",
        )

    def add_device(self, advanced: bool = False) -> None:
        self._add(
            QgsProcessingParameterEnum(
                "DEVICE", "Device", options=DEVICES, defaultValue="auto", usesStaticStrings=True
            ),
            advanced,
            "auto: a CUDA GPU when torch sees one, else the CPU.",
        )

    def add_training(self, advanced: bool) -> None:
        """The training parameters shared by Train HyperNet and Detect Change (training on the fly)."""
        self._add(
            QgsProcessingParameterRasterLayer("UNCHANGED_MASK", "Known unchanged pixels", optional=True),
            advanced,
            "A mask on T1's grid, non-zero where the land is known not to have changed; "
            "training uses those pixels instead of the automatic choice.",
        )
        epochs = QgsProcessingParameterNumber("EPOCHS", "Epochs", NUMBER_INTEGER, optional=True, minValue=1)
        self._add(epochs, advanced, "Empty: 60 with the default schedule, 200 with the paper schedule.")
        self._add(
            QgsProcessingParameterNumber(
                "LEARNING_RATE",
                "Learning rate (SGD)",
                NUMBER_DOUBLE,
                defaultValue=options.DEFAULT_LEARNING_RATE,
                minValue=1e-9,
            ),
            advanced,
        )
        self._add(
            QgsProcessingParameterNumber(
                "GAMMA", "Focal loss gamma", NUMBER_DOUBLE, defaultValue=options.DEFAULT_GAMMA, minValue=0.0
            ),
            advanced,
        )
        self._add(
            QgsProcessingParameterNumber(
                "SEED", "Random seed", NUMBER_INTEGER, defaultValue=0, minValue=0, maxValue=options.MAX_SEED
            ),
            advanced,
        )

    def add_training_advanced(self) -> None:
        self._add(
            QgsProcessingParameterEnum(
                "SCHEDULE", "Training schedule", options=SCHEDULES, defaultValue="default", usesStaticStrings=True
            ),
            True,
            "default: random crops per step (fast); paper: the whole image per step, 200 epochs, as published.",
        )
        self._add(
            QgsProcessingParameterNumber(
                "MEMORY_BUDGET_MB",
                "Memory budget (MB)",
                NUMBER_INTEGER,
                defaultValue=options.DEFAULT_MEMORY_BUDGET_MB,
                minValue=options.MIN_MEMORY_BUDGET_MB,
            ),
            True,
            "Bounds the training crops, the detection tiles and reading by windows.",
        )

    def add_threshold(self, options: list[str] = THRESHOLD_METHODS, default: str = "otsu") -> None:
        self._add(
            QgsProcessingParameterEnum(
                "THRESHOLD_METHOD", "Threshold method", options=options, defaultValue=default, usesStaticStrings=True
            )
        )
        self._add(
            QgsProcessingParameterNumber("THRESHOLD", "Fixed threshold", NUMBER_DOUBLE, optional=True),
            help_text="Only for the fixed method: a pixel whose intensity is above it counts as changed.",
        )

    def add_change_outputs(self) -> None:
        self._add(
            QgsProcessingParameterRasterDestination("OUTPUT_CHANGE", "Change map"),
            help_text="GeoTIFF on T1's grid: 1 change, 0 no change, 255 nodata.",
        )
        self._add(
            QgsProcessingParameterRasterDestination(
                "OUTPUT_INTENSITY", "Change intensity", optional=True, createByDefault=False
            ),
            help_text="Float GeoTIFF: the larger, the more change.",
        )

    def add_align(self, series: bool = False) -> None:
        """ALIGN and RESAMPLING (issue #11); optional with defaults so that saved models stay valid. ``series``:
        the words of a series (every date onto the first date's grid)."""
        if series:
            label, resampling = "Warp dates onto the first date's grid", "Resampling of warped dates"
            text = (
                "On (default): a date whose grid differs from the first date's is resampled onto it (nodata "
                "where it does not reach; the log says what was done). Off: such series are refused."
            )
        else:
            label, resampling = "Warp T2 onto T1's grid if they differ", "Resampling of T2 when warped"
            text = (
                "On (default): when T1 and T2 are not on the same grid, T2 is resampled onto T1's grid and only "
                "the area both cover is compared (the log says what was done). Off: such pairs are refused."
            )
        self._add(QgsProcessingParameterBoolean("ALIGN", label, defaultValue=True, optional=True), True, text)
        self._add(
            QgsProcessingParameterEnum(
                "RESAMPLING",
                resampling,
                options=RESAMPLINGS,
                defaultValue="bilinear",
                optional=True,
                usesStaticStrings=True,
            ),
            True,
            "How the pixels are resampled onto the target grid; the unchanged mask always uses nearest.",
        )

    def add_band_choice(self) -> None:
        """DROP_BAD_BANDS and DROP_WATER (issue #11); optional with defaults so that saved models stay valid."""
        self._add(
            QgsProcessingParameterBoolean(
                "DROP_BAD_BANDS", "Leave out bands marked bad (ENVI bbl)", defaultValue=True, optional=True
            ),
            True,
            "Bands either image marks bad (the ENVI header's bad band list, or bbl = 0 in the GDAL metadata) are "
            "not used; the log lists them.",
        )
        self._add(
            QgsProcessingParameterBoolean(
                "DROP_WATER", "Leave out water-absorption bands", defaultValue=False, optional=True
            ),
            True,
            "Bands around 1350-1450 nm and 1800-1950 nm and beyond 2450 nm are not used (needs the band "
            "wavelengths in the files).",
        )

    def band_choice_values(self, parameters: dict, context: QgsProcessingContext) -> dict[str, Any]:
        def flag(name: str, default: bool) -> bool:
            if parameters.get(name) in (None, ""):
                return default
            return bool(self.parameterAsBool(parameters, name, context))

        return {"drop_bad_bands": flag("DROP_BAD_BANDS", True), "drop_water": flag("DROP_WATER", False)}

    def align_values(self, parameters: dict, context: QgsProcessingContext) -> dict[str, Any]:
        align = parameters.get("ALIGN") in (None, "") or self.parameterAsBool(parameters, "ALIGN", context)
        resampling = self.parameterAsEnumString(parameters, "RESAMPLING", context) or "bilinear"
        if resampling not in RESAMPLINGS:
            raise InputError(f"Resampling of T2 must be one of {', '.join(RESAMPLINGS)} (got {resampling!r}).")
        return {"align": bool(align), "resampling": resampling}

    def add_polygon_outputs(self) -> None:
        """The change polygons (GeoPackage) and their options; the changed area outputs (issue #11). The options
        are optional (with defaults) so that models saved before them stay valid."""
        self._add(
            QgsProcessingParameterVectorDestination(
                "OUTPUT_POLYGONS", "Change polygons", SOURCE_VECTOR_POLYGON, optional=True, createByDefault=False
            ),
            help_text="GeoPackage: one polygon per connected changed region, with its pixel count, area (map "
            "units² and hectares) and mean and maximum change intensity.",
        )
        self._add(
            QgsProcessingParameterNumber(
                "MIN_AREA",
                "Minimum region area (map units²)",
                NUMBER_DOUBLE,
                defaultValue=0.0,
                optional=True,
                minValue=0.0,
            ),
            help_text="Changed regions smaller than this (e.g. in m²) get no polygon.",
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
            "8: pixels touching by an edge or a corner form one region; 4: by an edge only.",
        )
        self._add(
            QgsProcessingParameterBoolean(
                "SIEVE", "Remove small regions from the change map", defaultValue=False, optional=True
            ),
            True,
            "Regions below the minimum area also become 'no change' in the change map (needs Change polygons).",
        )
        self._add(
            QgsProcessingParameterString("DATES", "Date pair (T1,T2) for the polygons", optional=True),
            True,
            "e.g. 2019-05-01,2020-05-01: written into every polygon.",
        )
        self.addOutput(QgsProcessingOutputNumber("CHANGED_AREA_HA", "Changed area (ha)"))
        self.addOutput(QgsProcessingOutputNumber("POLYGON_COUNT", "Change polygons written"))

    def polygon_values(self, parameters: dict, context: QgsProcessingContext) -> dict[str, Any]:
        """MIN_AREA, CONNECTIVITY, SIEVE and DATES, checked."""
        from ..core.io.polygons import check_polygon_options, parse_dates

        connectivity = self.parameterAsEnumString(parameters, "CONNECTIVITY", context) or "8"
        if connectivity not in CONNECTIVITIES:
            raise InputError(f"Region connectivity must be 4 or 8 (got {parameters.get('CONNECTIVITY')!r}).")
        values = {
            "min_area": self.optional_number(parameters, "MIN_AREA", context) or 0.0,
            "connectivity": int(connectivity),
            "sieve": bool(
                parameters.get("SIEVE") not in (None, "") and self.parameterAsBool(parameters, "SIEVE", context)
            ),
            "dates": parse_dates(self.parameterAsString(parameters, "DATES", context)),
        }
        check_polygon_options(None, values["min_area"], values["connectivity"])
        return values

    def check_polygon_request(self, job: Job) -> None:
        """SIEVE removes the regions the polygons drop: it needs the Change polygons output."""
        polygons = next((o for o in job.outputs if o.name == "OUTPUT_POLYGONS"), None)
        if job.get("sieve") and (polygons is None or not polygons.requested):
            raise InputError(
                "Remove small regions from the change map is set but Change polygons is not; choose a "
                "file (or a temporary file) for Change polygons, or untick the option."
            )

    def finish_polygons(
        self, job: Job, result: Any, feedback: QgisFeedback, memory_budget_mb: float = options.DEFAULT_MEMORY_BUDGET_MB
    ) -> dict[str, Any]:
        """After the detection: polygons (if asked for), changed area in the log; the outputs they give."""
        from ..core.io.polygons import finish_detection

        if job.get("min_area") and not job.get("polygons"):
            feedback.info("Minimum region area applies to the Change polygons, which were not asked for.")
        poly = finish_detection(
            result,
            polygons_out=job.get("polygons"),
            min_area=job.get("min_area", 0.0),
            connectivity=job.get("connectivity", 8),
            sieve=job.get("sieve", False),
            dates=job.get("dates"),
            memory_budget_mb=memory_budget_mb,
            feedback=feedback,
        )
        ha = result.extra["area"]["changed_hectares"]
        return {
            "OUTPUT_POLYGONS": poly.path if poly else None,
            "POLYGON_COUNT": poly.kept if poly else None,
            "CHANGED_AREA_HA": ha,
            "CHANGED_PIXELS": int(result.changed_pixels),
            "CHANGED_FRACTION": float(result.changed_fraction),
        }

    def add_report(self, description: str = "HTML report", advanced: bool = True) -> None:
        self._add(
            QgsProcessingParameterFileDestination(
                "OUTPUT_REPORT", description, HTML_FILTER, optional=True, createByDefault=False
            ),
            advanced,
        )

    # -- parameter reading (main thread) ------------------------------------------------------------------
    def enums_by_name(self, parameters: dict) -> dict:
        """``parameters`` with static-string enums given by number (THRESHOLD_METHOD=2) replaced by the option."""
        out = dict(parameters)
        for p in self.parameterDefinitions():
            if isinstance(p, QgsProcessingParameterEnum) and p.usesStaticStrings() and p.name() in out:
                value = enum_by_number(out[p.name()], list(p.options()))
                if value is not None:
                    out[p.name()] = value
        return out

    def enum_string(self, parameters: dict, name: str, context: QgsProcessingContext, options: list[str]) -> str:
        value = enum_by_number(parameters.get(name), options)  # `qgis_process help` lists options by number
        if value is None:
            value = self.parameterAsEnumString(parameters, name, context)
        if value not in options:
            raise InputError(f"{self.label(name)} must be one of {', '.join(options)} (got {parameters.get(name)!r}).")
        return value

    def optional_number(self, parameters: dict, name: str, context: QgsProcessingContext, integer: bool = False):
        if parameters.get(name) in (None, ""):
            return None
        check_number_text(parameters.get(name), name, integer)
        if integer:
            return self.parameterAsInt(parameters, name, context)
        return self.parameterAsDouble(parameters, name, context)

    def declare_output(
        self,
        job: Job,
        parameters: dict,
        context: QgsProcessingContext,
        name: str,
        key: str,
        style: str | None = None,
        layer_name: str = "",
    ) -> Output:
        """Declare an output of ``job`` from its parameter value without making a file or registering anything
        (checkParameterValues runs for every dialog check and batch row). A file the user named is checked now:
        folder exists and is writable, GeoTIFF extension for rasters, not a folder."""
        definition = self.parameterDefinition(name)
        kind = (
            "raster"
            if isinstance(definition, QgsProcessingParameterRasterDestination)
            else "vector"
            if isinstance(definition, QgsProcessingParameterVectorDestination)
            else "file"
        )
        value = parameters.get(name)
        if isinstance(value, QgsProcessingOutputLayerDefinition):
            value = value.sink
        if isinstance(value, QgsProperty):
            value = value.valueAsString(context.expressionContext(), "")[0]
        optional = has_flag(definition.flags(), FLAG_OPTIONAL)
        out = Output(name, key, self.label(name), kind, style=style, layer_name=layer_name)
        if value is None or str(value) == "":
            out.temporary = not optional
        elif str(value) == TEMPORARY:
            out.temporary = True
        else:
            out.chosen = check_output_path(str(value), out.label, _extensions(kind))
        job.outputs.append(out)
        job.values[key] = out.chosen
        return out

    def bind_outputs(self, job: Job, parameters: dict, context: QgsProcessingContext) -> None:
        """processAlgorithm: each requested output's final path. Temporary files are made here, and Processing
        registers the layers to load in this context (the one it carries back from the worker thread)."""
        for out in job.outputs:
            if not out.requested:
                job.values[out.key] = None
                continue
            path = self.temporary_path(out, job) if out.temporary else None
            if path is None:
                if out.kind in ("raster", "vector"):
                    path = self.parameterAsOutputLayer(parameters, out.name, context)
                else:
                    path = self.parameterAsFileOutput(parameters, out.name, context)
            job.values[out.key] = check_output_path(path, out.label, _extensions(out.kind))
        from ..core.io.paths import check_job_paths

        check_job_paths({o.label: job.values[o.key] for o in job.outputs}, job.inputs)

    def temporary_path(self, out: Output, job: Job) -> str | None:
        """Where a temporary output goes instead of Processing's temporary folder (None: the folder)."""
        return None

    def training_values(self, parameters: dict, context: QgsProcessingContext) -> dict[str, Any]:
        """TrainConfig keyword arguments from the training parameters."""
        for name, integer in (("LEARNING_RATE", False), ("GAMMA", False), ("SEED", True), ("MEMORY_BUDGET_MB", True)):
            check_number_text(parameters.get(name), name, integer)
        return {
            "epochs": self.optional_number(parameters, "EPOCHS", context, integer=True),
            "learning_rate": self.parameterAsDouble(parameters, "LEARNING_RATE", context),
            "gamma": self.parameterAsDouble(parameters, "GAMMA", context),
            "seed": self.parameterAsInt(parameters, "SEED", context),
            "device": self.enum_string(parameters, "DEVICE", context, DEVICES),
            "schedule": self.enum_string(parameters, "SCHEDULE", context, SCHEDULES),
            "memory_budget_mb": self.parameterAsInt(parameters, "MEMORY_BUDGET_MB", context),
        }

    def threshold_values(
        self, parameters: dict, context: QgsProcessingContext, options: list[str]
    ) -> tuple[str, float | None]:
        method = self.enum_string(parameters, "THRESHOLD_METHOD", context, options)
        value = self.optional_number(parameters, "THRESHOLD", context)
        if method == "fixed" and value is None:
            raise InputError(
                "Threshold method is fixed but no Fixed threshold was given. Enter the intensity value "
                "above which a pixel counts as changed, or use otsu or kmeans."
            )
        return method, value

    # -- the three phases ---------------------------------------------------------------------------------
    def resolve(self, parameters: dict, context: QgsProcessingContext) -> Job:
        """Read and check every parameter (main thread, no heavy work, no files made). Raises InputError."""
        raise NotImplementedError

    def run_job(self, job: Job, feedback: QgisFeedback) -> dict[str, Any]:
        """The work (background thread): call the core pipeline with the job's values; return the results."""
        raise NotImplementedError

    def _resolve_checked(self, parameters: dict, context: QgsProcessingContext) -> Job:
        if self.NEEDS_ENGINE:
            require_engine()
        job = self.resolve(parameters, context)
        from ..core.io.paths import check_job_paths

        check_job_paths({o.label: o.chosen for o in job.outputs}, job.inputs)
        return job

    def run_engine(self, argv: list[str], feedback: QgisFeedback) -> dict[str, Any]:
        """Run the engine's CLI (``python -m hypernet_qgis <argv>``) in a child process (engine_process.py) and
        return its JSON summary; its progress and log stream into ``feedback``, Cancel sends it SIGTERM."""
        from .. import engine_process

        settings = QgsApplication.qgisSettingsDirPath()
        feedback.info(engine_process.describe(settings))
        try:
            return engine_process.run_engine(argv, feedback, settings_dir=settings)
        except engine_process.EngineCancelled as exc:
            raise Cancelled(str(exc)) from None
        except engine_process.EngineFailed as exc:
            raise InputError(str(exc)) from None

    def checkParameterValues(self, parameters: dict, context: QgsProcessingContext):  # noqa: N802
        ok, message = super().checkParameterValues(self.enums_by_name(parameters), context)
        try:  # our message first: it says what is wrong with the file and how to fix it
            self._resolve_checked(parameters, context)
        except EngineMissing as exc:  # desktop: the message bar offers the set-up (engine_prompt.py)
            from ..engine_prompt import offer_setup_soon

            offer_setup_soon()
            return False, str(exc)
        except (InputError, QgsProcessingException) as exc:
            return False, str(exc)
        except Exception as exc:  # noqa: BLE001  (an exception escaping here aborts qgis_process and QGIS)
            return False, unexpected_error_message(exc)
        return ok, message

    def prepareAlgorithm(
        self,
        parameters: dict,
        context: QgsProcessingContext,  # noqa: N802
        feedback: QgsProcessingFeedback,
    ) -> bool:
        try:
            self._job = self._resolve_checked(parameters, context)
        except InputError as exc:
            raise QgsProcessingException(str(exc)) from None
        except QgsProcessingException:
            raise
        except Exception as exc:  # noqa: BLE001
            raise QgsProcessingException(unexpected_error_message(exc)) from None
        return True

    def processAlgorithm(
        self,
        parameters: dict,
        context: QgsProcessingContext,  # noqa: N802
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        if self._job is None:  # prepareAlgorithm always runs first; kept for safety
            raise QgsProcessingException("The algorithm was not prepared; run it through Processing.")
        adapter = QgisFeedback(feedback)
        try:
            self.bind_outputs(self._job, parameters, context)
            results = self.run_job(self._job, adapter)
        except InputError as exc:
            raise QgsProcessingException(str(exc)) from None
        except Cancelled as exc:
            raise QgsProcessingException(str(exc) or "Cancelled; no output was written.") from None
        except ModuleNotFoundError as exc:
            top = (exc.name or "").split(".")[0]
            if top not in EXTERNAL_PACKAGES:
                raise  # a missing module of this plugin is a bug: keep the traceback
            raise QgsProcessingException(missing_dependency_message(top)) from None
        except MemoryError:
            raise QgsProcessingException(
                "Out of memory. Use a smaller area or fewer Bands, or lower the Memory budget."
            ) from None
        if feedback is not None and feedback.isCanceled():
            raise QgsProcessingException("Cancelled; no output was written.")
        from ..styling import write_sidecar

        for out in self._job.outputs:
            path = self._job.get(out.key)
            if out.style and path and os.path.exists(path):
                try:
                    write_sidecar(path, out.style)
                except OSError as exc:  # the raster is fine; only its style is missing
                    adapter.info(f"Could not write the style file next to {path}: {exc}")
        return results

    def postProcessAlgorithm(
        self,
        context: QgsProcessingContext,  # noqa: N802
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        """Main thread: name, style and stack the outputs that the dialog, Toolbox or batch loads."""
        if self._job is not None:
            from ..styling import attach_post_processor

            for out in self._job.outputs:
                path = self._job.get(out.key)
                if out.style and path:
                    attach_post_processor(context, path, out.style, out.loaded_name())
        return {}
