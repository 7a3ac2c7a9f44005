"""Bad bands and wavelengths (core.io.bands): ENVI bbl and GDAL bbl metadata honoured, water-absorption bands left out
on request, clear messages when wavelengths are missing; through the pipeline and the CLI on real files."""

from __future__ import annotations

import numpy as np
import pytest
from osgeo import gdal, osr

from hypernet_qgis.core import pipeline
from hypernet_qgis.core.errors import InputError
from hypernet_qgis.core.io import bands

WAVELENGTHS = [450.0, 900.0, 1400.0, 1850.0, 2200.0, 2480.0]


class Log:
    def __init__(self):
        self.lines: list[str] = []

    def info(self, message):
        self.lines.append(message)

    def set_progress(self, fraction):
        pass

    def is_cancelled(self):
        return False


def cube(seed: int, garbage: tuple[int, ...] = ()) -> np.ndarray:
    """6 smooth bands with a changed block in seed 1; ``garbage`` bands (1-based) are pure noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:30, 0:32].astype(np.float64)
    x = np.stack([100 + 10 * np.sin(xx / (4 + b)) + 8 * np.cos(yy / (5 + b)) for b in range(6)])
    if seed == 1:
        x[:, 8:18, 10:22] += 40.0
    for b in garbage:
        x[b - 1] = rng.normal(0, 1000, x.shape[1:])
    return x.astype(np.float32)


def write_envi(path, arr, header_extra: str) -> str:
    ds = gdal.GetDriverByName("ENVI").Create(str(path), arr.shape[2], arr.shape[1], arr.shape[0], gdal.GDT_Float32)
    ds.SetGeoTransform((500000.0, 30.0, 0.0, 4600000.0, 0.0, -30.0))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    ds.SetProjection(srs.ExportToWkt())
    for i in range(arr.shape[0]):
        ds.GetRasterBand(i + 1).WriteArray(arr[i])
    ds = None
    hdr = str(path)[:-4] + ".hdr"
    with open(hdr, "a", encoding="utf-8") as fh:
        fh.write(header_extra)
    return str(path)


def write_tif(path, arr, band_md: dict[int, dict] | None = None, dataset_md: dict | None = None) -> str:
    ds = gdal.GetDriverByName("GTiff").Create(str(path), arr.shape[2], arr.shape[1], arr.shape[0], gdal.GDT_Float32)
    ds.SetGeoTransform((500000.0, 30.0, 0.0, 4600000.0, 0.0, -30.0))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    ds.SetProjection(srs.ExportToWkt())
    if dataset_md:
        ds.SetMetadata(dataset_md)
    for i in range(arr.shape[0]):
        band = ds.GetRasterBand(i + 1)
        band.WriteArray(arr[i])
        for k, v in (band_md or {}).get(i + 1, {}).items():
            band.SetMetadataItem(k, v)
    ds = None
    return str(path)


HEADER = "wavelength units = Nanometers\nwavelength = {450, 900, 1400, 1850, 2200, 2480}\nbbl = {1, 0, 1, 1, 1, 0}\n"


@pytest.fixture
def envi_pair(tmp_path):
    return (
        write_envi(tmp_path / "t1.img", cube(0, garbage=(2, 6)), HEADER),
        write_envi(tmp_path / "t2.img", cube(1, garbage=(2, 6)), HEADER),
    )


def test_envi_bbl_is_read(envi_pair):
    assert bands.bad_bands(envi_pair[0]) == ([2, 6], "the ENVI header's bbl")


def test_gdal_band_and_dataset_metadata_are_read(tmp_path):
    x = cube(0)
    per_band = write_tif(tmp_path / "a.tif", x, band_md={3: {"bbl": "0"}, 1: {"bbl": "1"}})
    assert bands.bad_bands(per_band) == ([3], "the bands' bbl metadata")
    dataset = write_tif(tmp_path / "b.tif", x, dataset_md={"bbl": "{1,1,1,1,0,0}"})
    assert bands.bad_bands(dataset) == ([5, 6], "the bbl metadata")
    assert bands.bad_bands(write_tif(tmp_path / "c.tif", x)) is None


def test_choose_bands_drops_bad_then_water_and_says_so(envi_pair):
    log = Log()
    assert bands.choose_bands(*envi_pair, None, feedback=log) == [1, 3, 4, 5]
    assert any("marks bad in the ENVI header's bbl: 2, 6" in m for m in log.lines)
    log = Log()
    assert bands.choose_bands(*envi_pair, None, drop_water=True, feedback=log) == [1, 5]
    assert any("2 water-absorption bands (1350-1450 nm, 1800-1950 nm, beyond 2450 nm): 3-4" in m for m in log.lines)
    assert bands.choose_bands(*envi_pair, None, drop_bad=False) is None
    assert bands.choose_bands(*envi_pair, [1, 2, 3], drop_bad=True) == [1, 3]
    assert bands.water_bands(WAVELENGTHS) == [3, 4, 6]
    assert bands.ranges([1, 2, 3, 7, 9, 10]) == "1-3, 7, 9-10"


def test_bad_bands_are_left_out_of_the_detection(envi_pair, tmp_path):
    """The noise bands marked bad would flag change everywhere; left out, the map is that of the good bands."""
    honoured = pipeline.baseline_files("cva", *envi_pair, str(tmp_path / "a.tif"))
    by_hand = pipeline.baseline_files(
        "cva", *envi_pair, str(tmp_path / "b.tif"), bands=[1, 3, 4, 5], drop_bad_bands=False
    )
    ignored = pipeline.baseline_files("cva", *envi_pair, str(tmp_path / "c.tif"), drop_bad_bands=False)
    assert np.array_equal(honoured.binary, by_hand.binary)
    assert honoured.pair.bands == [1, 3, 4, 5]
    assert not np.array_equal(honoured.binary, ignored.binary)
    assert honoured.binary[12, 15] == 1 and honoured.binary[25, 2] == 0


def test_water_bands_without_wavelengths_get_a_clear_message(tmp_path):
    t1, t2 = write_tif(tmp_path / "t1.tif", cube(0)), write_tif(tmp_path / "t2.tif", cube(1))
    with pytest.raises(InputError, match="needs the band wavelengths, but neither t1.tif nor t2.tif gives them") as err:
        pipeline.baseline_files("cva", t1, t2, str(tmp_path / "c.tif"), drop_water=True)
    assert "\n" not in str(err.value) and not (tmp_path / "c.tif").exists()


def test_no_band_left_and_mismatched_wavelengths(tmp_path):
    x = cube(0)
    all_bad = write_tif(tmp_path / "t1.tif", x, dataset_md={"bbl": "{0,0,0,0,0,0}"})
    t2 = write_tif(tmp_path / "t2.tif", cube(1))
    with pytest.raises(InputError, match="No band is left"):
        bands.choose_bands(all_bad, t2, None)
    w1 = {i + 1: {"wavelength": str(w), "wavelength_units": "nm"} for i, w in enumerate(WAVELENGTHS)}
    w2 = {i + 1: {"wavelength": str(w + 25.0), "wavelength_units": "nm"} for i, w in enumerate(WAVELENGTHS)}
    a, b = write_tif(tmp_path / "w1.tif", x, band_md=w1), write_tif(tmp_path / "w2.tif", x, band_md=w2)
    log = Log()
    bands.choose_bands(a, b, None, feedback=log)
    assert any("differ by up to 25.0 nm" in m for m in log.lines)


def test_cli_keeps_bad_bands_or_drops_water_on_request(envi_pair, tmp_path):
    import json

    from test_cli import cli

    r = cli("baseline", "cva", *envi_pair, "-o", str(tmp_path / "a.tif"), "--drop-water")
    assert r.returncode == 0, r.stderr
    assert "marks bad in the ENVI header's bbl: 2, 6" in r.stderr and "water-absorption bands" in r.stderr
    r = cli("baseline", "cva", *envi_pair, "-o", str(tmp_path / "b.tif"), "--keep-bad-bands", "--quiet")
    assert r.returncode == 0 and json.loads(r.stdout)["changed_pixels"] > 0


def test_a_model_applies_by_wavelength_to_a_scene_with_another_band_subset(tmp_path):
    """Trained on bands 2-5 of a 6-band scene; the same scene without its first band (5 bands) gets bands 1-4."""
    from hypernet_qgis.core.hypernet.training import TrainConfig

    wl = {i + 1: {"wavelength": str(w), "wavelength_units": "nm"} for i, w in enumerate(WAVELENGTHS)}
    x1, x2 = cube(0), cube(1)
    a1, a2 = write_tif(tmp_path / "a1.tif", x1, band_md=wl), write_tif(tmp_path / "a2.tif", x2, band_md=wl)
    wl_b = {i: wl[i + 1] for i in range(1, 6)}
    b1 = write_tif(tmp_path / "b1.tif", x1[1:], band_md=wl_b)
    b2 = write_tif(tmp_path / "b2.tif", x2[1:], band_md=wl_b)
    model = str(tmp_path / "m.hypernet")
    pipeline.train_files(a1, a2, model, bands=[2, 3, 4, 5], config=TrainConfig(epochs=2, seed=1, device="cpu"))
    on_a = pipeline.detect_files(a1, a2, str(tmp_path / "ca.tif"), model=model)
    log = Log()
    on_b = pipeline.detect_files(b1, b2, str(tmp_path / "cb.tif"), model=model, feedback=log)
    assert on_b.pair.bands == [1, 2, 3, 4]
    assert any(
        "Bands chosen by wavelength to match the model: 1-4 (the model's own numbers were 2-5)" in m for m in log.lines
    )
    np.testing.assert_allclose(on_a.intensity, on_b.intensity, rtol=1e-5, atol=1e-6)
    shifted = {i: {"wavelength": str(float(v["wavelength"]) + 30.0), "wavelength_units": "nm"} for i, v in wl_b.items()}
    c1 = write_tif(tmp_path / "c1.tif", x1[1:], band_md=shifted)
    c2 = write_tif(tmp_path / "c2.tif", x2[1:], band_md=shifted)
    with pytest.raises(
        InputError,
        match="4 of them at wavelengths c1.tif does not have .within 5 nm.: 900.0, 1400.0, 1850.0, 2200.0 nm",
    ):
        pipeline.detect_files(c1, c2, str(tmp_path / "cc.tif"), model=model)


# --- exact results and messages (fast; `make mutmut` runs these) --------------------------------------------------


def wavelength_md(values) -> dict[int, dict]:
    return {i + 1: {"wavelength": str(w), "wavelength_units": "nm"} for i, w in enumerate(values)}


def test_bad_band_lists_in_any_case_and_spelling(tmp_path, capfd):
    x = cube(0)
    envi = write_envi(tmp_path / "e.img", x, "Bbl = { 1 , 0 , 1.0 , 0.0 , 2 , 1 }\n")
    assert bands.bad_bands(envi) == ([2, 4], "the ENVI header's bbl")
    assert bands.bad_bands(str(tmp_path / "e.hdr")) == ([2, 4], "the ENVI header's bbl")
    assert bands.bad_bands(write_tif(tmp_path / "a.tif", x, dataset_md={"BBL": "1 0 1 1 1 0"})) == (
        [2, 6],
        "the bbl metadata",
    )
    per_band = {1: {"BBL": "0"}, 2: {"bbl": "1"}, 4: {"Bbl": "0.0"}, 5: {"bbl": "x"}, 6: {"bbl": "0"}}
    assert bands.bad_bands(write_tif(tmp_path / "b.tif", x, band_md=per_band)) == (
        [1, 4, 6],
        "the bands' bbl metadata",
    )
    # a list of the wrong length or with a word in it is no list; the bands' own items are then read
    wrong = write_tif(tmp_path / "c.tif", x, band_md={3: {"bbl": "0"}}, dataset_md={"bbl": "{1, 0, 1}"})
    assert bands.bad_bands(wrong) == ([3], "the bands' bbl metadata")
    assert bands.bad_bands(write_tif(tmp_path / "d.tif", x, dataset_md={"bbl": "{1, 0, 1, x, 1, 1}"})) is None
    assert bands.bad_bands(write_tif(tmp_path / "f.tif", x, dataset_md={"bbl": " "})) is None
    assert bands.bad_bands(write_envi(tmp_path / "g.img", x, "bbl = {1, 0}\n")) is None
    text = tmp_path / "notes.tif"
    text.write_text("this is not a raster")
    capfd.readouterr()
    assert bands.bad_bands(str(text)) is None
    assert capfd.readouterr().err == ""  # GDAL's complaint is not printed
    was_on = gdal.GetUseExceptions()
    gdal.UseExceptions()
    try:
        assert bands.bad_bands(str(text)) is None
    finally:
        if not was_on:
            gdal.DontUseExceptions()


def test_water_bands_include_the_region_edges_and_ranges_sort():
    wl = [1349.9, 1350.0, 1450.0, 1450.1, 1799.9, 1800.0, 1950.0, 1950.1, 2449.9, 2450.0, 1e9]
    assert bands.water_bands(wl) == [2, 3, 6, 7, 10, 11]
    assert bands.water_bands([]) == []
    assert bands.ranges([]) == ""
    assert bands.ranges([5]) == "5"
    assert bands.ranges([5, 3, 1, 2]) == "1-3, 5"
    assert bands.ranges([4, 5]) == "4-5"
    assert bands.ranges([2, 4, 6]) == "2, 4, 6"


def test_choose_bands_logs_exactly_what_it_leaves_out(envi_pair):
    bad = "Leaving out 2 bands that {} ({}) marks bad in the ENVI header's bbl: 2, 6."
    water = "(1350-1450 nm, 1800-1950 nm, beyond 2450 nm)"
    log = Log()
    assert bands.choose_bands(*envi_pair, None, feedback=log) == [1, 3, 4, 5]
    assert log.lines == [bad.format("T1", "t1.img"), bad.format("T2", "t2.img")]
    log = Log()
    assert bands.choose_bands(*envi_pair, None, drop_water=True, feedback=log) == [1, 5]
    assert log.lines == [
        bad.format("T1", "t1.img"),
        bad.format("T2", "t2.img"),
        f"Leaving out 2 water-absorption bands {water}: 3-4.",
    ]
    log = Log()
    assert bands.choose_bands(*envi_pair, [1, 2, 3], drop_water=True, feedback=log) == [1]
    assert log.lines == [
        "Leaving out 1 band that T1 (t1.img) marks bad in the ENVI header's bbl: 2.",
        "Leaving out 1 band that T2 (t2.img) marks bad in the ENVI header's bbl: 2.",
        f"Leaving out 1 water-absorption band {water}: 3.",
    ]
    log = Log()
    assert bands.choose_bands(*envi_pair, (1, 5), drop_water=True, feedback=log) == [1, 5]
    assert log.lines == [f"No band lies in the water-absorption regions {water}."]
    log = Log()
    assert bands.choose_bands(*envi_pair, (1, 3), drop_bad=True, feedback=log) == [1, 3]
    assert log.lines == []
    assert bands.choose_bands(*envi_pair, None, drop_bad=False, drop_water=True) == [1, 2, 5]
    with pytest.raises(InputError) as err:
        bands.choose_bands(*envi_pair, [2, 3, 6], drop_water=True)
    assert str(err.value) == (
        "No band is left: all 3 selected bands are marked bad or lie in the water-absorption regions. "
        "Choose other bands in BANDS."
    )


def test_choose_bands_reads_each_date_and_its_wavelengths(tmp_path):
    x = cube(0)
    plain = write_tif(tmp_path / "plain.tif", x)
    marked = write_tif(tmp_path / "marked.tif", x, dataset_md={"bbl": "{1,1,0,1,1,1}"})
    log = Log()
    assert bands.choose_bands(plain, marked, None, feedback=log) == [1, 2, 4, 5, 6]
    assert log.lines == ["Leaving out 1 band that T2 (marked.tif) marks bad in the bbl metadata: 3."]
    # T2 with another band count: its list is not used (the grid check reports the counts)
    five = write_tif(tmp_path / "five.tif", x[:5], dataset_md={"bbl": "{0,1,1,1,1}"})
    assert bands.choose_bands(plain, five, None) is None
    # the water bands from T2's wavelengths when T1 gives none
    with_wl = write_tif(tmp_path / "wl.tif", x, band_md=wavelength_md(WAVELENGTHS))
    assert bands.choose_bands(plain, with_wl, None, drop_water=True) == [1, 2, 5]
    # up to 10 nm apart: no warning; over: the exact warning; a different band count: not compared
    log = Log()
    near = write_tif(tmp_path / "near.tif", x, band_md=wavelength_md([w + 10.0 for w in WAVELENGTHS]))
    assert bands.choose_bands(with_wl, near, None, feedback=log) is None
    assert log.lines == []
    far = write_tif(tmp_path / "far.tif", x, band_md=wavelength_md([w - 10.25 for w in WAVELENGTHS]))
    bands.choose_bands(with_wl, far, None, feedback=log)
    assert log.lines == [
        "Warning: the wavelengths of T1 and T2 differ by up to 10.2 nm; the bands are compared by number. "
        "Check that both images come from the same sensor and band set."
    ]
    log = Log()
    short = write_tif(tmp_path / "short.tif", x[:5], band_md=wavelength_md([w + 50 for w in WAVELENGTHS[:5]]))
    bands.choose_bands(with_wl, short, None, feedback=log)
    assert log.lines == []
    with pytest.raises(InputError) as err:
        bands.choose_bands(plain, marked, None, drop_water=True)
    assert str(err.value) == (
        "Leaving out the water-absorption bands needs the band wavelengths, but neither plain.tif nor marked.tif "
        "gives them (no 'wavelength' in the metadata or ENVI header). Give the bands to use in BANDS instead, or "
        "add the wavelengths to the files."
    )


def test_bands_for_model_by_wavelength(tmp_path):
    x = cube(0)
    t1 = write_tif(tmp_path / "t1.tif", x, band_md=wavelength_md(WAVELENGTHS))
    plain = write_tif(tmp_path / "plain.tif", x)
    log = Log()
    assert bands.bands_for_model(t1, {}, feedback=log) is None
    assert bands.bands_for_model(plain, {"wavelengths_nm": []}, feedback=log) is None
    assert log.lines == []
    assert bands.bands_for_model(plain, {"wavelengths_nm": [900.0]}, feedback=log) is None
    assert log.lines == ["plain.tif gives no wavelengths: the model's bands are taken by number."]
    log = Log()
    meta = {"wavelengths_nm": [904.9, 1395.1, 2200.0], "band_selection": [2, 3, 5]}
    assert bands.bands_for_model(t1, meta, feedback=log) == [2, 3, 5]
    assert log.lines == []
    meta = {"wavelengths_nm": [450.0, 900.0], "band_selection": [3, 4]}
    assert bands.bands_for_model(t1, meta, feedback=log) == [1, 2]
    assert log.lines == ["Bands chosen by wavelength to match the model: 1-2 (the model's own numbers were 3-4)."]
    assert bands.bands_for_model(t1, {"wavelengths_nm": [905.5]}, tolerance_nm=6.0) == [2]
    assert bands.bands_for_model(t1, {"wavelengths_nm": [905.0, 1395.0]}) == [2, 3]  # 5 nm: within
    with pytest.raises(InputError) as err:
        bands.bands_for_model(t1, {"wavelengths_nm": [450.0, 905.1, 2200.0]})
    assert str(err.value) == (
        "The model was trained on 3 bands, 1 of them at wavelengths t1.tif does not have (within 5 nm): 905.1 nm. "
        "Use images of the same sensor, or train a new model on these images."
    )
    # two of the model's bands nearest to one band of T1: the second is missing
    with pytest.raises(InputError, match=r"on 2 bands, 1 of them .*\(within 2.5 nm\): 901.0 nm\."):
        bands.bands_for_model(t1, {"wavelengths_nm": [900.0, 901.0]}, tolerance_nm=2.5)
    with pytest.raises(InputError, match=r"on 6 bands, 6 of them .*: 10.0, 20.0, 30.0, 40.0, 50.0 \.\.\. nm\."):
        bands.bands_for_model(t1, {"wavelengths_nm": [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]})
    with pytest.raises(InputError, match=r"on 5 bands, 5 of them .*: 10.0, 20.0, 30.0, 40.0, 50.0 nm\."):
        bands.bands_for_model(t1, {"wavelengths_nm": [10.0, 20.0, 30.0, 40.0, 50.0]})
