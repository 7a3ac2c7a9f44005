"""Styles of the outputs: a .qml sidecar next to each raster, and a post-processor for layers loaded by Processing.

The change map (uint8: 1 change, 0 no change, 255 nodata) is paletted: change strong red, no change and nodata
transparent (255 is the file's nodata value), so the map reads as an overlay on the image beneath. The change intensity gets a pseudocolour ramp stretched over
its 2-98 % range. The sidecar ``<name>.qml`` is what QGIS loads as the layer's default style, so a map made with
qgis_process or inside a model looks the same when opened later; the post-processor applies the same style to
the layer the Toolbox, the dialog or batch mode loads, names it, and keeps the change map above the intensity.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .resources import resource_path

CHANGE = "change"
INTENSITY = "intensity"
#: The change polygons (GeoPackage): red outline, light red fill, drawn above the change map.
POLYGONS = "polygons"
#: An output loaded with QGIS's default style, only named and stacked (the series' first change and count).
PLAIN = "plain"
#: Top to bottom in the Layers panel.
STACK_ORDER = {POLYGONS: 0, CHANGE: 1, INTENSITY: 2, PLAIN: 3}
#: Colour stops (position 0..1, hex colour) of the intensity ramp (dark purple -> orange -> light yellow).
INTENSITY_STOPS = [
    (0.0, "#000004"), (0.13, "#1c1044"), (0.25, "#4f127b"), (0.38, "#812581"), (0.5, "#b5367a"),
    (0.63, "#e55064"), (0.75, "#fb8761"), (0.88, "#fec287"), (1.0, "#fcfdbf"),
]
CHANGE_COLORS = {0: "#dcdcdc", 1: "#e31a1c"}


def sidecar_path(raster_path: str | os.PathLike) -> str:
    """``change.tif`` -> ``change.qml`` (the name QGIS looks for as a layer's default style)."""
    return os.path.splitext(os.fspath(raster_path))[0] + ".qml"


def intensity_range(raster_path: str) -> tuple[float, float]:
    """2nd and 98th percentile of the valid intensity values (0, 1 when there are none)."""
    from osgeo import gdal

    ds = gdal.Open(os.fspath(raster_path))
    if ds is None:
        return 0.0, 1.0
    band = ds.GetRasterBand(1)
    values = band.ReadAsArray()
    nodata = band.GetNoDataValue()
    ds = None
    if values is None:  # unreadable (e.g. damaged): a default stretch rather than a crash
        return 0.0, 1.0
    values = values.astype(np.float64)
    ok = np.isfinite(values)
    if nodata is not None:
        ok &= values != nodata
    if not ok.any():
        return 0.0, 1.0
    lo, hi = np.percentile(values[ok], [2.0, 98.0])
    if not hi > lo:
        hi = lo + (abs(lo) * 1e-6 or 1e-6)
    return float(lo), float(hi)


def change_qml() -> str:
    """The paletted style of the binary change map."""
    return resource_path("styles", "change.qml").read_text(encoding="utf-8")


def intensity_qml(vmin: float, vmax: float) -> str:
    """The pseudocolour style of the intensity, stretched from vmin to vmax."""
    items = []
    for pos, colour in INTENSITY_STOPS:
        value = vmin + pos * (vmax - vmin)
        items.append(f'          <item value="{value:.8g}" label="{value:.4g}" color="{colour}" alpha="255"/>')
    text = resource_path("styles", "intensity.qml").read_text(encoding="utf-8")
    return (text.replace("@ITEMS@", "\n".join(items))
            .replace("@MIN@", f"{vmin:.8g}").replace("@MAX@", f"{vmax:.8g}"))


def write_sidecar(raster_path: str, kind: str) -> str | None:
    """Write ``<raster>.qml`` for an output of ``kind`` (change, intensity, polygons); return its path."""
    if kind == PLAIN:
        return None
    if kind == CHANGE:
        text = change_qml()
    elif kind == INTENSITY:
        text = intensity_qml(*intensity_range(raster_path))
    elif kind == POLYGONS:
        text = resource_path("styles", "polygons.qml").read_text(encoding="utf-8")
    else:
        raise ValueError(f"unknown output kind {kind!r}")
    path = sidecar_path(raster_path)
    tmp = path + ".part"
    Path(tmp).write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def apply_style(layer, kind: str) -> bool:
    """Style a loaded raster layer (main thread): its sidecar if present, else a freshly made one."""
    if kind == PLAIN:
        return True
    source = layer.source().split("|")[0]
    qml = sidecar_path(source)
    if not os.path.exists(qml):
        try:
            write_sidecar(source, kind)
        except OSError:
            return False
    _message, ok = layer.loadNamedStyle(qml)
    layer.triggerRepaint()
    return bool(ok)


def stack_layer(layer, kind: str, project) -> None:
    """Keep the outputs on top in the order polygons, change map, intensity (they are loaded in no fixed order):
    a layer goes just below the outputs of a higher rank already in its group, above everything else."""
    root = project.layerTreeRoot()
    node = root.findLayer(layer.id())
    if node is None:
        return
    parent = node.parent()
    siblings = parent.children()
    rank = STACK_ORDER.get(kind, len(STACK_ORDER))
    higher = {lid for lid, lay in project.mapLayers().items() if lid != layer.id()
              and STACK_ORDER.get(lay.customProperty("hypernet/output"), len(STACK_ORDER)) < rank}
    above = [i for i, child in enumerate(siblings) if getattr(child, "layerId", lambda: None)() in higher]
    index = max(above) + 1 if above else 0
    current = siblings.index(node)
    if current == index or (index and current == index - 1):
        return
    clone = node.clone()
    parent.insertChildNode(index, clone)
    parent.removeChildNode(node)


def _post_processor_class():
    from qgis.core import QgsProcessingLayerPostProcessorInterface, QgsRasterLayer, QgsVectorLayer

    class StylePostProcessor(QgsProcessingLayerPostProcessorInterface):
        """Styles, names and stacks an output layer once Processing has loaded it into the project."""

        _alive: list = []  # keep the Python side alive until QGIS has used it

        def __init__(self, kind: str, name: str | None) -> None:
            super().__init__()
            self.kind, self.name = kind, name

        def postProcessLayer(self, layer, context, feedback) -> None:  # noqa: N802
            wanted = {POLYGONS: QgsVectorLayer, PLAIN: (QgsRasterLayer, QgsVectorLayer)}.get(self.kind, QgsRasterLayer)
            if not isinstance(layer, wanted):
                return
            if self.name:
                layer.setName(self.name)
            apply_style(layer, self.kind)  # (replaces the layer's custom properties with the style's)
            layer.setCustomProperty("hypernet/output", self.kind)
            from qgis.core import QgsProject

            stack_layer(layer, self.kind, context.project() or QgsProject.instance())

        @classmethod
        def create(cls, kind: str, name: str | None) -> StylePostProcessor:
            instance = cls(kind, name)
            cls._alive = cls._alive[-31:] + [instance]
            return instance

    return StylePostProcessor


_CLASS = None


def post_processor(kind: str, name: str | None = None):
    """A QgsProcessingLayerPostProcessorInterface that styles a layer as ``kind`` (and names it ``name``)."""
    global _CLASS
    if _CLASS is None:
        _CLASS = _post_processor_class()
    return _CLASS.create(kind, name)


def attach_post_processor(context, path: str, kind: str, name: str | None = None) -> bool:
    """If Processing will load ``path`` into the project, name, style and stack it when it does."""
    if not path or not context.willLoadLayerOnCompletion(path):
        return False
    details = context.layerToLoadOnCompletionDetails(path)
    if name:
        details.name = name
        details.forceName = True
    details.setPostProcessor(post_processor(kind, name))
    return True
