"""Bad input through processing.run: one clear message (no traceback), nothing written, inputs unchanged.

Torch missing is tested in test_qgis_torch_missing.py.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from test_qgis_support import hashes, hypernet_provider, pair_dir, trained_model, write_tif  # noqa: F401 (fixtures)

RNG = np.random.default_rng(7)


def _cube(bands: int = 6, rows: int = 24, cols: int = 24) -> np.ndarray:
    return RNG.normal(size=(bands, rows, cols)).astype(np.float32)


def _detect(inputs: Path, out: Path, **extra) -> tuple[str, dict]:
    params = {
        "INPUT_T1": str(inputs / "t1.tif"),
        "INPUT_T2": str(inputs / "t2.tif"),
        "EPOCHS": 2,
        "OUTPUT_CHANGE": str(out / "change.tif"),
    }
    params.update(extra)
    return "hypernet:detectchange", params


def case_sizes(inputs, out, model):
    write_tif(inputs / "t1.tif", _cube())
    write_tif(inputs / "t2.tif", _cube(cols=20))
    return _detect(inputs, out, ALIGN=False), r"(size|pixels|\d+ ?x ?\d+)"  # (ALIGN on: the common area)


def case_grids(inputs, out, model):
    write_tif(inputs / "t1.tif", _cube())
    write_tif(inputs / "t2.tif", _cube(), geotransform=(500100.0, 10.0, 0.0, 4000000.0, 0.0, -10.0))
    return _detect(inputs, out, ALIGN=False), r"(geotransform|grid|origin|pixel)"


def case_crs(inputs, out, model):
    write_tif(inputs / "t1.tif", _cube())
    write_tif(inputs / "t2.tif", _cube(), epsg=32632)
    return _detect(inputs, out, ALIGN=False), r"(CRS|coordinate reference|projection)"


def case_no_overlap(inputs, out, model):
    write_tif(inputs / "t1.tif", _cube())
    write_tif(inputs / "t2.tif", _cube(), epsg=32632)  # the same numbers in the next UTM zone: far away
    return _detect(inputs, out), r"do not overlap: their footprints share no pixel"


def case_unknown_crs(inputs, out, model):
    write_tif(inputs / "t1.tif", _cube())
    from osgeo import gdal

    write_tif(inputs / "t2.tif", _cube(), geotransform=(500100.0, 10.0, 0.0, 4000000.0, 0.0, -10.0))
    ds = gdal.Open(str(inputs / "t2.tif"), gdal.GA_Update)
    ds.SetProjection("")  # T2 loses its CRS
    ds = None
    return _detect(inputs, out), r"T2 \(t2.tif\) has no coordinate reference system.*Assign its CRS"


def case_band_counts(inputs, out, model):
    write_tif(inputs / "t1.tif", _cube())
    write_tif(inputs / "t2.tif", _cube(bands=5))
    return _detect(inputs, out), r"band"


def case_model_band_count(inputs, out, model):
    write_tif(inputs / "t1.tif", _cube(bands=4))
    write_tif(inputs / "t2.tif", _cube(bands=4))
    return _detect(inputs, out, MODEL=model), r"trained on 6 bands.*4"


def case_bands_out_of_range(inputs, out, model):
    write_tif(inputs / "t1.tif", _cube())
    write_tif(inputs / "t2.tif", _cube())
    return _detect(inputs, out, BANDS="1-3,9"), r"(?-i:Bands) asks for band 9.*6 bands"


def case_bands_syntax(inputs, out, model):
    write_tif(inputs / "t1.tif", _cube())
    write_tif(inputs / "t2.tif", _cube())
    return _detect(inputs, out, BANDS="first three"), r"not a band list"


def case_all_nodata(inputs, out, model):
    write_tif(inputs / "t1.tif", np.full((6, 24, 24), -9999, np.float32), nodata=-9999)
    write_tif(inputs / "t2.tif", _cube(), nodata=-9999)
    return _detect(inputs, out), r"(nodata|valid)"


def case_constant(inputs, out, model):
    write_tif(inputs / "t1.tif", np.full((6, 24, 24), 3.0, np.float32))
    write_tif(inputs / "t2.tif", np.full((6, 24, 24), 5.0, np.float32))
    return _detect(inputs, out), r"constant"


def case_one_band(inputs, out, model):
    write_tif(inputs / "t1.tif", _cube(bands=1))
    write_tif(inputs / "t2.tif", _cube(bands=1))
    return _detect(inputs, out), r"1 band.*at least 2"


def case_one_band_sam(inputs, out, model):
    write_tif(inputs / "t1.tif", _cube(bands=1))
    write_tif(inputs / "t2.tif", _cube(bands=1))
    return (
        "hypernet:classicchange",
        {
            "METHOD": "sam",
            "INPUT_T1": str(inputs / "t1.tif"),
            "INPUT_T2": str(inputs / "t2.tif"),
            "OUTPUT_CHANGE": str(out / "change.tif"),
        },
    ), r"at least 2"


def case_too_small(inputs, out, model):
    write_tif(inputs / "t1.tif", _cube(rows=5, cols=6))
    write_tif(inputs / "t2.tif", _cube(rows=5, cols=6))
    return _detect(inputs, out), r"6x5 pixels.*at least 8x8"


def case_unreadable(inputs, out, model):
    write_tif(inputs / "t1.tif", _cube())
    (inputs / "t2.tif").write_bytes(b"this is not a GeoTIFF\n" * 20)
    return _detect(inputs, out), r"t2\.tif could not be read as a raster"


def case_corrupt_model(inputs, out, model):
    write_tif(inputs / "t1.tif", _cube())
    write_tif(inputs / "t2.tif", _cube())
    bad = inputs / "broken.hypernet"
    bad.write_bytes(Path(model).read_bytes()[:300])
    return _detect(inputs, out, MODEL=str(bad)), r"(damaged|not a HyperNet model)"


def case_output_is_input(inputs, out, model):
    write_tif(inputs / "t1.tif", _cube())
    write_tif(inputs / "t2.tif", _cube())
    alg, params = _detect(inputs, out)
    params["OUTPUT_CHANGE"] = str(inputs / "t1.tif")
    return (alg, params), r"overwrite the input"


def case_two_outputs_same(inputs, out, model):
    write_tif(inputs / "t1.tif", _cube())
    write_tif(inputs / "t2.tif", _cube())
    return _detect(inputs, out, OUTPUT_INTENSITY=str(out / "change.tif")), r"same (path|file)"


def case_model_output_is_input(inputs, out, model):
    write_tif(inputs / "t1.tif", _cube())
    write_tif(inputs / "t2.tif", _cube())
    return (
        "hypernet:trainhypernet",
        {
            "INPUT_T1": str(inputs / "t1.tif"),
            "INPUT_T2": str(inputs / "t2.tif"),
            "EPOCHS": 2,
            "OUTPUT_MODEL": str(inputs / "t2.tif"),
        },
    ), r"overwrite the input"


def case_unwritable_folder(inputs, out, model):
    write_tif(inputs / "t1.tif", _cube())
    write_tif(inputs / "t2.tif", _cube())
    if os.geteuid() == 0:  # root may write anywhere a mode allows; sysfs refuses new files even to root
        folder = Path("/sys")
    else:
        folder = out / "locked"
        folder.mkdir()
        folder.chmod(0o555)
    return _detect(inputs, out, OUTPUT_CHANGE=str(folder / "change.tif")), r"not writable"


def case_missing_folder(inputs, out, model):
    write_tif(inputs / "t1.tif", _cube())
    write_tif(inputs / "t2.tif", _cube())
    return _detect(inputs, out, OUTPUT_CHANGE=str(out / "no" / "such" / "change.tif")), r"does not exist"


def case_not_geotiff(inputs, out, model):
    write_tif(inputs / "t1.tif", _cube())
    write_tif(inputs / "t2.tif", _cube())
    return _detect(inputs, out, OUTPUT_CHANGE=str(out / "change.img")), r"GeoTIFF"


def case_fixed_without_value(inputs, out, model):
    write_tif(inputs / "t1.tif", _cube())
    write_tif(inputs / "t2.tif", _cube())
    return _detect(inputs, out, THRESHOLD_METHOD="fixed"), r"THRESHOLD"


def case_cuda_without_gpu(inputs, out, model):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    write_tif(inputs / "t1.tif", _cube())
    write_tif(inputs / "t2.tif", _cube())
    return _detect(inputs, out, DEVICE="cuda"), r"DEVICE=cuda.*no CUDA GPU"


def case_mask_grid(inputs, out, model):
    write_tif(inputs / "t1.tif", _cube())
    write_tif(inputs / "t2.tif", _cube())
    write_tif(inputs / "mask.tif", np.ones((20, 24), np.uint8))
    return _detect(inputs, out, UNCHANGED_MASK=str(inputs / "mask.tif")), r"mask.*same grid"


def case_evaluate_sizes(inputs, out, model):
    write_tif(inputs / "c.tif", np.ones((10, 10), np.uint8))
    write_tif(inputs / "r.tif", np.ones((10, 12), np.uint8))
    return (
        "hypernet:evaluatechange",
        {"INPUT": str(inputs / "c.tif"), "REFERENCE": str(inputs / "r.tif")},
    ), r"same grid"


def case_evaluate_values(inputs, out, model):
    write_tif(inputs / "c.tif", np.ones((10, 10), np.uint8))
    write_tif(inputs / "r.tif", np.ones((10, 10), np.uint8))
    return (
        "hypernet:evaluatechange",
        {
            "INPUT": str(inputs / "c.tif"),
            "REFERENCE": str(inputs / "r.tif"),
            "CHANGED_VALUES": "1",
            "UNCHANGED_VALUES": "0,1",
        },
    ), r"more than one"


CASES = {name[5:]: fn for name, fn in dict(globals()).items() if name.startswith("case_")}
#: Cases whose problem is only visible in the pixel values: found when the data is read, before any training.
DATA_LEVEL = {"all_nodata", "constant"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_refused_clearly(hypernet_provider, trained_model, tmp_path, name):  # noqa: F811
    import processing
    from qgis.core import QgsApplication, QgsProcessingContext, QgsProcessingException

    inputs, out = tmp_path / "inputs", tmp_path / "out"
    inputs.mkdir()
    out.mkdir()
    (alg_id, params), pattern = CASES[name](inputs, out, trained_model)
    before = hashes(inputs)
    # Checked up front (what the dialog calls before running) ...
    alg = QgsApplication.processingRegistry().algorithmById(alg_id)
    ok, message = alg.checkParameterValues(params, QgsProcessingContext())
    if name not in DATA_LEVEL:
        assert not ok and re.search(pattern, message, re.I | re.S), message
    # ... and when run.
    with pytest.raises(QgsProcessingException) as info:
        processing.run(alg_id, params)
    text = str(info.value)
    assert re.search(pattern, text, re.I | re.S), text
    assert "Traceback" not in text and len(text) < 600, text
    assert list(out.iterdir()) == [], "an output was written"
    assert hashes(inputs) == before
