"""Raster I/O against real files written with GDAL (GeoTIFF, ENVI, VRT, PNG) and the shared real data."""

from __future__ import annotations

import os

import numpy as np
import pytest
from osgeo import gdal, osr

from hypernet_qgis.core.errors import InputError
from hypernet_qgis.core.io.raster_io import (
    RasterInfo,
    check_same_grid,
    constant_bands,
    raster_info,
    read_mask,
    read_raster,
    read_window,
    refuse_overwriting_inputs,
    require_bands,
    resolve_raster_path,
    write_raster,
)

GT = (500000.0, 30.0, 0.0, 3600000.0, 0.0, -30.0)


def _wkt(epsg: int) -> str:
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    return srs.ExportToWkt()


def make_tif(path, data, gt=GT, epsg=32651, nodata=None, dtype=gdal.GDT_Float32, band_md=None, ds_md=None):
    """Write ``data`` (b, r, c) as a GeoTIFF with plain GDAL (independent of the code under test)."""
    data = np.asarray(data)
    ds = gdal.GetDriverByName("GTiff").Create(str(path), data.shape[2], data.shape[1], data.shape[0], dtype)
    ds.SetGeoTransform(gt)
    if epsg:
        ds.SetProjection(_wkt(epsg))
    if ds_md:
        ds.SetMetadata(ds_md)
    for i in range(data.shape[0]):
        b = ds.GetRasterBand(i + 1)
        b.WriteArray(data[i])
        if nodata is not None:
            nd = nodata[i] if isinstance(nodata, (list, tuple)) else nodata
            if nd is not None:
                b.SetNoDataValue(nd)
        if band_md:
            for domain, md in band_md(i).items():
                b.SetMetadata(md, domain)
    ds = None
    return str(path)


def like_info(rows, cols, bands=1, gt=GT, epsg=32651) -> RasterInfo:
    return RasterInfo(
        path="like.tif",
        rows=rows,
        cols=cols,
        bands=bands,
        geotransform=gt,
        crs_wkt=_wkt(epsg) if epsg else "",
        nodata=[None] * bands,
        wavelengths_nm=None,
        band_names=[f"band {i + 1}" for i in range(bands)],
        dtype="Float32",
    )


# ------------------------------------------------------------------------------------------- reading


def test_read_geotiff_nodata_nan_inf_become_invalid(tmp_path):
    data = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    data[0, 0, 0] = -9999  # nodata of band 1
    data[1, 1, 1] = np.nan
    data[2, 2, 2] = np.inf
    path = make_tif(tmp_path / "a.tif", data, nodata=-9999)
    x, valid, info = read_raster(path)
    assert x.dtype == np.float32 and x.shape == (3, 4, 5) and valid.shape == (4, 5)
    expected_invalid = {(0, 0), (1, 1), (2, 2)}
    assert {tuple(p) for p in np.argwhere(~valid)} == expected_invalid
    for r, c in expected_invalid:
        assert np.isnan(x[:, r, c]).all()
    np.testing.assert_array_equal(x[:, valid], data[:, valid])
    assert info.nodata == [-9999.0] * 3
    assert info.geotransform == GT and "UTM zone 51N" in info.crs_wkt
    assert (info.rows, info.cols, info.bands, info.dtype) == (4, 5, 3, "Float32")


def test_per_band_nodata_in_vrt(tmp_path):
    """GeoTIFF has one nodata per file; a VRT can give each band its own, and only that band uses it."""
    data = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)
    data[0, 0, 0] = -1
    data[1, 2, 2] = -1  # a plain value in band 2, whose nodata is 16 (at row 2, col 1)
    src = make_tif(tmp_path / "src.tif", data)
    vrt = str(tmp_path / "nd.vrt")
    ds = gdal.Translate(vrt, src, format="VRT")
    ds.GetRasterBand(1).SetNoDataValue(-1)
    ds.GetRasterBand(2).SetNoDataValue(16)
    ds = None
    x, valid, info = read_raster(vrt)
    assert info.nodata == [-1.0, 16.0]
    assert {tuple(p) for p in np.argwhere(~valid)} == {(0, 0), (2, 1)}
    assert x[1, 2, 2] == -1 and valid[2, 2]


def test_integer_nodata_and_band_subset(tmp_path):
    data = np.full((4, 3, 3), 7, dtype=np.uint16)
    data[3] = np.arange(9).reshape(3, 3)
    data[0, 0, 0] = 0
    path = make_tif(tmp_path / "u16.tif", data, nodata=0, dtype=gdal.GDT_UInt16)
    x, valid, info = read_raster(path, bands=[4, 2])
    # band 4 holds 0 at (0, 0) -> nodata; band 1's 0 is not selected
    assert valid.sum() == 8 and not valid[0, 0]
    np.testing.assert_array_equal(x[0][valid], np.arange(1, 9))
    assert info.bands == 2 and info.band_names == ["band 4", "band 2"]


def test_band_out_of_range_message(tmp_path):
    path = make_tif(tmp_path / "T1.tif", np.zeros((4, 2, 2), np.float32) + np.arange(4)[:, None, None])
    with pytest.raises(InputError, match=r"BANDS asks for band 210 but T1.tif has 4 bands"):
        read_raster(path, bands=[1, 210])
    with pytest.raises(InputError, match="band 0"):
        read_raster(path, bands=[0])
    with pytest.raises(InputError, match="more than once"):
        read_raster(path, bands=[2, 2])


def test_all_nodata_is_refused(tmp_path):
    path = make_tif(tmp_path / "empty.tif", np.full((2, 3, 3), -1, np.float32), nodata=-1)
    with pytest.raises(InputError, match="no valid pixel"):
        read_raster(path)


def test_missing_unreadable_folder_and_zero_bands(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        raster_info(tmp_path / "nope.tif")
    text = tmp_path / "notes.tif"
    text.write_text("this is not a raster")
    with pytest.raises(InputError, match="could not be read as a raster"):
        raster_info(text)
    with pytest.raises(InputError, match="is a folder"):
        raster_info(tmp_path)
    vrt = tmp_path / "noband.vrt"  # GDAL refuses a 0-band VRT at open time
    vrt.write_text('<VRTDataset rasterXSize="4" rasterYSize="4"></VRTDataset>')
    with pytest.raises(InputError, match="could not be read as a raster"):
        raster_info(vrt)


def test_require_bands(tmp_path):
    info = raster_info(make_tif(tmp_path / "one.tif", np.ones((1, 2, 2), np.float32)))
    require_bands(info, 1)
    with pytest.raises(InputError, match=r"has 1 band but at least 2"):
        require_bands(info, 2, "T1")


def test_constant_bands():
    x = np.stack([np.ones((3, 3)), np.arange(9.0).reshape(3, 3), np.full((3, 3), 5.0)]).astype(np.float32)
    valid = np.ones((3, 3), bool)
    x[2, 0, 0] = 99.0
    valid2 = valid.copy()
    valid2[0, 0] = False  # the only differing pixel of band 3 is invalid -> band 3 is constant
    assert constant_bands(x, valid) == [1]
    assert constant_bands(x, valid2) == [1, 3]


def test_read_window_matches_whole_read(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(3, 20, 17)).astype(np.float32)
    data[1, 5, 6] = np.nan
    path = make_tif(tmp_path / "w.tif", data)
    x, valid, _ = read_raster(path, bands=[3, 2])
    xw, vw = read_window(path, [3, 2], 4, 6, 5, 10)
    np.testing.assert_array_equal(xw, x[:, 4:10, 5:15])
    np.testing.assert_array_equal(vw, valid[4:10, 5:15])
    assert not vw[1, 1]
    with pytest.raises(ValueError):
        read_window(path, None, 15, 10, 0, 5)


def test_envi_via_header_and_data_file_with_micrometre_wavelengths(tmp_path):
    """An ENVI BSQ written by hand (raw bytes + header) opens from either file; um become nm."""
    data = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "scene").write_bytes(data.tobytes())
    (tmp_path / "scene.hdr").write_text(
        "ENVI\nsamples = 4\nlines = 3\nbands = 2\nheader offset = 0\nfile type = ENVI Standard\n"
        "data type = 1\ninterleave = bsq\nbyte order = 0\n"
        "map info = {UTM, 1.000, 1.000, 203325.000, 3604935.000, 3.0e+001, 3.0e+001, 51, North, WGS-84, "
        "units=Meters}\n"
        "wavelength units = Micrometers\nwavelength = {0.4825, 1.65}\n"
    )
    for given in ("scene.hdr", "scene"):
        x, valid, info = read_raster(tmp_path / given)
        assert info.path == str(tmp_path / "scene")
        np.testing.assert_array_equal(x, data.astype(np.float32))
        assert valid.all()
        assert info.wavelengths_nm == pytest.approx([482.5, 1650.0])
        assert info.geotransform == pytest.approx((203325.0, 30.0, 0.0, 3604935.0, 0.0, -30.0))
    (tmp_path / "lonely.hdr").write_text("ENVI\n")
    with pytest.raises(InputError, match="no data file was found"):
        resolve_raster_path(tmp_path / "lonely.hdr")


def test_wavelengths_from_imagery_domain_and_dataset_list(tmp_path):
    data = np.ones((3, 2, 2), np.float32) * np.arange(1, 4)[:, None, None]
    imagery = make_tif(
        tmp_path / "imagery.tif", data, band_md=lambda i: {"IMAGERY": {"CENTRAL_WAVELENGTH_UM": str(0.5 + 0.1 * i)}}
    )
    assert raster_info(imagery).wavelengths_nm == pytest.approx([500.0, 600.0, 700.0])
    listed = make_tif(
        tmp_path / "listed.tif", data, ds_md={"wavelength": "{450.5, 550, 650}", "wavelength_units": "Nanometers"}
    )
    assert raster_info(listed).wavelengths_nm == pytest.approx([450.5, 550.0, 650.0])
    per_band_um = make_tif(
        tmp_path / "um.tif", data, band_md=lambda i: {"": {"wavelength": str(1 + i), "wavelength_units": "um"}}
    )
    assert raster_info(per_band_um).wavelengths_nm == pytest.approx([1000.0, 2000.0, 3000.0])
    assert raster_info(make_tif(tmp_path / "none.tif", data)).wavelengths_nm is None


def test_vrt_input(tmp_path):
    data = np.arange(2 * 5 * 6, dtype=np.float32).reshape(2, 5, 6)
    src = make_tif(tmp_path / "src.tif", data)
    vrt = str(tmp_path / "sub.vrt")
    gdal.Translate(vrt, src, format="VRT", bandList=[2])
    x, valid, info = read_raster(vrt)
    np.testing.assert_array_equal(x[0], data[1])
    assert info.driver == "VRT" and info.geotransform == GT


def test_shared_taizhou_envi_and_bench_wavelengths(shared_dir):
    tz = shared_dir / "data" / "taizhou"
    a = raster_info(tz / "2000TM.HDR")
    b = raster_info(tz / "2000TM")
    assert a.path == b.path and os.path.basename(a.path) == "2000TM"
    assert (a.rows, a.cols, a.bands, a.dtype) == (400, 400, 6, "Byte")
    assert a.wavelengths_nm == pytest.approx([482.5, 565.0, 660.0, 825.0, 1650.0, 2220.0])
    assert a.geotransform == pytest.approx((203325.0, 30.0, 0.0, 3604935.0, 0.0, -30.0))
    srs = osr.SpatialReference(wkt=a.crs_wkt)
    assert srs.GetUTMZone() == 51
    check_same_grid(a, raster_info(tz / "2003TM"))
    bench = raster_info(shared_dir / "data" / "bench" / "salinasA_pair" / "t1.tif")
    assert bench.bands == 204 and bench.wavelengths_nm[0] == pytest.approx(400.0)
    assert bench.wavelengths_nm[-1] == pytest.approx(2490.583, abs=1e-3)


# ----------------------------------------------------------------------------------------------- masks


def test_read_mask_png_without_georeference(tmp_path):
    arr = np.zeros((4, 5), np.uint8)
    arr[1:3, 2:4] = 255
    mem = gdal.GetDriverByName("MEM").Create("", 5, 4, 1, gdal.GDT_Byte)
    mem.GetRasterBand(1).WriteArray(arr)
    gdal.GetDriverByName("PNG").CreateCopy(str(tmp_path / "m.png"), mem)
    mem = None
    mask = read_mask(tmp_path / "m.png", like_info(4, 5))
    np.testing.assert_array_equal(mask, arr != 0)
    with pytest.raises(InputError, match="is 5 x 4 pixels but like.tif is 6 x 4"):
        read_mask(tmp_path / "m.png", like_info(4, 6))


def test_read_mask_nodata_is_false(tmp_path):
    arr = np.array([[[0, 1, 2], [255, 3, 0]]], np.uint8)
    path = make_tif(tmp_path / "mask.tif", arr, nodata=255, dtype=gdal.GDT_Byte)
    mask = read_mask(path, like_info(2, 3))
    np.testing.assert_array_equal(mask, [[False, True, True], [False, True, False]])


# ------------------------------------------------------------------------------------------ grid checks


def test_check_same_grid_reports_what_differs():
    a = like_info(10, 12, 5)
    check_same_grid(a, like_info(10, 12, 5, gt=(500000.0 + 1e-4, 30.0, 0.0, 3600000.0, 0.0, -30.0)))
    with pytest.raises(InputError, match=r"T1 \(like.tif\) is 12 x 10 pixels but T2 .* 12 x 11.*gdalwarp"):
        check_same_grid(a, like_info(11, 12, 5))
    with pytest.raises(InputError, match="has 5 bands but .* has 4"):
        check_same_grid(a, like_info(10, 12, 4))
    with pytest.raises(InputError, match="origins differ by \\(15, 0\\).*Align rasters"):
        check_same_grid(a, like_info(10, 12, 5, gt=(500015.0, 30.0, 0.0, 3600000.0, 0.0, -30.0)))
    with pytest.raises(InputError, match="different pixel sizes"):
        check_same_grid(a, like_info(10, 12, 5, gt=(500000.0, 20.0, 0.0, 3600000.0, 0.0, -20.0)))
    with pytest.raises(InputError, match="different coordinate reference systems"):
        check_same_grid(a, like_info(10, 12, 5, epsg=32650))
    with pytest.raises(InputError, match="Before has no coordinate reference system"):
        check_same_grid(like_info(10, 12, 5, epsg=0), a, what=("Before", "After"))


# ---------------------------------------------------------------------------------------------- writing


def test_write_raster_roundtrip_tiled_deflate(tmp_path):
    like = like_info(300, 260, 1)
    arr = np.random.default_rng(1).normal(size=(300, 260)).astype(np.float32)
    arr[5, 5] = np.nan
    out = tmp_path / "intensity.tif"
    write_raster(out, arr, like, nodata=np.nan)
    ds = gdal.Open(str(out))
    assert ds.RasterCount == 1 and ds.GetGeoTransform() == GT
    assert ds.GetMetadataItem("COMPRESSION", "IMAGE_STRUCTURE") == "DEFLATE"
    assert ds.GetRasterBand(1).GetBlockSize() == [256, 256]
    assert np.isnan(ds.GetRasterBand(1).GetNoDataValue())
    ds = None
    x, valid, info = read_raster(out)
    assert not valid[5, 5] and valid.sum() == arr.size - 1
    np.testing.assert_array_equal(x[0][valid], arr[valid])
    check_same_grid(like, info)
    assert sorted(os.listdir(tmp_path)) == ["intensity.tif"]


def test_write_uint8_nan_becomes_nodata_and_metadata(tmp_path):
    like = like_info(2, 3, 2)
    arr = np.array([[[1, 0, np.nan], [0, 1, 1]], [[2, 2, 2], [2, 2, 2]]], np.float32)
    out = tmp_path / "change.tif"
    write_raster(
        out,
        arr,
        like,
        nodata=255,
        dtype="uint8",
        band_names=["change", "two"],
        metadata={"method": "test"},
        wavelengths_nm=[500.0, 600.0],
    )
    info = raster_info(out)
    assert info.dtype == "Byte" and info.nodata == [255.0, 255.0] and info.band_names == ["change", "two"]
    assert info.wavelengths_nm == pytest.approx([500.0, 600.0])
    ds = gdal.Open(str(out))
    np.testing.assert_array_equal(ds.GetRasterBand(1).ReadAsArray(), [[1, 0, 255], [0, 1, 1]])
    assert ds.GetMetadataItem("method") == "test"
    ds = None


def test_write_is_atomic_and_checks_folder(tmp_path):
    like = like_info(4, 4, 2)
    target = tmp_path / "out.tif"
    target.write_bytes(b"old contents")
    with pytest.raises(IndexError):  # fails after the first band was written
        write_raster(target, np.zeros((2, 4, 4), np.float32), like, band_names=["only one"])
    assert target.read_bytes() == b"old contents"
    assert sorted(os.listdir(tmp_path)) == ["out.tif"]
    with pytest.raises(InputError, match="does not exist"):
        write_raster(tmp_path / "missing" / "x.tif", np.zeros((4, 4)), like)
    with pytest.raises(InputError, match="is a folder"):
        write_raster(tmp_path, np.zeros((4, 4)), like_info(4, 4))


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_write_refuses_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(InputError, match="not writable"):
            write_raster(ro / "x.tif", np.zeros((4, 4)), like_info(4, 4))
    finally:
        ro.chmod(0o700)


def test_refuse_overwriting_inputs(tmp_path, monkeypatch):
    t1 = tmp_path / "t1.tif"
    t1.write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    refuse_overwriting_inputs([tmp_path / "change.tif", None], [t1, None])
    with pytest.raises(InputError, match="would overwrite the input"):
        refuse_overwriting_inputs(["./sub/../t1.tif"], [str(t1)])
    link = tmp_path / "link.tif"
    link.symlink_to(t1)
    with pytest.raises(InputError, match="would overwrite"):
        refuse_overwriting_inputs([link], [t1])
    with pytest.raises(InputError, match="would overwrite"):  # ENVI data file given as .hdr
        refuse_overwriting_inputs([tmp_path / "2000TM"], [tmp_path / "2000TM.HDR"])
    with pytest.raises(InputError, match="would overwrite"):  # the header of an ENVI input
        refuse_overwriting_inputs([tmp_path / "2000TM.hdr"], [tmp_path / "2000TM"])
    with pytest.raises(InputError, match="same path"):
        refuse_overwriting_inputs([tmp_path / "a.tif", "a.tif"], [t1])


# ---------------------------------------------------------------------------------------- sample data


def test_sample_data_georeference_wavelengths_and_labels(sample_dir):
    t1 = raster_info(sample_dir / "salinasA_pair" / "t1.tif")
    t2 = raster_info(sample_dir / "salinasA_pair" / "t2.tif")
    check_same_grid(t1, t2)
    assert (t1.bands, t1.rows, t1.cols, t1.dtype) == (204, 83, 86, "Int16")
    assert t1.geotransform == (600000.0, 20.0, 0.0, 4060000.0, 0.0, -20.0)
    assert osr.SpatialReference(wkt=t1.crs_wkt).GetAuthorityCode(None) == "32610"
    assert t1.wavelengths_nm[0] == pytest.approx(400.0) and t1.wavelengths_nm[-1] == pytest.approx(2490.583)
    gt = read_raster(sample_dir / "salinasA_pair" / "gt.tif")[0][0]
    assert (gt == 1).sum() == 1240 and (gt == 0).sum() == 5898

    a = raster_info(sample_dir / "taizhou_crop" / "t1.tif")
    check_same_grid(a, raster_info(sample_dir / "taizhou_crop" / "t2.tif"))
    assert (a.bands, a.rows, a.cols, a.dtype) == (6, 200, 200, "Byte")
    assert osr.SpatialReference(wkt=a.crs_wkt).GetAuthorityCode(None) == "32651"
    # crop rows 200.., cols 90.. of the scene whose upper-left corner is (203325, 3604935), 30 m pixels
    assert a.geotransform == (203325.0 + 90 * 30, 30.0, 0.0, 3604935.0 - 200 * 30, 0.0, -30.0)
    assert a.wavelengths_nm == pytest.approx([482.5, 565.0, 660.0, 825.0, 1650.0, 2220.0])
    ref, labelled, rinfo = read_raster(sample_dir / "taizhou_crop" / "reference.tif")
    assert rinfo.nodata == [255.0]
    assert (ref[0][labelled] == 1).sum() == 2095 and (ref[0][labelled] == 0).sum() == 2965
    total = sum(f.stat().st_size for f in sample_dir.rglob("*") if f.is_file())
    assert total < 4_000_000
    assert (sample_dir / "PROVENANCE.md").is_file() and (sample_dir / "taizhou_crop" / "LICENSE-source.txt").is_file()


def test_sample_matches_its_sources(sample_dir, shared_dir):
    """salinasA: the bench floats rounded to int16; Taizhou: an exact crop of the ENVI scene and both masks."""
    bench = shared_dir / "data" / "bench" / "salinasA_pair"
    for name in ("t1", "t2"):
        src = read_raster(bench / f"{name}.tif")[0]
        ours = read_raster(sample_dir / "salinasA_pair" / f"{name}.tif")[0]
        assert np.abs(ours - src).max() <= 0.5
        np.testing.assert_array_equal(ours, np.rint(src))
    tz = shared_dir / "data" / "taizhou"
    for name, src_name in (("t1", "2000TM"), ("t2", "2003TM")):
        src, _, info = read_raster(tz / src_name)
        np.testing.assert_array_equal(
            read_raster(sample_dir / "taizhou_crop" / f"{name}.tif")[0], src[:, 200:400, 90:290]
        )
    change = read_mask(tz / "change.bmp", info)[200:400, 90:290]
    unchanged = read_mask(tz / "unchanged.bmp", info)[200:400, 90:290]
    ref = gdal.Open(str(sample_dir / "taizhou_crop" / "reference.tif")).ReadAsArray()
    np.testing.assert_array_equal(ref == 1, change)
    np.testing.assert_array_equal(ref == 0, unchanged)


def test_errors_stay_input_errors_when_gdal_exceptions_are_on(tmp_path):
    """Other code in QGIS may call gdal.UseExceptions(); our messages must not turn into RuntimeErrors."""
    text = tmp_path / "notes.tif"
    text.write_text("this is not a raster")
    good = make_tif(tmp_path / "good.tif", np.arange(8, dtype=np.float32).reshape(2, 2, 2))
    was_on = gdal.GetUseExceptions()
    gdal.UseExceptions()
    try:
        with pytest.raises(InputError, match="could not be read as a raster"):
            raster_info(text)
        x, valid, _ = read_raster(good)
        assert valid.all() and x[1, 1, 1] == 7
        write_raster(tmp_path / "out.tif", x, raster_info(good))
        assert raster_info(tmp_path / "out.tif").bands == 2
    finally:
        if not was_on:
            gdal.DontUseExceptions()


def test_truncated_file_is_a_clear_error(tmp_path):
    """A GeoTIFF cut short (an interrupted copy) says which file and what to do, not a GDAL traceback."""
    import numpy as np
    from osgeo import gdal

    from hypernet_qgis.core.errors import InputError
    from hypernet_qgis.core.io import raster_io

    path = tmp_path / "cut.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(path), 64, 64, 3, gdal.GDT_Float32)
    for b in range(3):
        ds.GetRasterBand(b + 1).WriteArray(np.full((64, 64), b, np.float32))
    ds = None
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    try:
        raster_io.read_raster(str(path))
    except InputError as exc:
        assert "cut.tif" in str(exc)
    else:
        raise AssertionError("a truncated file was read without error")
