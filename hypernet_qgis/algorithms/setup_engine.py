"""Processing algorithm ``hypernet:setupengine``: install, repair or remove the engine (torch, spectral) for the
Python QGIS runs, in a private folder of the QGIS profile (hypernet_qgis/engine_setup.py)."""

from __future__ import annotations

import os
from typing import Any

from qgis.core import (
    QgsApplication,
    QgsProcessingContext,
    QgsProcessingOutputString,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterString,
)

from .. import engine_setup
from ..core.errors import InputError
from ..qgis_compat import FILE_BEHAVIOR_FOLDER
from .base import HyperNetAlgorithm, Job, QgisFeedback

ACTIONS = ["install", "repair", "uninstall"]


class SetupEngineAlgorithm(HyperNetAlgorithm):
    """Installs torch and spectral for QGIS's Python into <profile>/hypernet/engine, checked in a child process."""

    ALG_ID = "setupengine"
    DISPLAY = "Set up the HyperNet engine"
    GROUP = "Set-up"
    GROUP_ID = "setup"
    NEEDS_ENGINE = False
    SHORT = "Installs PyTorch and spectral for QGIS's Python into this QGIS profile (or repairs/uninstalls them)."
    TAGS = ("install", "setup", "torch", "pytorch", "engine", "dependencies", "pip")
    ANCHOR = "install"
    HELP = (
        "<p>Installs the engine HyperNet needs (PyTorch and spectral) for the Python that QGIS runs, into a private "
        "folder of this QGIS profile (hypernet/engine), never into the plugin folder (updates wipe it) nor over "
        "QGIS's own packages: numpy and GDAL stay at QGIS's versions (a constraints file pins them). The new "
        "engine is checked in a separate process (import torch) before it replaces the previous one, so a broken "
        "install gives a message and keeps QGIS and the old engine working.</p>"
        "<p><b>Inputs.</b> Action: install, repair (reinstall) or uninstall. Offline source: a folder of wheel "
        "files (pip download -d FOLDER torch spectral on a connected machine with the same system and Python); "
        "empty = the package index. Build: auto = the CUDA build when an NVIDIA driver is installed, else the "
        "small CPU build; cpu or cuda to choose. Under Advanced: a PyTorch version to pin (e.g. 2.13.0) and a "
        "package index (your organisation's mirror) instead of PyPI.</p>"
        "<p><b>Outputs.</b> The engine folder and the torch and numpy versions; the log shows pip's output.</p>"
        "<p><b>Time.</b> A few minutes (the CPU build is about 200 MB to download, the CUDA build several GB). "
        "Cancel stops pip and keeps the previous engine. Nothing else in the plugin uses the network.</p>"
    )

    def initAlgorithm(self, config: dict | None = None) -> None:  # noqa: N802
        self._add(
            QgsProcessingParameterEnum(
                "ACTION", "Action", options=ACTIONS, defaultValue="install", usesStaticStrings=True
            )
        )
        self._add(
            QgsProcessingParameterFile(
                "SOURCE", "Offline source (folder of wheels)", behavior=FILE_BEHAVIOR_FOLDER, optional=True
            ),
            help_text="A folder of wheel files (pip download -d FOLDER torch spectral on a connected machine); "
            "empty = the package index.",
        )
        self._add(
            QgsProcessingParameterEnum(
                "VARIANT",
                "PyTorch build",
                options=list(engine_setup.VARIANTS),
                defaultValue="auto",
                usesStaticStrings=True,
            ),
            True,
            "auto = the CUDA build when an NVIDIA driver is installed, else the CPU build.",
        )
        self._add(
            QgsProcessingParameterString("TORCH_VERSION", "PyTorch version", optional=True),
            True,
            "e.g. 2.13.0; empty = the newest that fits this Python.",
        )
        self._add(
            QgsProcessingParameterString("INDEX_URL", "Package index", optional=True),
            True,
            "Your organisation's mirror (a simple index, e.g. https://pypi.example.org/simple), used alone; "
            "empty = PyPI (and PyTorch's CPU index for the CPU build).",
        )
        self.addOutput(QgsProcessingOutputString("ENGINE_FOLDER", "Engine folder"))
        self.addOutput(QgsProcessingOutputString("VERSIONS", "torch and numpy versions"))

    def resolve(self, parameters: dict, context: QgsProcessingContext) -> Job:
        source = self.parameterAsFile(parameters, "SOURCE", context) or None
        if source and not os.path.isdir(source):
            raise InputError(
                f"The offline source {source} is not a folder. Give the folder that holds the wheels "
                "(pip download -d FOLDER torch spectral), or leave it empty for the package index."
            )
        if source and not any(n.endswith((".whl", ".tar.gz", ".zip")) for n in os.listdir(source)):
            raise InputError(
                f"The offline source {source} holds no wheels. Fill it on a connected machine with "
                "pip download -d FOLDER torch spectral (same system and Python as QGIS)."
            )
        try:
            torch_version = engine_setup.check_torch_version(
                self.parameterAsString(parameters, "TORCH_VERSION", context)
            )
            index_url = engine_setup.check_index_url(self.parameterAsString(parameters, "INDEX_URL", context))
        except ValueError as exc:
            raise InputError(str(exc)) from None
        return Job(
            values={
                "action": self.enum_string(parameters, "ACTION", context, ACTIONS),
                "variant": self.enum_string(parameters, "VARIANT", context, list(engine_setup.VARIANTS)),
                "source": source,
                "torch_version": torch_version,
                "index_url": index_url,
                "settings": QgsApplication.qgisSettingsDirPath(),
            }
        )

    def run_job(self, job: Job, feedback: QgisFeedback) -> dict[str, Any]:
        folder = engine_setup.engine_dir(job["settings"])
        if job["action"] == "uninstall":
            removed = engine_setup.uninstall(job["settings"])
            feedback.info(f"Removed {folder}; restart QGIS." if removed else f"No engine in {folder}.")
            return {"ENGINE_FOLDER": str(folder), "VERSIONS": ""}
        try:
            stamp = engine_setup.install(
                job["settings"],
                source=job["source"],
                variant=job["variant"],
                log=feedback.info,
                cancelled=feedback.is_cancelled,
                torch_version=job["torch_version"],
                index_url=job["index_url"],
            )
        except RuntimeError as exc:
            raise InputError(str(exc)) from None
        engine_setup.activate(job["settings"])
        feedback.set_progress(1.0)
        return {"ENGINE_FOLDER": str(folder), "VERSIONS": stamp["torch_numpy"]}
