"""HyperNet for QGIS: self-supervised deep hyperspectral change detection.

The package is both a QGIS plugin (``classFactory``) and a plain Python library (``hypernet_qgis.core``).
Nothing heavy is imported here, so the plugin loads even when torch is missing.
"""

__version__ = "0.1.0"


def classFactory(iface):  # noqa: N802 (QGIS's name)
    """QGIS entry point."""
    from .plugin import HyperNetPlugin

    return HyperNetPlugin(iface)
