"""The Processing provider ``hypernet``: training, change detection, classic methods, evaluation, model inspection."""

from __future__ import annotations

from qgis.core import QgsApplication, QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from . import __version__, engine_setup
from .algorithms import all_algorithms
from .algorithms.base import PROVIDER_ID, icon


class HyperNetProvider(QgsProcessingProvider):
    """Processing provider of the HyperNet plugin (loads without torch; the algorithms explain if it is missing)."""

    def id(self) -> str:
        return PROVIDER_ID

    def name(self) -> str:
        return "HyperNet change detection"

    def longName(self) -> str:  # noqa: N802
        return f"HyperNet change detection {__version__}"

    def icon(self) -> QIcon:
        return icon("hypernet.svg")

    def versionInfo(self) -> str:  # noqa: N802
        return __version__

    def loadAlgorithms(self) -> None:  # noqa: N802
        try:  # the engine installed by "Set up the HyperNet engine", if any (no network, no import of torch)
            engine_setup.activate(QgsApplication.qgisSettingsDirPath())
        except OSError:
            pass
        for algorithm in all_algorithms():
            self.addAlgorithm(algorithm)
