"""Bad bands and water-absorption bands from QGIS: ENVI bbl honoured by default, DROP_WATER without wavelengths
refused before the run, DROP_BAD_BANDS=False keeps every band."""

from __future__ import annotations

import numpy as np
import pytest
from osgeo import gdal
from test_bands import HEADER, cube, write_envi, write_tif
from test_qgis_support import hypernet_provider  # noqa: F401 (fixture)


def test_classic_change_leaves_out_the_bbl_bands(hypernet_provider, tmp_path):  # noqa: F811
    import processing

    t1 = write_envi(tmp_path / "t1.img", cube(0, garbage=(2, 6)), HEADER)
    t2 = write_envi(tmp_path / "t2.img", cube(1, garbage=(2, 6)), HEADER)
    base = {"METHOD": "cva", "INPUT_T1": t1, "INPUT_T2": t2}
    honoured = processing.run("hypernet:classicchange", {**base, "OUTPUT_CHANGE": str(tmp_path / "a.tif")})
    by_hand = processing.run(
        "hypernet:classicchange",
        {**base, "OUTPUT_CHANGE": str(tmp_path / "b.tif"), "BANDS": "1,3-5", "DROP_BAD_BANDS": False},
    )
    kept = processing.run(
        "hypernet:classicchange", {**base, "OUTPUT_CHANGE": str(tmp_path / "c.tif"), "DROP_BAD_BANDS": False}
    )
    a, b, c = (gdal.Open(r["OUTPUT_CHANGE"]).ReadAsArray() for r in (honoured, by_hand, kept))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("alg_id", ["hypernet:classicchange", "hypernet:detectchange", "hypernet:trainhypernet"])
def test_drop_water_without_wavelengths_is_refused_up_front(hypernet_provider, tmp_path, alg_id):  # noqa: F811
    from qgis.core import QgsApplication, QgsProcessingContext, QgsProject

    t1, t2 = write_tif(tmp_path / "t1.tif", cube(0)), write_tif(tmp_path / "t2.tif", cube(1))
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    alg = QgsApplication.processingRegistry().createAlgorithmById(alg_id)
    ok, message = alg.checkParameterValues(
        {
            "METHOD": "cva",
            "INPUT_T1": t1,
            "INPUT_T2": t2,
            "DROP_WATER": True,
            "OUTPUT_CHANGE": str(tmp_path / "c.tif"),
            "OUTPUT_MODEL": str(tmp_path / "m.hypernet"),
        },
        context,
    )
    assert not ok and "needs the band wavelengths" in message, message
