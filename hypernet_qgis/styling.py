"""Styles of the outputs: a .qml sidecar next to each raster, and a post-processor for layers loaded by Processing.

The change map (uint8: 1 change, 0 no change, 255 nodata) is paletted: change strong red, no change and nodata
transparent (255 is the file's nodata value), so the map reads as an overlay on the image beneath. The change
intensity gets a pseudocolour ramp stretched over its 2-98 % range. A series' first change is paletted with one
class per date pair labelled by its dates, its number of changes with one class per count. The sidecar
``<name>.qml`` is what QGIS loads as the layer's default style, so a map made with qgis_process or inside a model
looks the same when opened later; the post-processor applies the same style to the layer the Toolbox, the dialog
or batch mode loads, names it, and keeps the change map above the intensity.
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
#: An output loaded with QGIS's default style, only named and stacked.
PLAIN = "plain"
#: The series' first change (uint16: 1-based pair index, 0 never): paletted, one class per date pair, labelled by
#: its dates, early blue to late red; 0 transparent.
FIRST_CHANGE = "first_change"
#: The series' number of changes (uint16): paletted, one class per count (yellow to dark red); 0 transparent.
CHANGE_COUNT = "change_count"
#: Top to bottom in the Layers panel.
STACK_ORDER = {POLYGONS: 0, CHANGE: 1, INTENSITY: 2, FIRST_CHANGE: 3, CHANGE_COUNT: 4, PLAIN: 5}
#: Colour stops (position 0..1, hex colour) of the intensity ramp (dark purple -> orange -> light yellow).
INTENSITY_STOPS = [
    (0.0, "#000004"),
    (0.13, "#1c1044"),
    (0.25, "#4f127b"),
    (0.38, "#812581"),
    (0.5, "#b5367a"),
    (0.63, "#e55064"),
    (0.75, "#fb8761"),
    (0.88, "#fec287"),
    (1.0, "#fcfdbf"),
]
CHANGE_COLORS = {0: "#dcdcdc", 1: "#e31a1c"}
#: Colour stops of the first change (earliest pair -> latest) and of the number of changes (1 -> most).
FIRST_CHANGE_STOPS = [(0.0, "#2c7bb6"), (0.25, "#00a6ca"), (0.5, "#90eb9d"), (0.75, "#f9d057"), (1.0, "#d7191c")]
CHANGE_COUNT_STOPS = [(0.0, "#fed976"), (0.5, "#fd8d3c"), (1.0, "#bd0026")]


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
    return text.replace("@ITEMS@", "\n".join(items)).replace("@MIN@", f"{vmin:.8g}").replace("@MAX@", f"{vmax:.8g}")


def ramp(stops: list[tuple[float, str]], n: int) -> list[str]:
    """``n`` colours (hex) evenly spaced along the colour stops (the first stop's colour for n = 1)."""

    def rgb(hex_colour: str) -> np.ndarray:
        return np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)], float)

    out = []
    for k in range(n):
        t = k / (n - 1) if n > 1 else 0.0
        j = max(i for i, (pos, _) in enumerate(stops) if pos <= t or i == 0)
        if j == len(stops) - 1:
            colour = rgb(stops[j][1])
        else:
            (p0, c0), (p1, c1) = stops[j], stops[j + 1]
            colour = rgb(c0) + (rgb(c1) - rgb(c0)) * (t - p0) / (p1 - p0)
        out.append("#" + "".join(f"{int(round(v)):02x}" for v in colour))
    return out


def paletted_qml(entries: list[tuple[int, str, str, int]]) -> str:
    """A paletted raster style with the classes (value, label, colour, alpha); the change map's style otherwise."""
    import html
    import re

    lines = "\n".join(
        f'        <paletteEntry value="{v}" label="{html.escape(label, quote=True)}" color="{c}" alpha="{a}"/>'
        for v, label, c, a in entries
    )
    return re.sub(
        r"<colorPalette>.*?</colorPalette>",
        lambda _: f"<colorPalette>\n{lines}\n      </colorPalette>",
        change_qml(),
        flags=re.S,
    )


def series_pairs(raster_path: str) -> list[str]:
    """The date pairs ('2019-05-01/2020-05-01', ...) a series raster's metadata lists (pair_1, pair_2, ...); when
    it lists none, 'pair 1', 'pair 2', ... up to the raster's largest value."""
    from osgeo import gdal

    ds = gdal.Open(os.fspath(raster_path))
    if ds is None:
        return []
    meta = ds.GetMetadata() or {}
    pairs = []
    while f"pair_{len(pairs) + 1}" in meta:
        pairs.append(meta[f"pair_{len(pairs) + 1}"])
    if not pairs:
        band = ds.GetRasterBand(1)
        values = band.ReadAsArray()
        nodata = band.GetNoDataValue()
        ok = values[values != nodata] if nodata is not None else values.ravel()
        pairs = [f"pair {k}" for k in range(1, int(ok.max()) + 1)] if ok.size else []
    ds = None
    return pairs


def first_change_qml(raster_path: str) -> str:
    """One class per date pair ('2019-05-01 → 2020-05-01'), earliest blue to latest red; 0 transparent."""
    pairs = series_pairs(raster_path)
    entries = [(0, "No change", "#dcdcdc", 0)]
    for k, (pair, colour) in enumerate(zip(pairs, ramp(FIRST_CHANGE_STOPS, len(pairs))), start=1):
        entries.append((k, " → ".join(pair.split("/")), colour, 255))
    return paletted_qml(entries)


def change_count_qml(raster_path: str) -> str:
    """One class per number of changes (1 .. the number of pairs), light yellow to dark red; 0 transparent."""
    n = len(series_pairs(raster_path))
    entries = [(0, "No change", "#dcdcdc", 0)]
    for k, colour in enumerate(ramp(CHANGE_COUNT_STOPS, n), start=1):
        entries.append((k, f"{k} change{'s' if k != 1 else ''}", colour, 255))
    return paletted_qml(entries)


def write_sidecar(raster_path: str, kind: str) -> str | None:
    """Write ``<raster>.qml`` for an output of ``kind`` (change, intensity, polygons, first change, number of
    changes); return its path."""
    if kind == PLAIN:
        return None
    if kind == CHANGE:
        text = change_qml()
    elif kind == INTENSITY:
        text = intensity_qml(*intensity_range(raster_path))
    elif kind == FIRST_CHANGE:
        text = first_change_qml(raster_path)
    elif kind == CHANGE_COUNT:
        text = change_count_qml(raster_path)
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
    higher = {
        lid
        for lid, lay in project.mapLayers().items()
        if lid != layer.id() and STACK_ORDER.get(lay.customProperty("hypernet/output"), len(STACK_ORDER)) < rank
    }
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
