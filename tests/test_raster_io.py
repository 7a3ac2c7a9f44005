"""Raster I/O against real files written with GDAL (GeoTIFF, ENVI, VRT, PNG) and the shared real data."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
from osgeo import gdal, osr

from hypernet_qgis.core.errors import InputError
from hypernet_qgis.core.io.raster_io import (
    RasterInfo,
    block_row_mb,
    check_same_grid,
    check_same_grid_2d,
    constant_bands,
    open_windows,
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


# ------------------------------------------------------------------- exact messages, edges and failures


def _message(exc_info) -> str:
    return str(exc_info.value)


def test_band_numbers_messages(tmp_path):
    one = make_tif(tmp_path / "one.tif", np.ones((1, 2, 2), np.float32))
    four = make_tif(tmp_path / "four.tif", np.ones((4, 2, 2), np.float32))
    with pytest.raises(InputError) as e:
        read_raster(one, bands=[2])
    assert _message(e) == "BANDS asks for band 2 but one.tif has 1 band. Use band numbers from 1 to 1."
    for bad in (1.5, True):
        with pytest.raises(InputError) as e:
            read_raster(four, bands=[bad])
        assert _message(e) == f"Band numbers must be whole numbers; got {bad!r}."
    with pytest.raises(InputError) as e:
        read_raster(four, bands=[])
    assert _message(e) == "BANDS is empty. Give at least one band number, or leave it empty to use every band."
    with pytest.raises(InputError) as e:
        read_raster(four, bands=[3, 1, 3])
    assert _message(e) == "BANDS lists band 3 more than once. List each band once."
    x, _, info = read_raster(four, bands=[np.int64(2), 4.0])  # whole numbers of any type
    assert x.shape == (2, 2, 2) and info.band_names == ["band 2", "band 4"]


def test_require_bands_messages(tmp_path):
    one = raster_info(make_tif(tmp_path / "one.tif", np.ones((1, 2, 2), np.float32)))
    two = raster_info(make_tif(tmp_path / "two.tif", np.ones((2, 2, 2), np.float32)))
    require_bands(two, 2)
    tail = (
        "are needed. Use a multi- or hyperspectral image (all bands in one file; build one with "
        "gdalbuildvrt -separate or Processing 'Build virtual raster')."
    )
    with pytest.raises(InputError) as e:
        require_bands(one, 2)
    assert _message(e) == "one.tif (one.tif) has 1 band but at least 2 " + tail
    with pytest.raises(InputError) as e:
        require_bands(two, 3, "T2")
    assert _message(e) == "T2 (two.tif) has 2 bands but at least 3 " + tail


def test_a_band_without_valid_pixels_is_named(tmp_path):
    data = np.arange(4 * 3 * 3, dtype=np.float32).reshape(4, 3, 3)
    data[2] = -1  # band 3 is all nodata
    path = make_tif(tmp_path / "x.tif", data, nodata=-1)
    tail = ", so no pixel is valid in every band. Leave it out with BANDS (--bands), or fix its nodata value."
    with pytest.raises(InputError) as e:
        read_raster(path)
    assert _message(e) == "Band 3 of x.tif has no valid pixel (all nodata or NaN)" + tail
    data[3] = -1
    data[1] = -1
    path = make_tif(tmp_path / "y.tif", data, nodata=-1)
    with pytest.raises(InputError) as e:
        read_raster(path, bands=[1, 2, 3, 4])
    assert _message(e) == "Band 2 of y.tif has no valid pixel (all nodata or NaN) (and 2 more)" + tail
    with pytest.raises(InputError) as e:
        read_raster(path, bands=[4, 1, 3])
    assert _message(e) == "Band 4 of y.tif has no valid pixel (all nodata or NaN) (and 1 more)" + tail
    x, valid, _ = read_raster(path, bands=[1])  # the empty bands left out
    assert valid.all() and x[0, 2, 2] == 8
    # every band empty: the file as a whole has no valid pixel
    path = make_tif(tmp_path / "z.tif", np.full((2, 3, 3), -1, np.float32), nodata=-1)
    with pytest.raises(InputError) as e:
        read_raster(path)
    assert _message(e) == (
        "z.tif has no valid pixel: every pixel is nodata, NaN or masked in at least one band. Check the nodata "
        "value (gdal_edit -unsetnodata or Layer Properties) and the band selection."
    )


def test_read_window_edges_and_message(tmp_path):
    data = np.arange(2 * 20 * 17, dtype=np.float32).reshape(2, 20, 17)
    path = make_tif(tmp_path / "w.tif", data)
    for row0, nrows, col0, ncols in ((0, 20, 0, 17), (0, 1, 0, 1), (19, 1, 16, 1), (5, 15, 3, 14)):
        x, valid = read_window(path, None, row0, nrows, col0, ncols)
        np.testing.assert_array_equal(x, data[:, row0 : row0 + nrows, col0 : col0 + ncols])
        assert valid.shape == (nrows, ncols) and valid.all()
    for row0, nrows, col0, ncols in (
        (-1, 2, 0, 2),
        (0, 2, -1, 2),
        (0, 0, 0, 2),
        (0, 2, 0, 0),
        (15, 6, 0, 2),
        (0, 2, 10, 8),
    ):
        with pytest.raises(ValueError) as e:
            read_window(path, [2], row0, nrows, col0, ncols)
        assert _message(e) == (
            f"window rows {row0}:{row0 + nrows}, cols {col0}:{col0 + ncols} is outside w.tif (20 x 17)"
        )


def test_read_window_of_a_nodata_corner_is_all_invalid(tmp_path):
    data = np.ones((2, 6, 6), np.float32)
    data[:, :3, :3] = -5
    path = make_tif(tmp_path / "c.tif", data, nodata=-5)
    x, valid = read_window(path, [2, 1], 0, 3, 0, 3)
    assert not valid.any() and np.isnan(x).all()
    x, valid = read_window(path, None, 2, 3, 2, 3)
    assert valid.sum() == 8 and not valid[0, 0] and np.isnan(x[:, 0, 0]).all()


def test_constant_bands_edges():
    x = np.stack([np.full((2, 3), 100.0), np.full((2, 3), 100.0), np.full((2, 3), 0.0)]).astype(np.float32)
    x[0, 0, 0] = 100.5
    valid = np.ones((2, 3), bool)
    assert constant_bands(x, valid) == [2, 3]
    assert constant_bands(x, valid, rtol=0.01) == [1, 2, 3]  # 0.5 is within 1 % of 100.5
    assert constant_bands(x, valid, rtol=0.001) == [2, 3]
    assert constant_bands(x, np.zeros((2, 3), bool)) == [1, 2, 3]  # no valid pixel: nothing to learn


def test_band_subset_keeps_the_file_description(tmp_path):
    data = np.arange(3 * 2 * 2, dtype=np.float32).reshape(3, 2, 2)
    src = make_tif(
        tmp_path / "s.tif", data, band_md=lambda i: {"": {"wavelength": str(500 + 100 * i), "wavelength_units": "nm"}}
    )
    path = str(tmp_path / "s.vrt")  # a VRT: one nodata per band
    ds = gdal.Translate(path, src, format="VRT")
    ds.GetRasterBand(1).SetNoDataValue(1.0)
    ds.GetRasterBand(3).SetNoDataValue(9.0)
    ds = None
    full = raster_info(path)
    for bands in (None, [1, 2, 3], [3, 1]):
        _, _, info = read_raster(path, bands=bands)
        idx = [0, 1, 2] if bands is None else [b - 1 for b in bands]
        assert info.path == path and (info.rows, info.cols, info.bands) == (2, 2, len(idx))
        assert info.geotransform == GT and info.crs_wkt == full.crs_wkt != ""
        assert info.nodata == [[1.0, None, 9.0][i] for i in idx]
        assert info.wavelengths_nm == [[500.0, 600.0, 700.0][i] for i in idx]
        assert info.band_names == [f"band {i + 1}" for i in idx]
        assert (info.dtype, info.driver, info.files) == ("Float32", "VRT", [path, src])
    _, _, info = read_raster(make_tif(tmp_path / "n.tif", data), bands=[2])
    assert info.wavelengths_nm is None and info.nodata == [None]


def _corrupt_tile(path: str, band: int, tx: int, ty: int) -> None:
    ds = gdal.Open(path)
    b = ds.GetRasterBand(band)
    offset = int(b.GetMetadataItem(f"BLOCK_OFFSET_{tx}_{ty}", "TIFF"))
    size = int(b.GetMetadataItem(f"BLOCK_SIZE_{tx}_{ty}", "TIFF"))
    b = ds = None
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\xff" * size)


@pytest.mark.parametrize("exceptions", [False, True])
def test_a_corrupt_tile_names_its_band(tmp_path, exceptions):
    """One damaged tile of band 3: windows around it read, a window over it names band 3 and GDAL's reason."""
    path = str(tmp_path / "cut.tif")
    ds = gdal.GetDriverByName("GTiff").Create(
        path,
        48,
        48,
        3,
        gdal.GDT_Float32,
        ["TILED=YES", "BLOCKXSIZE=16", "BLOCKYSIZE=16", "COMPRESS=DEFLATE", "INTERLEAVE=BAND"],
    )
    for b in range(3):
        ds.GetRasterBand(b + 1).WriteArray(np.full((48, 48), b, np.float32))
    ds = None
    _corrupt_tile(path, 3, 1, 1)  # rows and cols 16..31 of band 3
    was_on = gdal.GetUseExceptions()
    if exceptions:
        gdal.UseExceptions()
    try:
        x, valid = read_window(path, [3, 1], 0, 16, 0, 48)
        assert valid.all() and (x[0] == 2).all()
        x, valid = read_window(path, [1, 2], 16, 16, 16, 16)
        assert valid.all() and (x[1] == 1).all()
        for bands, window in (([1, 2, 3], (20, 10, 18, 12)), ([2, 3, 1], (16, 16, 16, 16)), ([3], (31, 1, 31, 1))):
            with pytest.raises(InputError) as e:
                read_window(path, bands, *window)
            msg = _message(e)
            assert msg.startswith("Band 3 of cut.tif could not be read (GDAL: ") and "TIFFReadEncodedTile" in msg
            assert msg.endswith("). The file may be truncated or corrupt; re-export it.")
        with pytest.raises(InputError, match=r"^Band 3 of cut.tif could not be read \(GDAL: \S"):
            read_raster(path)
    finally:
        if exceptions and not was_on:
            gdal.DontUseExceptions()


def test_a_mask_band_marks_pixels_invalid(tmp_path):
    path = str(tmp_path / "masked.tif")
    ds = gdal.GetDriverByName("GTiff").Create(path, 5, 4, 2, gdal.GDT_Float32)
    ds.SetGeoTransform(GT)
    ds.CreateMaskBand(gdal.GMF_PER_DATASET)
    for b in range(2):
        ds.GetRasterBand(b + 1).WriteArray(np.arange(20, dtype=np.float32).reshape(4, 5) + 10 * b)
    mask = np.full((4, 5), 255, np.uint8)
    mask[1, 2] = mask[3, 4] = 0
    ds.GetRasterBand(1).GetMaskBand().WriteArray(mask)
    ds.GetRasterBand(2).WriteArray(np.array([[np.nan]], np.float32), 0, 3)  # unmasked, but NaN
    ds = None
    x, valid, _ = read_raster(path)
    expected = mask == 255
    expected[3, 0] = False
    np.testing.assert_array_equal(valid, expected)
    assert np.isnan(x[:, 1, 2]).all() and x[1, 0, 0] == 10
    x, valid = read_window(path, [2], 1, 3, 2, 3)
    np.testing.assert_array_equal(valid, mask[1:4, 2:5] == 255)
    x, valid = read_window(path, [1], 2, 2, 1, 4)
    np.testing.assert_array_equal(valid, mask[2:4, 1:5] == 255)
    assert not valid[1, 3] and valid.sum() == 7


def test_nodata_the_data_type_cannot_hold_is_ignored(tmp_path):
    """-1 or 0.5 as nodata of a Byte band matches no pixel (-1 must not wrap to 255, 0.5 not round to 0)."""
    data = np.array([[[0, 255], [1, 2]]], np.uint8)
    for nd in (-1.0, 0.5, 256.0):
        path = make_tif(tmp_path / f"b{nd}.tif", data, nodata=nd, dtype=gdal.GDT_Byte)
        x, valid, info = read_raster(path)
        assert info.nodata == [nd] and valid.all(), nd
        assert read_mask(path, raster_info(path)).tolist() == [[False, True], [True, True]]
    path = make_tif(tmp_path / "i16.tif", np.array([[[-3, 4], [5, 6]]], np.int16), nodata=-3, dtype=gdal.GDT_Int16)
    assert read_raster(path)[1].tolist() == [[False, True], [True, True]]


def test_float_nodata_matches_at_the_band_precision(tmp_path):
    """A nodata of 0.1 matches the Float32 pixels holding 0.1 (compared in float32, not float64)."""
    data = np.array([[[0.1, 0.2], [0.3, 0.1]]], np.float32)
    path = make_tif(tmp_path / "f.tif", data, nodata=0.1)
    assert read_raster(path)[1].tolist() == [[False, True], [True, False]]
    assert read_mask(path, raster_info(path)).tolist() == [[False, True], [True, False]]


def test_read_mask_float_values_and_messages(tmp_path):
    arr = np.array([[[0.0, 1.5, np.nan], [np.inf, -2.0, 0.0]]], np.float32)
    path = make_tif(tmp_path / "fm.tif", arr)
    like = raster_info(path)
    assert read_mask(path, like).tolist() == [[False, True, False], [False, True, False]]
    with pytest.raises(InputError) as e:
        read_mask(path, like_info(3, 3))
    assert _message(e) == (
        "The mask fm.tif is 3 x 2 pixels but like.tif is 3 x 3. Make the mask on the image's grid (e.g. warp it "
        "with gdalwarp or Processing 'Align rasters')."
    )
    with pytest.raises(InputError) as e:
        read_mask(path, like_info(2, 3, gt=(500060.0, 30.0, 0.0, 3600000.0, 0.0, -30.0)))
    assert _message(e) == (
        "fm.tif and like.tif are not on the same grid: their origins differ by (60, 0) map units. Warp like.tif "
        "onto fm.tif's grid with gdalwarp or Processing 'Align rasters'."
    )
    # a mask without georeference is taken on the image's grid when the size matches
    assert read_mask(path, like_info(2, 3, gt=(0.0, 1.0, 0.0, 0.0, 0.0, 1.0))).sum() == 2


@pytest.mark.parametrize("exceptions", [False, True])
def test_read_mask_of_a_corrupt_file(tmp_path, exceptions):
    path = str(tmp_path / "bad.tif")
    ds = gdal.GetDriverByName("GTiff").Create(path, 32, 32, 1, gdal.GDT_Byte, ["TILED=YES", "COMPRESS=DEFLATE"])
    ds.GetRasterBand(1).WriteArray(np.ones((32, 32), np.uint8))
    ds = None
    _corrupt_tile(path, 1, 0, 0)
    was_on = gdal.GetUseExceptions()
    if exceptions:
        gdal.UseExceptions()
    try:
        with pytest.raises(InputError) as e:
            read_mask(path, like_info(32, 32))
    finally:
        if exceptions and not was_on:
            gdal.DontUseExceptions()
    assert _message(e) == "The mask bad.tif could not be read. Re-export it as a GeoTIFF."


def _wavelengths(tmp_path, name, band_md=None, ds_md=None, envi_md=None, bands=3):
    data = np.ones((bands, 2, 2), np.float32)
    path = make_tif(tmp_path / f"{name}.tif", data, band_md=band_md, ds_md=ds_md)
    if envi_md:
        ds = gdal.Open(path, gdal.GA_Update)
        ds.SetMetadata(envi_md, "ENVI")
        ds = None
    return raster_info(path).wavelengths_nm


def test_wavelength_keys_units_and_guesses(tmp_path):
    """Where the wavelengths of a file are found, and how their unit is read or (without one) guessed."""
    per_band = lambda md: lambda i: {"": {k: v.format(i=i) for k, v in md.items()}}  # noqa: E731
    # per band, either spelling of the keys; the unit given wins over the magnitude
    assert _wavelengths(tmp_path, "a", per_band({"WAVELENGTH": "0.{i}5", "WAVELENGTH_UNITS": "Micrometers"})) == [
        pytest.approx(50.0),
        pytest.approx(150.0),
        pytest.approx(250.0),
    ]
    assert _wavelengths(tmp_path, "b", per_band({"wavelength": "2{i}", "wavelength_units": "nm"})) == [20.0, 21.0, 22.0]
    assert _wavelengths(tmp_path, "c", per_band({"wavelength": "4{i}", "wavelength_units": "um"})) == [
        40000.0,
        41000.0,
        42000.0,
    ]
    # no unit: below 30 means micrometres, 30 and above nanometres
    assert _wavelengths(tmp_path, "d", per_band({"wavelength": "29.{i}"})) == pytest.approx([29000.0, 29100.0, 29200.0])
    assert _wavelengths(tmp_path, "e", per_band({"wavelength": "30"})) == [30.0, 30.0, 30.0]
    assert _wavelengths(tmp_path, "f", per_band({"wavelength": "30.{i}"})) == pytest.approx([30.0, 30.1, 30.2])
    # "unknown" is no unit: guessed
    assert _wavelengths(tmp_path, "g", per_band({"wavelength": "0.5", "wavelength_units": "Unknown"})) == [500.0] * 3
    # units that are not lengths give no wavelengths, in either spelling of the key, or at the dataset level
    for units in ("wavenumber", "GHz", "index", "furlongs"):
        assert _wavelengths(tmp_path, "h", per_band({"wavelength": "2000", "wavelength_units": units})) is None
    assert _wavelengths(tmp_path, "i", per_band({"WAVELENGTH": "2000", "WAVELENGTH_UNITS": "wavenumber"})) is None
    assert (
        _wavelengths(tmp_path, "j", per_band({"wavelength": "2000"}), ds_md={"wavelength_units": "wavenumber"}) is None
    )
    assert _wavelengths(tmp_path, "k", per_band({"wavelength": "0.5"}), ds_md={"wavelength_units": "nm"}) == [0.5] * 3
    # a wavelength that is no number (or NaN) is no wavelength
    assert _wavelengths(tmp_path, "l", per_band({"wavelength": "n/a", "wavelength_units": "nm"})) is None
    assert _wavelengths(tmp_path, "m", per_band({"wavelength": "nan"})) is None


def test_dataset_level_wavelength_lists(tmp_path):
    # a per-band entry that cannot be used leaves the dataset-level list in charge
    bad_band = lambda i: {"": {"wavelength": "2000", "wavelength_units": "wavenumber"}}  # noqa: E731
    envi = {"wavelength": "{0.45, 0.55, 0.65}", "wavelength units": "Micrometers"}
    assert _wavelengths(tmp_path, "a", band_md=bad_band, envi_md=envi) == pytest.approx([450.0, 550.0, 650.0])
    assert _wavelengths(tmp_path, "b", envi_md={"wavelength": "{2000, 2100, 2200}", "wavelength units": "GHz"}) is None
    assert _wavelengths(tmp_path, "c", ds_md={"WAVELENGTH": "0.45,0.55,0.65"}) == pytest.approx([450.0, 550.0, 650.0])
    assert _wavelengths(tmp_path, "d", ds_md={"wavelength": "{2000, 2100, 2200}", "wavelength_units": "GHz"}) is None
    assert _wavelengths(tmp_path, "e", ds_md={"wavelength": "{450, 550}"}) is None  # two values for three bands
    assert _wavelengths(tmp_path, "f", ds_md={"wavelength": "{450, 550, blue}"}) is None
    assert _wavelengths(tmp_path, "g", ds_md={"wavelength": "{450, 550, 650}"}) == [450.0, 550.0, 650.0]


# ------------------------------------------------------------------------------------- grid checks, exact


def _grid_error(a, b, what=("T1", "T2")) -> str:
    with pytest.raises(InputError) as e:
        check_same_grid(a, b, what)
    return _message(e)


def test_check_same_grid_messages_name_what_to_do():
    a = like_info(10, 12, 5)
    warp = "onto T1 (like.tif)'s grid"
    assert _grid_error(a, like_info(11, 12, 5)) == (
        "T1 (like.tif) is 12 x 10 pixels but T2 (like.tif) is 12 x 11. Warp T2 onto T1's grid with gdalwarp or "
        "Processing 'Align rasters'."
    )
    assert _grid_error(a, like_info(10, 12, 4)) == (
        "T1 (like.tif) has 5 bands but T2 (like.tif) has 4. Both dates need the same bands in the same order; "
        "select matching bands (BANDS) or rebuild one image."
    )
    assert _grid_error(a, like_info(10, 12, 5, epsg=32650)) == (
        "T1 (like.tif) and T2 (like.tif) have different coordinate reference systems. Reproject T2 onto T1's "
        "grid with gdalwarp or Processing 'Align rasters'."
    )
    for first, second, missing in (
        (like_info(10, 12, 5, epsg=0), a, "Before"),
        (a, like_info(10, 12, 5, epsg=0), "After"),
    ):
        assert _grid_error(first, second, ("Before", "After")) == (
            f"{missing} has no coordinate reference system but the other date has one. Assign the CRS "
            "(gdal_edit -a_srs or Processing 'Assign projection') if both are on the same grid."
        )
    assert _grid_error(a, like_info(10, 12, 5, gt=(500000.0, 20.0, 0.0, 3600000.0, 0.0, -25.0))) == (
        "T1 (like.tif) and T2 (like.tif) have different pixel sizes (30 x 30 vs 20 x 25). Resample T2 (like.tif) "
        f"{warp} with gdalwarp or Processing 'Align rasters'."
    )
    assert _grid_error(a, like_info(10, 12, 5, gt=(499990.0, 30.0, 0.0, 3600015.0, 0.0, -30.0))) == (
        "T1 (like.tif) and T2 (like.tif) are not on the same grid: their origins differ by (-10, 15) map units. "
        f"Warp T2 (like.tif) {warp} with gdalwarp or Processing 'Align rasters'."
    )


@pytest.mark.parametrize("osr_exceptions", [False, True])
def test_grids_without_a_crs_or_with_unreadable_ones(osr_exceptions):
    """osr.UseExceptions() (other code in QGIS may call it) must not turn an unreadable CRS into a RuntimeError."""
    was_on = osr.GetUseExceptions()
    if osr_exceptions:
        osr.UseExceptions()
    try:
        _grids_without_a_crs_or_with_unreadable_ones()
    finally:
        if osr_exceptions and not was_on:
            osr.DontUseExceptions()


def _grids_without_a_crs_or_with_unreadable_ones():
    plain = like_info(4, 4, 1, epsg=0)
    check_same_grid(plain, like_info(4, 4, 1, epsg=0))  # neither has a CRS: only the grid counts
    weird = like_info(4, 4, 1)
    weird.crs_wkt = "not a CRS at all"
    same_weird = like_info(4, 4, 1)
    same_weird.crs_wkt = "not a CRS at all"
    check_same_grid(weird, same_weird)  # unreadable CRS: compared as text
    other = like_info(4, 4, 1)
    other.crs_wkt = "not a CRS either"
    assert "different coordinate reference systems" in _grid_error(weird, other)
    assert "different coordinate reference systems" in _grid_error(like_info(4, 4, 1), other)
    assert "different coordinate reference systems" in _grid_error(other, like_info(4, 4, 1))
    for first, second in ((plain, like_info(4, 4, 1)), (like_info(4, 4, 1), plain)):
        assert "has no coordinate reference system" in _grid_error(first, second)


def test_the_same_crs_in_other_words_is_the_same():
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32651)
    a = like_info(4, 4, 1)
    b = like_info(4, 4, 1)
    b.crs_wkt = srs.ExportToWkt(["FORMAT=WKT2_2018"])
    assert a.crs_wkt != b.crs_wkt
    check_same_grid(a, b)
    check_same_grid(b, a)


def test_grid_tolerances():
    """Pixel sizes within 1e-6 (relative), rotation terms within 1e-9 of a pixel, origins within 1 % of a pixel."""

    def gt(x0=500000.0, px=100.0, r1=0.0, y0=3600000.0, r2=0.0, py=-100.0):
        return like_info(4, 4, 1, gt=(x0, px, r1, y0, r2, py))

    a = gt()
    for ok in (gt(px=100.00001), gt(py=-100.00001), gt(r1=1e-8), gt(r2=-1e-8), gt(x0=500001.0), gt(y0=3599999.0)):
        check_same_grid(a, ok)
        check_same_grid(ok, a)
    for bad in (gt(px=100.001), gt(py=-100.001), gt(r1=1e-6), gt(r2=1e-6)):
        assert "different pixel sizes" in _grid_error(a, bad)
    for bad in (gt(x0=500001.01), gt(y0=3600001.01), gt(x0=500050.0), gt(y0=3599950.0)):
        assert "are not on the same grid" in _grid_error(a, bad)
    # degrees: 1 % of a 0.0001 degree pixel is 1e-6 degrees
    deg = like_info(4, 4, 1, gt=(120.0, 0.0001, 0.0, 30.0, 0.0, -0.0001), epsg=4326)
    check_same_grid(deg, like_info(4, 4, 1, gt=(120.0000005, 0.0001, 0.0, 30.0, 0.0, -0.0001), epsg=4326))
    off = like_info(4, 4, 1, gt=(120.00005, 0.0001, 0.0, 30.0, 0.0, -0.0001), epsg=4326)
    assert "are not on the same grid" in _grid_error(deg, off)


def test_check_same_grid_2d_any_band_counts():
    a = like_info(10, 12, 5)
    check_same_grid_2d(a, like_info(10, 12, 1), ("The change map", "the reference"))
    check_same_grid_2d(a, like_info(10, 12, 1, epsg=0), ("The change map", "the reference"))  # one without a CRS
    with pytest.raises(InputError) as e:
        check_same_grid_2d(a, like_info(10, 12, 1, epsg=32650), ("The change map", "the reference"))
    assert _message(e) == (
        "The change map (like.tif) and the reference (like.tif) have different coordinate reference systems. "
        "Reproject the reference onto The change map's grid with gdalwarp or Processing 'Align rasters'."
    )
    with pytest.raises(InputError) as e:
        check_same_grid_2d(a, like_info(10, 12, 1, gt=(500015.0, 30.0, 0.0, 3600000.0, 0.0, -30.0)), ("A", "B"))
    assert _message(e) == (
        "A (like.tif) and B (like.tif) are not on the same grid: their origins differ by (15, 0) map units. "
        "Warp B (like.tif) onto A (like.tif)'s grid with gdalwarp or Processing 'Align rasters'."
    )
    with pytest.raises(InputError, match=r"^A \(like.tif\) and B \(like.tif\) have different pixel sizes"):
        check_same_grid_2d(a, like_info(10, 12, 1, gt=(500000.0, 20.0, 0.0, 3600000.0, 0.0, -20.0)), ("A", "B"))


# ------------------------------------------------------------------------------------ writing, exact


def test_write_rejects_programming_errors_before_writing(tmp_path):
    like = like_info(4, 6, 1)
    out = tmp_path / "x.tif"
    cases = (
        (np.zeros((1, 1, 4, 6)), {}, "write_raster needs a 2-D or 3-D array, got shape (1, 1, 4, 6)"),
        (np.zeros((5, 4)), {}, "array is 4 x 5 but the grid is 6 x 4"),
        (np.zeros((2, 6, 4)), {}, "array is 4 x 6 but the grid is 6 x 4"),
        (np.zeros((4, 6), np.int8), {}, "unsupported output dtype int8"),
        (np.zeros((4, 6)), {"dtype": "complex64"}, "unsupported output dtype complex64"),
        (
            np.full((4, 6), np.nan, np.float32),
            {"dtype": "uint16"},
            "NaN values cannot be written to an integer raster without a nodata value",
        ),
        # a cast would wrap them silently (300 -> 44 in uint8)
        (np.full((4, 6), 300.0), {"dtype": "uint8"}, "values 300.0..300.0 do not fit the uint8 output (0..255)"),
        (np.arange(-1, 23).reshape(4, 6), {"dtype": "uint16"}, "values -1..22 do not fit the uint16 output (0..65535)"),
        (
            np.full((4, 6), np.nan),
            {"dtype": "uint8", "nodata": 256},
            "values 256.0..256.0 do not fit the uint8 output (0..255)",
        ),
    )
    for array, kwargs, message in cases:
        with pytest.raises(ValueError) as e:
            write_raster(out, array, like, **kwargs)
        assert _message(e) == message
    assert os.listdir(tmp_path) == []


def test_written_types_layout_and_metadata(tmp_path):
    like = like_info(3, 4, 2)
    f32 = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 4
    cases = (
        ("f32.tif", f32, {}, "Float32", "3", f32),
        ("f64.tif", f32.astype(np.float64), {}, "Float64", "3", f32),
        ("u16.tif", f32 * 4, {"dtype": np.uint16}, "UInt16", "2", f32 * 4),
        ("i32.tif", -f32 * 8, {"dtype": "int32"}, "Int32", "2", -f32 * 8),
        ("bool.tif", f32 > 2, {}, "Byte", "2", (f32 > 2).astype(np.uint8)),
        ("round.tif", f32, {"dtype": "uint8"}, "Byte", "2", np.rint(f32)),
    )
    for name, array, kwargs, gdal_type, predictor, stored in cases:
        write_raster(tmp_path / name, array, like, **kwargs)
        ds = gdal.Open(str(tmp_path / name))
        assert gdal.GetDataTypeName(ds.GetRasterBand(1).DataType) == gdal_type, name
        structure = ds.GetMetadata("IMAGE_STRUCTURE")
        assert structure == {"COMPRESSION": "DEFLATE", "INTERLEAVE": "BAND", "PREDICTOR": predictor}, name
        assert ds.GetRasterBand(1).GetBlockSize() == [256, 256]
        np.testing.assert_array_equal(ds.ReadAsArray(), stored)
        assert ds.GetGeoTransform() == GT and ds.GetProjection() == like.crs_wkt
        assert ds.GetMetadata() == {"AREA_OR_POINT": "Area"} and ds.GetRasterBand(2).GetNoDataValue() is None
        assert ds.GetRasterBand(1).GetDescription() == "" and ds.GetRasterBand(2).GetMetadata() == {}
        ds = None
    # one row of two bands is band-interleaved too; one band has no interleaving to choose
    write_raster(tmp_path / "row.tif", np.ones((2, 1, 5), np.float32), like_info(1, 5, 2))
    ds = gdal.Open(str(tmp_path / "row.tif"))
    assert ds.GetMetadataItem("INTERLEAVE", "IMAGE_STRUCTURE") == "BAND"
    ds = None
    # without a CRS the file has none
    write_raster(tmp_path / "nocrs.tif", np.ones((3, 4), np.float32), like_info(3, 4, 1, epsg=0))
    ds = gdal.Open(str(tmp_path / "nocrs.tif"))
    assert ds.GetProjection() == "" and ds.GetGeoTransform() == GT
    ds = None


def test_written_band_names_wavelengths_and_metadata(tmp_path):
    out = tmp_path / "meta.tif"
    write_raster(
        out,
        np.ones((2, 3, 4), np.float32),
        like_info(3, 4, 2),
        nodata=-9999,
        band_names=["red", 7],
        metadata={"method": "cva", "epochs": 3},
        wavelengths_nm=[482.5, 1650],
    )
    ds = gdal.Open(str(out))
    assert ds.GetMetadata() == {"AREA_OR_POINT": "Area", "method": "cva", "epochs": "3"}
    for i, (name, nm, um) in enumerate((("red", "482.5000", "0.482500"), ("7", "1650.0000", "1.650000"))):
        band = ds.GetRasterBand(i + 1)
        assert band.GetDescription() == name and band.GetNoDataValue() == -9999.0
        assert band.GetMetadata() == {"wavelength": nm, "wavelength_units": "nm"}
        assert band.GetMetadata("IMAGERY") == {"CENTRAL_WAVELENGTH_UM": um}
        band = None
    ds = None


def test_a_stale_statistics_file_of_the_old_output_is_removed(tmp_path):
    out = tmp_path / "c.tif"
    out.write_bytes(b"old")
    (tmp_path / "c.tif.aux.xml").write_text(
        "<PAMDataset><Metadata><MDI key='STATISTICS_MAXIMUM'>9</MDI></Metadata></PAMDataset>"
    )
    (tmp_path / "other.tif.aux.xml").write_text("<PAMDataset/>")
    write_raster(out, np.ones((3, 4), np.float32), like_info(3, 4))
    assert sorted(os.listdir(tmp_path)) == ["c.tif", "other.tif.aux.xml"]


def test_output_paths_are_checked_with_their_message(tmp_path):
    with pytest.raises(InputError) as e:
        write_raster(tmp_path, np.zeros((4, 4)), like_info(4, 4))
    assert _message(e) == f"The output {tmp_path} is a folder. Give a file name such as {tmp_path / 'change.tif'}."


def _write_with_file_size_limit(limit: int, fn):
    """Run ``fn`` while the process may write files of at most ``limit`` bytes (a full disk for GDAL)."""
    import resource
    import signal

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        return fn()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)


@pytest.mark.parametrize("exceptions", [False, True])
def test_a_full_disk_keeps_the_old_file(tmp_path, exceptions):
    out = tmp_path / "big.tif"
    out.write_bytes(b"old contents")
    arr = np.random.default_rng(0).normal(size=(2, 300, 300)).astype(np.float32)
    was_on = gdal.GetUseExceptions()
    if exceptions:
        gdal.UseExceptions()
    try:
        with pytest.raises(InputError) as e:
            _write_with_file_size_limit(20000, lambda: write_raster(out, arr, like_info(300, 300, 2)))
    finally:
        if exceptions and not was_on:
            gdal.DontUseExceptions()
    step = "" if exceptions else "flush: "  # with exceptions on, GDAL's own message (libtiff's) is all
    assert re.fullmatch(
        f"Writing {re.escape(str(out))} failed \\(GDAL {step}TIFF\\w+:[^()]+\\); the previous file, if any, is "
        "unchanged. Check the free disk space.",
        _message(e),
    ), _message(e)
    assert out.read_bytes() == b"old contents" and os.listdir(tmp_path) == ["big.tif"]


@pytest.mark.parametrize("exceptions", [False, True])
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # GDAL's close, exceptions on
def test_a_full_disk_while_a_band_is_written(tmp_path, exceptions):
    """With a block cache smaller than a band, GDAL writes blocks while the band is written: the error names it."""
    from hypernet_qgis.core.io.raster_io import gdal_cache

    out = tmp_path / "big.tif"
    arr = np.random.default_rng(0).normal(size=(2, 1024, 1024)).astype(np.float32)
    was_on = gdal.GetUseExceptions()
    if exceptions:
        gdal.UseExceptions()
    try:
        with gdal_cache(1), pytest.raises(InputError) as e:
            _write_with_file_size_limit(200000, lambda: write_raster(out, arr, like_info(1024, 1024, 2)))
    finally:
        if exceptions and not was_on:
            gdal.DontUseExceptions()
    assert re.fullmatch(
        f"Writing {re.escape(str(out))} failed \\(GDAL band 1: TIFF\\w+:[^()]+\\); the previous file, if any, is "
        "unchanged. Check the free disk space.",
        _message(e),
    ), _message(e)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("exceptions", [False, True])
def test_a_temporary_file_gdal_cannot_create(tmp_path, exceptions):
    """A name that fits the folder, whose longer temporary name does not: GDAL's create fails, nothing changes."""
    out = tmp_path / ("x" * 240 + ".tif")
    was_on = gdal.GetUseExceptions()
    if exceptions:
        gdal.UseExceptions()
    try:
        with pytest.raises(InputError) as e:
            write_raster(out, np.ones((3, 4), np.float32), like_info(3, 4))
    finally:
        if exceptions and not was_on:
            gdal.DontUseExceptions()
    msg = _message(e)
    assert msg.startswith(f"Writing {out} failed (GDAL create: Attempt to create new tiff file `{tmp_path}/.xxx")
    assert msg.endswith(
        "' failed: File name too long); the previous file, if any, is unchanged. Check the free disk space."
    )
    assert ".part.tif' failed" in msg and os.listdir(tmp_path) == []


def test_a_killed_write_leaves_a_temporary_file_the_next_write_removes(tmp_path):
    """A process killed in the middle of a write (here by its file-size limit) leaves only its temporary file,
    named so that the next write of that output removes it."""
    import resource
    import signal

    out = tmp_path / "c.tif"
    out.write_bytes(b"old")
    arr = np.random.default_rng(0).normal(size=(2, 300, 300)).astype(np.float32)
    pid = os.fork()
    if pid == 0:  # the child: killed by SIGXFSZ at its first write past 20 kB
        try:
            signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
            resource.setrlimit(resource.RLIMIT_FSIZE, (20000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
            write_raster(out, arr, like_info(300, 300, 2))
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGXFSZ
    left = sorted(os.listdir(tmp_path))
    assert len(left) == 2 and left[1] == "c.tif" and out.read_bytes() == b"old"
    assert left[0].startswith(f".c.tif.{pid}-") and left[0].endswith(".part.tif")
    write_raster(out, arr, like_info(300, 300, 2))
    assert os.listdir(tmp_path) == ["c.tif"]
    np.testing.assert_array_equal(read_raster(out)[0], arr)


def test_block_row_mb(tmp_path):
    path = str(tmp_path / "t.tif")
    ds = gdal.GetDriverByName("GTiff").Create(
        path, 1000, 200, 3, gdal.GDT_Int16, ["TILED=YES", "BLOCKXSIZE=32", "BLOCKYSIZE=64"]
    )
    del ds  # closes the file
    assert block_row_mb(path) == 64 * 1000 * 3 * 2 / 2**20
    vrt = tmp_path / "mixed.vrt"  # band 1 decides the value size
    vrt.write_text(
        '<VRTDataset rasterXSize="1000" rasterYSize="300"><VRTRasterBand dataType="Int16" band="1"/>'
        '<VRTRasterBand dataType="Float64" band="2"/></VRTDataset>'
    )
    assert block_row_mb(str(vrt)) == 128 * 1000 * 2 * 2 / 2**20
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    assert block_row_mb(str(text)) == 0.0


# -------------------------------------------------------------------------------------- info, exact


def test_info_of_a_plain_file_and_of_an_envi_pair(tmp_path):
    path = str(tmp_path / "plain.tif")
    ds = gdal.GetDriverByName("GTiff").Create(path, 5, 3, 2, gdal.GDT_UInt16)
    ds.GetRasterBand(2).SetDescription("nir")
    del ds
    info = raster_info(path)
    assert info == RasterInfo(
        path=path,
        rows=3,
        cols=5,
        bands=2,
        geotransform=(0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
        crs_wkt="",
        nodata=[None, None],
        wavelengths_nm=None,
        band_names=["band 1", "nir"],
        dtype="UInt16",
        driver="GTiff",
        files=[path],
    )
    assert not info.has_georeference and info.name == "plain.tif"
    (tmp_path / "scene.img").write_bytes(np.zeros((2, 3, 4), np.uint8).tobytes())
    (tmp_path / "scene.hdr").write_text(
        "ENVI\nsamples = 4\nlines = 3\nbands = 2\nheader offset = 0\nfile type = ENVI Standard\n"
        "data type = 1\ninterleave = bsq\nbyte order = 0\n"
    )
    envi = raster_info(tmp_path / "scene.hdr")
    assert envi.files == [str(tmp_path / "scene.img"), str(tmp_path / "scene.hdr")] and envi.driver == "ENVI"
    (tmp_path / "lonely.hdr").write_text("ENVI\n")
    with pytest.raises(InputError) as e:
        resolve_raster_path(tmp_path / "lonely.hdr")
    assert _message(e) == (
        "lonely.hdr is an ENVI header but no data file was found next to it (looked for lonely, lonely.img, .dat, "
        ".bsq, .bil, .bip, .raw). Put the data file beside the header, or pass the data file itself."
    )


def test_no_bands_and_complex_bands_are_refused(tmp_path):
    gpkg = str(tmp_path / "two.gpkg")  # two raster tables: subdatasets, no bands of its own
    src = gdal.GetDriverByName("MEM").Create("", 4, 4, 1, gdal.GDT_Byte)
    src.SetGeoTransform((0.0, 1.0, 0.0, 0.0, 0.0, -1.0))
    gdal.Translate(gpkg, src, format="GPKG", creationOptions=["RASTER_TABLE=a"])
    gdal.Translate(gpkg, src, format="GPKG", creationOptions=["RASTER_TABLE=b", "APPEND_SUBDATASET=YES"])
    with pytest.raises(InputError) as e:
        raster_info(gpkg)
    assert _message(e) == (
        "two.gpkg has no raster bands (it may be a vector file or a container of subdatasets). Choose a raster "
        "with image bands."
    )
    for name, types, band, type_name in (
        ("c1.vrt", ("CFloat32", "Float32"), 1, "CFloat32"),
        ("c2.vrt", ("Float32", "CInt16"), 2, "CInt16"),
    ):
        vrt = tmp_path / name
        vrt.write_text(
            '<VRTDataset rasterXSize="3" rasterYSize="2">'
            + "".join(f'<VRTRasterBand dataType="{t}" band="{i + 1}"/>' for i, t in enumerate(types))
            + "</VRTDataset>"
        )
        with pytest.raises(InputError) as e:
            raster_info(vrt)
        assert _message(e) == (
            f"{name} has complex-valued bands (band {band}: {type_name}); change detection needs real values. "
            "Convert it first, e.g. to the magnitude with gdal_calc.py --calc='abs(A)'."
        )


def test_envi_header_wavelengths_as_other_software_writes_them(tmp_path):
    """GDAL's ENVI driver passes the header on (per band and in the ENVI domain); braces around the unit, other
    spellings of the keys, lists without braces or commas all give the same wavelengths; a unit that is no length
    gives none (it used to crash when braced)."""
    head = (
        "ENVI\nsamples = 2\nlines = 2\nbands = 3\nheader offset = 0\nfile type = ENVI Standard\ndata type = 1\n"
        "interleave = bsq\nbyte order = 0\n"
    )
    cases = {
        "braced": ("wavelength units = {Micrometers}\nwavelength = {0.5, 0.6, 0.7}\n", [500.0, 600.0, 700.0]),
        "upper": ("WAVELENGTH = {0.5, 0.6, 0.7}\nWAVELENGTH UNITS = Micrometers\n", [500.0, 600.0, 700.0]),
        "plain": ("wavelength = 0.5, 0.6, 0.7\n", [500.0, 600.0, 700.0]),
        "spaces": ("wavelength = {500 600 700}\nwavelength units = nm\n", [500.0, 600.0, 700.0]),
        "nonlength": ("wavelength = {2000, 2100, 2200}\nwavelength units = {Wavenumber}\n", None),
    }
    for name, (lines, expected) in cases.items():
        (tmp_path / name).write_bytes(np.zeros(12, np.uint8).tobytes())
        (tmp_path / f"{name}.hdr").write_text(head + lines)
        got = raster_info(tmp_path / name).wavelengths_nm
        assert got == (None if expected is None else pytest.approx(expected)), name


@pytest.mark.parametrize(
    "case",
    ["int16, nodata in two of three bands", "float32 with NaN", "dataset mask", "ENVI BSQ, read by bands (mask too)"],
)
def test_open_windows_pixel_read_follows_the_band_read_rules(case, tmp_path):
    """The windowed (pixel-interleaved) read finds the same invalid pixels as read_window band by band: a band's
    nodata (only in the bands that have one), NaN and infinity, a per-dataset mask band; the values are equal."""
    rng = np.random.default_rng(3)
    gdt = gdal.GDT_Int16 if case.startswith("int16") else gdal.GDT_Float32
    data = rng.integers(0, 50, (3, 24, 40)).astype(np.int16 if gdt == gdal.GDT_Int16 else np.float32)
    if case.startswith("int16"):  # (Erdas Imagine: a nodata value a band; a GeoTIFF's is the file's)
        path = str(tmp_path / "x.img")
        ds = gdal.GetDriverByName("HFA").Create(path, 40, 24, 3, gdt)
    elif case.startswith("ENVI"):
        path = str(tmp_path / "x.bsq")
        ds = gdal.GetDriverByName("ENVI").Create(path, 40, 24, 3, gdt, ["INTERLEAVE=BSQ"])
        data[2, 7, 8] = -7
    else:
        path = str(tmp_path / "x.tif")
        ds = gdal.GetDriverByName("GTiff").Create(path, 40, 24, 3, gdt, ["INTERLEAVE=PIXEL", "TILED=YES"])
    if case.startswith("int16"):
        data[0, 2, 3] = data[2, 7, 8] = -7  # nodata of bands 1 and 3
        data[1, 9, 9] = -7  # band 2 has no nodata: a value like any other
    elif case.startswith("float32"):
        data[1, 4, 5], data[2, 6, 7] = np.nan, np.inf
    else:
        ds.CreateMaskBand(gdal.GMF_PER_DATASET)
        mask = np.full((24, 40), 255, np.uint8)
        mask[10:12, 20:30] = 0
        ds.GetRasterBand(1).GetMaskBand().WriteArray(mask)
    for b in range(3):
        ds.GetRasterBand(b + 1).WriteArray(data[b])
        if (case.startswith("int16") and b != 1) or case.startswith("ENVI"):
            ds.GetRasterBand(b + 1).SetNoDataValue(-7)
    del ds
    with open_windows(path) as windows:
        assert (~windows.read(0, 24, 0, 40)[1]).sum() == {"int": 2, "flo": 2, "dat": 20, "ENV": 21}[case[:3]]
        for window in ((0, 24, 0, 40), (1, 20, 3, 30)):
            x, valid = windows.read(*window)
            xw, vw = read_window(path, None, *window)
            np.testing.assert_array_equal(valid, vw)
            np.testing.assert_array_equal(x, np.moveaxis(xw, 0, -1))
            assert x.dtype == np.float32 and x.flags.c_contiguous


def test_open_windows_reads_as_read_window_and_reports_the_block(tmp_path):
    data = np.arange(3 * 40 * 70, dtype=np.float32).reshape(3, 40, 70)
    data[2, 5, 6] = -1
    tiled = str(tmp_path / "tiled.tif")
    ds = gdal.GetDriverByName("GTiff").Create(
        tiled, 70, 40, 3, gdal.GDT_Float32, ["TILED=YES", "BLOCKXSIZE=32", "BLOCKYSIZE=16"]
    )
    for b in range(3):
        ds.GetRasterBand(b + 1).WriteArray(data[b])
        ds.GetRasterBand(b + 1).SetNoDataValue(-1)
    del ds
    with open_windows(tiled, [3, 1]) as windows:
        assert windows.block == (16, 32) and windows.band_list == [3, 1]
        assert windows.info == raster_info(tiled)
        for window in ((0, 16, 0, 32), (4, 20, 3, 60), (39, 1, 69, 1)):
            x, valid = windows.read(*window)
            xw, vw = read_window(tiled, [3, 1], *window)
            np.testing.assert_array_equal(x, np.moveaxis(xw, 0, -1))  # (pixel-interleaved)
            np.testing.assert_array_equal(valid, vw)
        assert not windows.read(0, 16, 0, 32)[1][5, 6]
    with open_windows(tiled) as windows:
        assert windows.band_list == [1, 2, 3]
    striped = str(tmp_path / "striped.tif")  # one row a strip: blocks of 1 x 70
    ds = gdal.GetDriverByName("GTiff").Create(striped, 70, 40, 1, gdal.GDT_Float32, ["BLOCKYSIZE=1"])
    del ds
    with open_windows(striped) as windows:
        assert windows.block == (1, 70)
    column = str(tmp_path / "column.tif")  # one column: blocks one pixel wide
    ds = gdal.GetDriverByName("GTiff").Create(column, 1, 40, 1, gdal.GDT_Float32, ["BLOCKYSIZE=8"])
    del ds
    with open_windows(column) as windows:
        assert windows.block == (8, 1)
    with pytest.raises(InputError, match="BANDS asks for band 4 but tiled.tif has 3 bands"):
        with open_windows(tiled, [4]):
            pass
