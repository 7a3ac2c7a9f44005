#!/usr/bin/env python3
"""README picture: the change polygons of the Taizhou sample (HyperNet) drawn by QGIS over the T2 image.

    .venv/bin/python tools/picture_polygons.py [--out docs/polygons_over_t2.png]

Detects change on resources/sample/taizhou_crop (HyperNet, default settings, seed 0), writes the polygons
(MIN_AREA 1800 m², 8-connected) and renders T2 (bands 3-2-1, 2-98 % stretch) with the polygons in their shipped
style using QGIS's map renderer (headless), as the Layers panel would show them.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "polygons_over_t2.png"))
    parser.add_argument("--size", type=int, default=700)
    args = parser.parse_args()

    from hypernet_qgis.core import pipeline
    from hypernet_qgis.core.hypernet.training import TrainConfig
    from hypernet_qgis.core.io.polygons import finish_detection
    from hypernet_qgis.styling import apply_style, write_sidecar

    sample = REPO / "resources" / "sample" / "taizhou_crop"
    with tempfile.TemporaryDirectory() as tmp:
        res = pipeline.detect_files(
            str(sample / "t1.tif"),
            str(sample / "t2.tif"),
            os.path.join(tmp, "change.tif"),
            config=TrainConfig(seed=0, device="cpu"),
        )
        poly = finish_detection(res, polygons_out=os.path.join(tmp, "taizhou_polygons.gpkg"), min_area=1800.0)
        write_sidecar(poly.path, "polygons")

        from qgis.core import (
            QgsApplication,
            QgsContrastEnhancement,
            QgsMapRendererParallelJob,
            QgsMapSettings,
            QgsMultiBandColorRenderer,
            QgsRasterLayer,
            QgsVectorLayer,
        )
        from qgis.PyQt.QtCore import QSize
        from qgis.PyQt.QtGui import QColor

        app = QgsApplication([], False)
        app.initQgis()
        t2 = QgsRasterLayer(str(sample / "t2.tif"), "T2")
        renderer = QgsMultiBandColorRenderer(t2.dataProvider(), 3, 2, 1)
        for band, setter in (
            (3, renderer.setRedContrastEnhancement),
            (2, renderer.setGreenContrastEnhancement),
            (1, renderer.setBlueContrastEnhancement),
        ):
            stats = t2.dataProvider().cumulativeCut(band, 0.02, 0.98)
            ce = QgsContrastEnhancement(t2.dataProvider().dataType(band))
            ce.setContrastEnhancementAlgorithm(QgsContrastEnhancement.StretchToMinimumMaximum)
            ce.setMinimumValue(stats[0])
            ce.setMaximumValue(stats[1])
            setter(ce)
        t2.setRenderer(renderer)
        polygons = QgsVectorLayer(poly.path, "Change polygons", "ogr")
        apply_style(polygons, "polygons")
        settings = QgsMapSettings()
        settings.setLayers([polygons, t2])
        settings.setDestinationCrs(t2.crs())
        settings.setExtent(t2.extent())
        settings.setOutputSize(QSize(args.size, args.size))
        settings.setBackgroundColor(QColor("white"))
        job = QgsMapRendererParallelJob(settings)
        job.start()
        job.waitForFinished()
        job.renderedImage().save(args.out, "png")
        print(f"{args.out}: {poly.summary()}")
        app.exitQgis()


if __name__ == "__main__":
    main()
