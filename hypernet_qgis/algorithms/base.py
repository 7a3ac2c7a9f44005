"""Shared plumbing of the HyperNet Processing algorithms: ids, help, parameters, checks, feedback and errors.

Every algorithm resolves and checks its parameters once, in the main thread (``checkParameterValues`` and
``prepareAlgorithm``), into a plain :class:`Job` of file paths and numbers. ``processAlgorithm`` then runs in
a background thread and only touches that job, the core engine and the feedback (never the project or
widgets). Nothing here imports torch at module import, so the plugin loads when torch is missing.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)
from qgis.PyQt.QtGui import QIcon

from ..about import project_url
from ..core.errors import Cancelled, InputError
from ..qgis_compat import FLAG_ADVANCED, NUMBER_DOUBLE, NUMBER_INTEGER

PROVIDER_ID = "hypernet"
#: Smallest image side HyperNet runs on (core.pipeline.MIN_SIDE; a test keeps them equal).
MIN_SIDE = 8
DEVICES = ["auto", "cpu", "cuda"]
SCHEDULES = ["default", "paper"]
THRESHOLD_METHODS = ["otsu", "kmeans", "fixed"]
RASTER_EXTENSIONS = (".tif", ".tiff")
MODEL_FILTER = "HyperNet model (*.hypernet);;All files (*.*)"
HTML_FILTER = "HTML report (*.html *.htm)"
#: Third-party packages the engine imports; a ModuleNotFoundError for one of them gets install instructions.
EXTERNAL_PACKAGES = ("torch", "spectral", "numpy", "osgeo", "matplotlib")


# ------------------------------------------------------------------------------------------------ resources

def plugin_dir() -> Path:
    """The package folder (the plugin folder once assembled by ``make plugin``)."""
    return Path(__file__).resolve().parent.parent


def resource_path(*parts: str) -> Path:
    """A file under resources/: inside the assembled plugin, or beside the package in a source checkout."""
    for root in (Path(__file__).parent.parent / "resources", plugin_dir() / "resources",
                 plugin_dir().parent / "resources"):
        candidate = root.joinpath(*parts)
        if candidate.exists():
            return candidate
    return plugin_dir().parent.joinpath("resources", *parts)


def icon(name: str) -> QIcon:
    """An icon from resources/icons (an empty icon if the file is missing)."""
    return QIcon(str(resource_path("icons", name)))


# ------------------------------------------------------------------------------------- missing dependencies

def python_description() -> str:
    """Which Python runs inside QGIS, for install instructions."""
    return f"{sys.executable or 'unknown'} (Python {sys.version.split()[0]})"


def pip_command() -> str:
    """A pip command line for the Python QGIS uses (sys.executable is the QGIS binary in some builds)."""
    exe = sys.executable or ""
    if not os.path.basename(exe).lower().startswith("python"):
        guess = Path(sys.exec_prefix) / ("python.exe" if os.name == "nt" else
                                         f"bin/python{sys.version_info[0]}.{sys.version_info[1]}")
        exe = str(guess) if guess.exists() else "python3"
    return f'"{exe}" -m pip install torch spectral'


def missing_dependency_message(module: str, detail: str = "") -> str:
    """One clear message: what is missing, for which Python, and how to install it."""
    extra = f" ({detail})" if detail else ""
    return (
        f"HyperNet needs the Python package '{module}', which the Python used by QGIS cannot import{extra}. "
        f"QGIS runs sys.executable = {sys.executable or 'unknown'}, sys.version = {sys.version.split()[0]}. "
        "Run Processing > HyperNet change detection > Set up the HyperNet engine (hypernet:setupengine), or "
        f"install PyTorch and spectral into that Python, e.g. {pip_command()} (on Windows: from the OSGeo4W "
        "shell; on Debian/Ubuntu add --user or --break-system-packages), then restart QGIS."
    )


def require_engine() -> None:
    """Raise InputError with install instructions when torch (or spectral) cannot be imported."""
    for module in ("torch", "spectral"):
        try:
            __import__(module)
        except ImportError:
            raise InputError(missing_dependency_message(module)) from None
        except Exception as exc:  # a broken install (missing shared library, ...)
            raise InputError(missing_dependency_message(module, f"{type(exc).__name__}: {exc}")) from None


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

def parse_band_list(text: str | None) -> list[int] | None:
    """'1,2,5-8' -> [1, 2, 5, 6, 7, 8]; empty -> None (all bands). InputError on bad syntax."""
    if text is None or not str(text).strip():
        return None
    bands: list[int] = []
    for part in str(text).replace(" ", "").replace(";", ",").split(","):
        if not part:
            continue
        try:
            if "-" in part[1:]:
                lo, hi = (int(v) for v in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                bands.extend(range(lo, hi + 1))
            else:
                bands.append(int(part))
        except ValueError:
            raise InputError(f"BANDS {text!r} is not a band list. Write band numbers from 1, e.g. 1-50,60,70-80, "
                             "or leave it empty for all bands.") from None
    if not bands:
        return None
    if min(bands) < 1:
        raise InputError(f"BANDS {text!r} contains a band below 1; bands are numbered from 1.")
    if len(set(bands)) != len(bands):
        raise InputError(f"BANDS {text!r} names a band twice; list each band once.")
    return bands


def parse_values(text: str | None, name: str) -> list[float]:
    """'1' or '1,2' (or '1;2') -> [1.0, 2.0]; empty -> []."""
    if text is None or not str(text).strip():
        return []
    try:
        return [float(v) for v in str(text).replace(";", ",").split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{name} {text!r} is not a list of numbers; write e.g. 1 or 1,2.") from None


# ------------------------------------------------------------------------------------------------ checks

def layer_path(alg: QgsProcessingAlgorithm, parameters: dict, name: str, context: QgsProcessingContext,
               label: str, optional: bool = False) -> str | None:
    """File path of a raster layer parameter (a GDAL file); InputError when missing or not a file raster."""
    layer = alg.parameterAsRasterLayer(parameters, name, context)
    if layer is None:
        value = parameters.get(name)
        if optional and value in (None, ""):
            return None
        if isinstance(value, str) and os.path.exists(value):
            from ..core import raster_io

            raster_io.raster_info(value)  # raises InputError with GDAL's reason
        raise InputError(f"{label} ({name}) could not be opened as a raster: {value!r}. Check that the file exists "
                         "and is a raster GDAL can read (GeoTIFF, ENVI, ...).")
    if layer.providerType() != "gdal":
        raise InputError(f"{label} ({name}) is a '{layer.providerType()}' layer; HyperNet reads raster files. "
                         "Save the layer as a GeoTIFF first (Export > Save As).")
    source = layer.dataProvider().dataSourceUri() if layer.dataProvider() else layer.source()
    return source.split("|")[0]


def check_output_path(path: str, label: str, extensions: tuple[str, ...] | None = None) -> str:
    """The output folder exists and accepts a new file (a real write probe), and the extension fits."""
    if not path:
        raise InputError(f"{label}: no output file was given.")
    path = os.path.abspath(os.path.expanduser(path))
    if extensions and not path.lower().endswith(extensions):
        raise InputError(f"{label} {path} must be a GeoTIFF ({', '.join(extensions)}); the change maps are written "
                         "as tiled GeoTIFFs. Change the file name's extension.")
    folder = os.path.dirname(path)
    if os.path.isdir(path):
        raise InputError(f"{label} {path} is a folder. Give a file name such as change.tif.")
    if not os.path.isdir(folder):
        what = "is a file, not a folder" if os.path.exists(folder) else "does not exist"
        raise InputError(f"{label}: the folder {folder} {what}. Create the folder or choose another output path.")
    try:
        with tempfile.NamedTemporaryFile(prefix=".hypernet-probe-", dir=folder):
            pass
    except OSError as exc:
        raise InputError(f"{label}: the folder {folder} is not writable ({exc.strerror or exc}). Choose a folder "
                         "you can write to.") from None
    return path


def check_pair(t1: str, t2: str, bands: list[int] | None, min_bands: int, what: str = "HyperNet"):
    """Both dates readable, on one grid, enough bands after BANDS, big enough. Returns T1's RasterInfo."""
    from ..core import raster_io

    info1, info2 = raster_io.raster_info(t1), raster_io.raster_info(t2)
    raster_io.check_same_grid(info1, info2)
    if bands is not None:
        bad = [b for b in bands if b > info1.bands]
        if bad:
            raise InputError(f"BANDS asks for band {bad[0]} but {info1.name} has {info1.bands} band"
                             f"{'s' if info1.bands != 1 else ''}. Use band numbers from 1 to {info1.bands}.")
    count = len(bands) if bands is not None else info1.bands
    if count < min_bands:
        raise InputError(f"{info1.name} has {count} band{'s' if count != 1 else ''}"
                         f"{' after the band selection' if bands else ''}; {what} needs at least {min_bands}. "
                         "Use a multi- or hyperspectral image (or more bands in BANDS).")
    if min(info1.rows, info1.cols) < MIN_SIDE:
        raise InputError(f"The images are {info1.cols}x{info1.rows} pixels; {what} needs at least "
                         f"{MIN_SIDE}x{MIN_SIDE} (its 3x3, 5x5 and 7x7 windows would see mostly padding). "
                         "Use a larger area.")
    return info1


def check_mask(path: str, like) -> None:
    """The unchanged mask is readable and covers T1's grid."""
    from ..core import raster_io

    info = raster_io.raster_info(path)
    if (info.rows, info.cols) != (like.rows, like.cols):
        raise InputError(f"The unchanged mask {info.name} is {info.cols}x{info.rows} pixels but the images are "
                         f"{like.cols}x{like.rows}; it must cover the same grid.")


def model_band_count(path: str) -> int:
    """Band count a model file was trained on (InputError for a missing/damaged/foreign file)."""
    from ..core import model_file

    reader: Callable | None = getattr(model_file, "read_metadata", None)
    if reader is not None:
        meta = reader(path)
    else:
        _, meta = model_file.load_model(path)
    for key in ("band_count", "bands"):  # band_count: after BANDS; bands: the network's input bands
        value = meta.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    widths = meta.get("widths")
    if isinstance(widths, list) and widths:
        return int(widths[0])
    raise InputError(f"{path} is damaged (it does not record its band count). Train the model again.")


def model_band_selection(path: str) -> list[int] | None:
    """The BANDS a model was trained with, if it records them."""
    from ..core import model_file

    reader: Callable | None = getattr(model_file, "read_metadata", None)
    meta = reader(path) if reader is not None else model_file.load_model(path)[1]
    value = meta.get("band_selection")
    return [int(v) for v in value] if isinstance(value, list) and value else None


def check_device(name: str) -> None:
    """DEVICE=cuda without a CUDA GPU is refused up front."""
    from ..core.device import resolve_device

    resolve_device(name)


# ------------------------------------------------------------------------------------------------- the job

@dataclass
class Job:
    """Everything processAlgorithm needs, resolved in the main thread: paths, numbers, strings."""

    values: dict[str, Any] = field(default_factory=dict)
    styled: dict[str, str] = field(default_factory=dict)  # output path -> "change" | "intensity"
    names: dict[str, str] = field(default_factory=dict)   # output path -> layer name when loaded

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)


class HyperNetAlgorithm(QgsProcessingAlgorithm):
    """Base of the HyperNet algorithms: uniform ids, help, icons, parameter helpers, checks and errors."""

    ALG_ID = ""
    DISPLAY = ""
    GROUP = "Change detection"
    GROUP_ID = "changedetection"
    ICON = "hypernet.svg"
    HELP = ""
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

    def shortHelpString(self) -> str:  # noqa: N802
        return self.HELP

    def helpUrl(self) -> str:  # noqa: N802
        return project_url("homepage")

    def createInstance(self) -> "HyperNetAlgorithm":  # noqa: N802
        return type(self)()

    # -- parameter helpers --------------------------------------------------------------------------------
    def _add(self, param: QgsProcessingParameterDefinition, advanced: bool = False, help_text: str = "") -> None:
        if advanced:
            param.setFlags(param.flags() | FLAG_ADVANCED)
        if help_text and hasattr(param, "setHelp"):
            param.setHelp(help_text)
        self.addParameter(param)

    def add_pair(self) -> None:
        self._add(QgsProcessingParameterRasterLayer("INPUT_T1", "Image at date 1 (T1)"))
        self._add(QgsProcessingParameterRasterLayer("INPUT_T2", "Image at date 2 (T2, same grid and bands as T1)"))

    def add_bands(self, advanced: bool = False) -> None:
        self._add(QgsProcessingParameterString(
            "BANDS", "Bands to use (e.g. 1-50,60,70-80; empty = all bands)", optional=True), advanced)

    def add_device(self, advanced: bool = False) -> None:
        self._add(QgsProcessingParameterEnum(
            "DEVICE", "Device (auto = CUDA GPU when available, else CPU)", options=DEVICES,
            defaultValue="auto", usesStaticStrings=True), advanced)

    def add_training(self, advanced: bool) -> None:
        """The training parameters shared by Train HyperNet and Detect Change (training on the fly)."""
        self._add(QgsProcessingParameterRasterLayer(
            "UNCHANGED_MASK", "Known unchanged pixels (optional mask, non-zero = unchanged)", optional=True), advanced)
        epochs = QgsProcessingParameterNumber(
            "EPOCHS", "Epochs (empty = 60, or 200 with the paper schedule)", NUMBER_INTEGER,
            optional=True, minValue=1)
        self._add(epochs, advanced)
        self._add(QgsProcessingParameterNumber(
            "LEARNING_RATE", "Learning rate (SGD)", NUMBER_DOUBLE, defaultValue=0.05,
            minValue=1e-9), advanced)
        self._add(QgsProcessingParameterNumber(
            "GAMMA", "Focal loss gamma", NUMBER_DOUBLE, defaultValue=1.0, minValue=0.0), advanced)
        self._add(QgsProcessingParameterNumber(
            "SEED", "Random seed", NUMBER_INTEGER, defaultValue=0, minValue=0), advanced)

    def add_training_advanced(self) -> None:
        self._add(QgsProcessingParameterEnum(
            "SCHEDULE", "Training schedule (default: random crops, fast; paper: whole image per step)",
            options=SCHEDULES, defaultValue="default", usesStaticStrings=True), True)
        self._add(QgsProcessingParameterNumber(
            "MEMORY_BUDGET_MB", "Memory budget (MB)", NUMBER_INTEGER, defaultValue=4096,
            minValue=64), True)

    def add_threshold(self, options: list[str] = THRESHOLD_METHODS, default: str = "otsu") -> None:
        self._add(QgsProcessingParameterEnum(
            "THRESHOLD_METHOD", "Threshold method", options=options, defaultValue=default, usesStaticStrings=True))
        self._add(QgsProcessingParameterNumber(
            "THRESHOLD", "Threshold (only for the fixed method: intensity above it = change)",
            NUMBER_DOUBLE, optional=True))

    def add_change_outputs(self) -> None:
        self._add(QgsProcessingParameterRasterDestination(
            "OUTPUT_CHANGE", "Change map (1 change, 0 no change, 255 nodata)"))
        self._add(QgsProcessingParameterRasterDestination(
            "OUTPUT_INTENSITY", "Change intensity", optional=True, createByDefault=False))

    def add_report(self, description: str = "HTML report") -> None:
        self._add(QgsProcessingParameterFileDestination(
            "OUTPUT_REPORT", description, HTML_FILTER, optional=True, createByDefault=False), True)

    # -- parameter reading (main thread) ------------------------------------------------------------------
    def enum_string(self, parameters: dict, name: str, context: QgsProcessingContext, options: list[str]) -> str:
        value = self.parameterAsEnumString(parameters, name, context)
        if value not in options:
            raise InputError(f"{name} must be one of {', '.join(options)} (got {parameters.get(name)!r}).")
        return value

    def optional_number(self, parameters: dict, name: str, context: QgsProcessingContext, integer: bool = False):
        if parameters.get(name) in (None, ""):
            return None
        if integer:
            return self.parameterAsInt(parameters, name, context)
        return self.parameterAsDouble(parameters, name, context)

    def output_path(self, parameters: dict, name: str, context: QgsProcessingContext, label: str,
                    kind: str = "raster", optional: bool = False) -> str | None:
        if kind == "raster":
            value = self.parameterAsOutputLayer(parameters, name, context)
        else:
            value = self.parameterAsFileOutput(parameters, name, context)
        if not value:
            if optional:
                return None
            raise InputError(f"{label} ({name}) needs an output file.")
        return check_output_path(value, label, RASTER_EXTENSIONS if kind == "raster" else None)

    def training_values(self, parameters: dict, context: QgsProcessingContext) -> dict[str, Any]:
        """TrainConfig keyword arguments from the training parameters."""
        return {
            "epochs": self.optional_number(parameters, "EPOCHS", context, integer=True),
            "learning_rate": self.parameterAsDouble(parameters, "LEARNING_RATE", context),
            "gamma": self.parameterAsDouble(parameters, "GAMMA", context),
            "seed": self.parameterAsInt(parameters, "SEED", context),
            "device": self.enum_string(parameters, "DEVICE", context, DEVICES),
            "schedule": self.enum_string(parameters, "SCHEDULE", context, SCHEDULES),
            "memory_budget_mb": self.parameterAsInt(parameters, "MEMORY_BUDGET_MB", context),
        }

    def threshold_values(self, parameters: dict, context: QgsProcessingContext, options: list[str]
                         ) -> tuple[str, float | None]:
        method = self.enum_string(parameters, "THRESHOLD_METHOD", context, options)
        value = self.optional_number(parameters, "THRESHOLD", context)
        if method == "fixed" and value is None:
            raise InputError("THRESHOLD_METHOD is fixed but no THRESHOLD was given. Enter the intensity value above "
                             "which a pixel counts as changed, or use otsu or kmeans.")
        return method, value

    # -- the three phases ---------------------------------------------------------------------------------
    def resolve(self, parameters: dict, context: QgsProcessingContext) -> Job:
        """Read and check every parameter (main thread, no heavy work). Raises InputError."""
        raise NotImplementedError

    def run_job(self, job: Job, feedback: QgisFeedback) -> dict[str, Any]:
        """The work (background thread): call the core pipeline with the job's values; return the results."""
        raise NotImplementedError

    def _resolve_checked(self, parameters: dict, context: QgsProcessingContext) -> Job:
        if self.NEEDS_ENGINE:
            require_engine()
        return self.resolve(parameters, context)

    def checkParameterValues(self, parameters: dict, context: QgsProcessingContext):  # noqa: N802
        ok, message = super().checkParameterValues(parameters, context)
        try:  # our message first: it says what is wrong with the file and how to fix it
            self._resolve_checked(parameters, context)
        except (InputError, QgsProcessingException) as exc:
            return False, str(exc)
        return ok, message

    def prepareAlgorithm(self, parameters: dict, context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> bool:
        try:
            self._job = self._resolve_checked(parameters, context)
        except InputError as exc:
            raise QgsProcessingException(str(exc)) from None
        return True

    def processAlgorithm(self, parameters: dict, context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        if self._job is None:  # prepareAlgorithm always runs first; kept for safety
            raise QgsProcessingException("The algorithm was not prepared; run it through Processing.")
        adapter = QgisFeedback(feedback)
        try:
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
                "Out of memory. Use a smaller area or fewer BANDS, or lower MEMORY_BUDGET_MB.") from None
        if feedback is not None and feedback.isCanceled():
            raise QgsProcessingException("Cancelled; no output was written.")
        from ..styling import write_sidecar

        for path, kind in self._job.styled.items():
            if path and os.path.exists(path):
                try:
                    write_sidecar(path, kind)
                except OSError as exc:  # the raster is fine; only its style is missing
                    adapter.info(f"Could not write the style file next to {path}: {exc}")
        return results

    def postProcessAlgorithm(self, context: QgsProcessingContext,  # noqa: N802
                             feedback: QgsProcessingFeedback) -> dict[str, Any]:
        """Main thread: style the outputs the Toolbox/dialog loads into the project."""
        if self._job is not None:
            from ..styling import attach_post_processor

            for path, kind in self._job.styled.items():
                attach_post_processor(context, path, kind, self._job.names.get(path))
        return {}
