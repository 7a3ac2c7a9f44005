"""The Processing provider ``hypernet``: training, change detection, classic methods, evaluation, model inspection."""

from __future__ import annotations

from qgis.core import QgsApplication, QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from . import __version__, engine_setup
from .algorithms import all_algorithms
from .algorithms.base import PROVIDER_ID
from .resources import icon, resource_path


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

    def supportedOutputRasterLayerExtensions(self) -> list[str]:  # noqa: N802
        """The change maps are tiled GeoTIFFs: the output file picker offers only that format."""
        return ["tif"]

    def defaultRasterFileExtension(self) -> str:  # noqa: N802
        return "tif"

    def supportedOutputVectorLayerExtensions(self) -> list[str]:  # noqa: N802
        """The change polygons are GeoPackages."""
        return ["gpkg"]

    def defaultVectorFileExtension(self, hasGeometry: bool = True) -> str:  # noqa: N802,N803
        return "gpkg"

    def loadAlgorithms(self) -> None:  # noqa: N802
        try:  # the engine installed by "Set up the HyperNet engine", if any (no network, no import of torch)
            engine_setup.activate(QgsApplication.qgisSettingsDirPath())
        except OSError:
            pass
        for algorithm in all_algorithms():
            self.addAlgorithm(algorithm)
        for model in shipped_models():
            self.addAlgorithm(model)


def shipped_models() -> list:
    """The Processing models in resources/models (e.g. "Train and detect, then evaluate"), ready to run from the
    Toolbox under this provider."""
    from qgis.core import QgsProcessingModelAlgorithm

    models = []
    folder = resource_path("models")
    for path in sorted(folder.glob("*.model3")) if folder.is_dir() else []:
        model = QgsProcessingModelAlgorithm()
        if model.fromFile(str(path)):
            models.append(model)
    return models
