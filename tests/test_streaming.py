"""core/io/streaming.py on real GeoTIFFs (georeferenced, with nodata): the windowed read gives the in-memory pair's
valid mask, statistics and z-scores whatever the files' blocks, the band list or the budget; progress,
cancellation and the refusals; the scratch files and WindowReader's edges. Fast: `make mutmut` runs these."""

from __future__ import annotations

import errno
import os
import resource
import shutil
import signal
import warnings

import numpy as np
import pytest
from osgeo import gdal, osr

from hypernet_qgis.core import memory
from hypernet_qgis.core.errors import Cancelled, InputError
from hypernet_qgis.core.io import raster_io, streaming
from hypernet_qgis.core.io.streaming import WindowReader, load_pair_streamed
from hypernet_qgis.core.pair import load_pair

ROWS, COLS, BANDS = 64, 96, 5
NODATA = -9999.0


class Recorder:
    """A Feedback that records progress and cancels once ``cancel_after`` progress reports were made."""

    def __init__(self, cancel_after: int | None = None):
        self.progress: list[float] = []
        self.cancel_after = cancel_after

    def info(self, message):
        pass

    def set_progress(self, fraction):
        self.progress.append(fraction)

    def is_cancelled(self):
        return self.cancel_after is not None and len(self.progress) >= self.cancel_after


def write_tif(path, x: np.ndarray, options: list[str]) -> str:
    """Float32 GeoTIFF (UTM 33N, 30 m), nodata -9999 in every band."""
    ds = gdal.GetDriverByName("GTiff").Create(str(path), x.shape[2], x.shape[1], x.shape[0], gdal.GDT_Float32, options)
    ds.SetGeoTransform((500000.0, 30.0, 0.0, 4600000.0, 0.0, -30.0))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    ds.SetProjection(srs.ExportToWkt())
    for b in range(x.shape[0]):
        band = ds.GetRasterBand(b + 1)
        band.SetNoDataValue(NODATA)
        band.WriteArray(x[b])
    ds = None
    return str(path)


STRIPED_16 = ["BLOCKYSIZE=16"]  # blocks of 16 rows x 96 columns
TILED_32x16 = ["TILED=YES", "BLOCKYSIZE=32", "BLOCKXSIZE=16"]


def dates(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two dates of 5 bands: band 2 constant 0 in both, band 4 of T1 nearly constant (1000 +- 1e-4), nodata in a
    block of T1 and in another of T2, and one band's nodata in T2."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(500, 80, (BANDS, ROWS, COLS)).astype(np.float32)
    x2 = (1.1 * x1 + 20 + rng.normal(0, 10, x1.shape)).astype(np.float32)
    x2[:, 20:30, 40:60] += 300.0
    x1[1] = x2[1] = 0.0
    x1[3] = np.float32(1000.0) + np.where(rng.random((ROWS, COLS)) < 0.5, np.float32(0.0), np.float32(1e-4))
    x1[:, 5:9, 10:30] = NODATA
    x2[:, 50:60, 70:90] = NODATA
    x2[2, 40, 3] = NODATA
    return x1, x2


@pytest.fixture
def pair_files(tmp_path):
    x1, x2 = dates()
    return write_tif(tmp_path / "t1.tif", x1, STRIPED_16), write_tif(tmp_path / "t2.tif", x2, TILED_32x16)


def assert_same_as_in_memory(pair, ref, bands):
    np.testing.assert_array_equal(pair.valid, ref.valid)
    assert pair.bands == bands
    for d in ("t1", "t2"):
        got, want = pair.scaling[d], ref.scaling[d]
        assert sorted(got) == sorted(want) == ["constant_bands", "mean", "method", "n_valid", "std"]
        assert got["method"] == "zscore" and got["constant_bands"] == want["constant_bands"]
        assert got["n_valid"] == want["n_valid"] == int(ref.valid.sum())
        np.testing.assert_allclose(got["mean"], want["mean"], rtol=1e-12, atol=0)
        np.testing.assert_allclose(got["std"], want["std"], rtol=1e-9, atol=0)  # 1e-12 but the nearly constant band
    for got, want in ((pair.x1s, ref.x1s), (pair.x2s, ref.x2s)):
        assert got.shape == want.shape and len(got) == want.shape[0]
        np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-6)
        assert (np.asarray(got)[:, ~ref.valid] == 0).all()
    # the CVA of the stored z-scores (float32 difference, float64 sum), NaN off the valid pixels
    z1, z2 = np.asarray(pair.x1s), np.asarray(pair.x2s)
    d = z2 - z1
    expected = np.sqrt(np.einsum("kij,kij->ij", d, d, dtype=np.float64)).astype(np.float32)
    assert pair.cva.dtype == np.float32
    np.testing.assert_array_equal(pair.cva[ref.valid], expected[ref.valid])
    assert np.isnan(pair.cva[~ref.valid]).all()


@pytest.mark.parametrize("swap", [False, True])
def test_windows_follow_both_files_blocks_and_give_the_in_memory_pair(tmp_path, swap):
    """T1 striped by 16 rows, T2 tiled 32x16 (and the other way round): the windows follow the larger block in
    each direction (32 rows x 96 columns: 2 windows), a budget under a row reads the scratch files row by row (64
    strips), and a band list gives the in-memory pair's values for those bands."""
    x1, x2 = dates()
    opts = (TILED_32x16, STRIPED_16) if swap else (STRIPED_16, TILED_32x16)
    t1 = write_tif(tmp_path / "t1.tif", x1, opts[0])
    t2 = write_tif(tmp_path / "t2.tif", x2, opts[1])
    log = Recorder()
    with load_pair_streamed(t1, t2, bands=[1, 3, 4], feedback=log, strip_values=1) as pair:
        assert log.progress == [(i + 1) / 66 for i in range(66)]
        assert_same_as_in_memory(pair, load_pair(t1, t2, bands=[1, 3, 4]), [1, 3, 4])
        assert pair.scaling["t1"]["constant_bands"] == [3]  # T1's band 4, the third read
        assert (np.asarray(pair.x1s)[2] == 0).all()


def test_budget_sets_the_strips_and_all_bands_are_read(pair_files, tmp_path):
    """0.5 MB: 4096 values a window and date, under one 32-row block row of 5 bands (15360): two windows of a
    block row each; strips of 8 rows (3840 values): 8 of them."""
    scratch_dir = tmp_path / "scratch"
    scratch_dir.mkdir()
    log = Recorder()
    pair = load_pair_streamed(*pair_files, scratch_dir=str(scratch_dir), feedback=log, memory_budget_mb=0.5)
    try:
        assert memory.strip_values(0.5, BANDS, COLS) == 4096
        assert log.progress == [(i + 1) / 10 for i in range(10)]
        assert_same_as_in_memory(pair, load_pair(*pair_files), None)
        assert pair.scaling["t1"]["constant_bands"] == [2, 4] and pair.scaling["t2"]["constant_bands"] == [2]
        assert os.path.dirname(pair.scratch) == str(scratch_dir)
        assert os.path.basename(pair.scratch).startswith("hypernet-scratch-")
        assert sorted(os.listdir(pair.scratch)) == ["t1.f32", "t2.f32"]
        assert pair.x1s.path == os.path.join(pair.scratch, "t1.f32") and pair.x1s.shape == (BANDS, ROWS, COLS)
        assert 0.0 < pair.seconds < 120.0
    finally:
        pair.close()
    assert os.listdir(scratch_dir) == []
    pair.close()  # a second close does nothing


def test_partial_windows_of_as_many_bands_as_columns(tmp_path):
    """32 bands, 32 columns, tiles of 16x16 and a budget of one tile: windows half a row wide, each written row by
    row into the scratch file (a window's band count equal to the file's width must not pass for a whole row)."""
    rng = np.random.default_rng(4)
    x1 = rng.normal(0, 1, (32, 32, 32)).astype(np.float32)
    x2 = (x1 + rng.normal(0, 0.5, x1.shape)).astype(np.float32)
    x1[:, 3, 20:25] = NODATA
    tiles = ["TILED=YES", "BLOCKYSIZE=16", "BLOCKXSIZE=16"]
    t1, t2 = write_tif(tmp_path / "t1.tif", x1, tiles), write_tif(tmp_path / "t2.tif", x2, tiles)
    log = Recorder()
    with load_pair_streamed(t1, t2, feedback=log, strip_values=16 * 16 * 32) as pair:
        assert len(log.progress) == 4 + 4  # 2x2 windows of a tile, then strips of 8 rows
        assert_same_as_in_memory(pair, load_pair(t1, t2), None)


def test_a_window_without_valid_pixels_adds_nothing_to_the_moments(tmp_path):
    """T1's first block row (rows 0-31, the first window) is all nodata: the statistics are those of rows 32-63."""
    x1, x2 = dates(1)
    x1[:, :32] = NODATA
    t1 = write_tif(tmp_path / "t1.tif", x1, STRIPED_16)
    t2 = write_tif(tmp_path / "t2.tif", x2, TILED_32x16)
    with load_pair_streamed(t1, t2, strip_values=1) as pair:
        assert not pair.valid[:32].any()
        assert_same_as_in_memory(pair, load_pair(t1, t2), None)


def test_refusals_leave_no_scratch_files(tmp_path):
    scratch_dir = tmp_path / "scratch"
    scratch_dir.mkdir()
    x1, x2 = dates()
    x1[:, 32:] = NODATA
    x2[:, :32] = NODATA
    t1, t2 = write_tif(tmp_path / "a1.tif", x1, STRIPED_16), write_tif(tmp_path / "a2.tif", x2, STRIPED_16)
    with pytest.raises(InputError) as err:
        load_pair_streamed(t1, t2, scratch_dir=str(scratch_dir), strip_values=1)
    assert str(err.value) == (
        "No pixel is valid in both dates: every pixel is nodata or NaN in T1 or in T2. "
        "Check the layers' nodata values and that the two images overlap."
    )
    assert os.listdir(scratch_dir) == []
    flat1, flat2 = np.full((2, ROWS, COLS), 7.0, np.float32), np.zeros((2, ROWS, COLS), np.float32)
    c1, c2 = write_tif(tmp_path / "c1.tif", flat1, STRIPED_16), write_tif(tmp_path / "c2.tif", flat2, STRIPED_16)
    with pytest.raises(InputError) as err:
        load_pair_streamed(c1, c2, scratch_dir=str(scratch_dir), strip_values=1)
    assert str(err.value) == "Every band is constant over the valid pixels of both dates; there is nothing to compare."
    assert os.listdir(scratch_dir) == []
    # one date constant, the other not: compared (the constant date's z-scores are 0)
    x2, _ = dates()
    v2 = write_tif(tmp_path / "v2.tif", x2[:2], STRIPED_16)
    with load_pair_streamed(c1, v2, strip_values=1) as pair:
        assert pair.scaling["t1"]["constant_bands"] == [1, 2] and pair.scaling["t2"]["constant_bands"] == [2]
        assert not np.asarray(pair.x1s).any() and np.asarray(pair.x2s)[0].any()
    with load_pair_streamed(v2, c1, strip_values=1) as pair:  # and the other way round
        assert pair.scaling["t1"]["constant_bands"] == [2] and pair.scaling["t2"]["constant_bands"] == [1, 2]


@pytest.mark.parametrize("cancel_after, progress", [(0, 0), (2, 2), (3, 3)])
def test_cancelling_stops_either_pass_and_removes_the_scratch_files(pair_files, tmp_path, cancel_after, progress):
    """Cancelled before the first window, after pass 1 (2 windows), and in pass 2 (after one strip)."""
    scratch_dir = tmp_path / "scratch"
    scratch_dir.mkdir()
    log = Recorder(cancel_after)
    with pytest.raises(Cancelled, match="^Cancelled by the user; no output was written.$"):
        load_pair_streamed(*pair_files, scratch_dir=str(scratch_dir), feedback=log, strip_values=1)
    assert len(log.progress) == progress
    assert os.listdir(scratch_dir) == []


def test_a_scratch_folder_removed_meanwhile_does_not_hide_the_error(pair_files, tmp_path):
    """A temp cleaner removes the scratch folder while the read runs; the user cancels: Cancelled comes through
    (not the clean-up's FileNotFoundError)."""
    scratch_dir = tmp_path / "scratch"
    scratch_dir.mkdir()

    class Cleaner(Recorder):
        def is_cancelled(self):
            for entry in os.listdir(scratch_dir):
                shutil.rmtree(scratch_dir / entry)
            return len(self.progress) >= 1

    with pytest.raises(Cancelled):
        load_pair_streamed(*pair_files, scratch_dir=str(scratch_dir), feedback=Cleaner(), strip_values=1)
    assert os.listdir(scratch_dir) == []


@pytest.mark.parametrize("which", [0, 1])
def test_an_unreadable_tile_of_either_date_is_reported_from_its_thread(tmp_path, which):
    """The dates are read in two threads: a corrupt tile of either one stops the read with raster_io's message
    (GDAL's reason captured in that thread), and the scratch files go."""
    scratch_dir = tmp_path / "scratch"
    scratch_dir.mkdir()
    x1, x2 = dates()
    paths = [
        write_tif(tmp_path / f"d{k}.tif", x, TILED_32x16 + ["COMPRESS=DEFLATE", "INTERLEAVE=BAND"])
        for k, x in enumerate((x1, x2))
    ]
    ds = gdal.Open(paths[which])
    band = ds.GetRasterBand(3)
    offset, size = (int(band.GetMetadataItem(f"BLOCK_{k}_1_1", "TIFF")) for k in ("OFFSET", "SIZE"))
    band = ds = None
    with open(paths[which], "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\xff" * size)
    with pytest.raises(InputError) as err:
        load_pair_streamed(*paths, scratch_dir=str(scratch_dir), strip_values=1)
    assert str(err.value).startswith(f"Band 3 of d{which}.tif could not be read (GDAL: ")
    assert "TIFFReadEncodedTile" in str(err.value)
    assert os.listdir(scratch_dir) == []


def test_whole_pair_mb_counts_the_bands_read(pair_files):
    info = raster_io.raster_info(pair_files[0])
    assert streaming.whole_pair_mb(info) == memory.whole_pair_mb(5, ROWS, COLS) == 4 * 5 * 64 * 96 * 4 / 2**20
    assert streaming.whole_pair_mb(info, [2, 5]) == 4 * 2 * 64 * 96 * 4 / 2**20


def test_strips_are_whole_rows_of_at_most_the_values_asked():
    assert streaming._strips(5, 4, 3, 1) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    assert streaming._strips(5, 4, 3, 24) == [(0, 2), (2, 4), (4, 5)]
    assert streaming._strips(5, 1, 1, 3) == [(0, 3), (3, 5)]
    assert streaming._strips(4, 2, 2, 100) == [(0, 4)]


def test_standardising_by_chunks_gives_the_same_bits(monkeypatch):
    rng = np.random.default_rng(2)
    z = rng.normal(3, 2, (6, 7, 5)).astype(np.float32)
    valid = rng.random((6, 7)) > 0.2
    stats = {"mean": [3.0, 1.0, -2.0, 0.5, 7.0], "std": [2.0, 0.0, 4.0, 1.5, 0.25], "constant_bands": [2, 4]}
    expected = (
        (z.astype(np.float64) - stats["mean"]) / np.where(np.array(stats["std"]) > 0, stats["std"], 1.0)
    ).astype(np.float32)
    expected[:, :, [1, 3]] = 0.0
    expected[~valid] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division by a zero std (band 2): no RuntimeWarning
        whole = streaming._standardise_in_place(z.copy(), valid, stats)
    np.testing.assert_array_equal(whole, expected)
    monkeypatch.setattr(streaming, "STANDARDISE_CHUNK_VALUES", 12)  # 2 pixels of 5 bands a chunk
    np.testing.assert_array_equal(streaming._standardise_in_place(z.copy(), valid, stats), expected)


def test_a_truncated_scratch_file_is_a_short_read(tmp_path):
    path = tmp_path / "x.f32"
    x = np.arange(5 * 4 * 3, dtype=np.float32).reshape(5, 4, 3)
    path.write_bytes(x.tobytes()[: -4 * 5])  # the last row lacks 5 values
    fd = os.open(path, os.O_RDONLY)
    try:
        np.testing.assert_array_equal(streaming._read_rows(fd, 1, 4, 4, 3), x[1:4])
        with pytest.raises(OSError, match=r"^short read from a scratch file \(row 4\)$"):
            streaming._read_rows(fd, 3, 5, 4, 3)
    finally:
        os.close(fd)


def test_a_write_cut_short_is_continued_then_reports_the_error(tmp_path):
    """The file-size limit (as a full disk) lets a write through in part: the rest is retried where the first
    part ended, and the second attempt's error (EFBIG) comes through."""
    path = tmp_path / "x.f32"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096 + 100, hard))
    try:
        with pytest.raises(OSError) as err:
            streaming.pwrite_all(fd, memoryview(bytes(range(200))), 4096 - 50)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
        os.close(fd)
    assert err.value.errno == errno.EFBIG
    assert path.read_bytes()[4096 - 50 :] == bytes(range(150))


def test_window_reader_edges(tmp_path):
    x = np.arange(3 * 7 * 5, dtype=np.float32).reshape(3, 7, 5)
    path = tmp_path / "x.f32"
    path.write_bytes(np.ascontiguousarray(x.transpose(1, 2, 0)).tobytes())
    r = WindowReader(str(path), (3, 7, 5))
    assert len(r) == 3 and r.dtype == np.float32
    np.testing.assert_array_equal(r[1:3], x[1:3])
    np.testing.assert_array_equal(r[:, 2:4], x[:, 2:4])
    np.testing.assert_array_equal(r[0:3:1, 1:7:1, 2:5:1], x[:, 1:, 2:])
    np.testing.assert_array_equal(r[:, -3:, -2:], x[:, -3:, -2:])
    assert r[:, 5:3, :].shape == (3, 0, 5)
    a = np.asarray(r, dtype=np.float64)
    assert a.dtype == np.float64
    np.testing.assert_array_equal(a, x)
    message = r"^WindowReader supports x\[:, r0:r1, c0:c1\] \(unit-step slices\) only$"
    for key in [(slice(None), slice(0, 7, 2)), 1, (slice(None), 2)]:
        with pytest.raises(TypeError, match=message):
            r[key]
    r.close()
    r.close()  # a second close does nothing
    with pytest.raises(OSError, match=f"^{path} is closed$"):
        r[:, 0:1]
    r = WindowReader(str(path), (3, 7, 5))
    np.testing.assert_array_equal(r.pixels_at(np.array([34, 0, 7])), x.reshape(3, -1)[:, [34, 0, 7]].T)
    assert r.pixels_at(np.array([], dtype=int)).shape == (0, 3)
    for outside in (-1, 35):
        with pytest.raises(IndexError, match=f"^pixel {outside} is outside the 7x5 image$"):
            r.pixels_at(np.array([outside]))
    r.close()
    with pytest.raises(OSError, match=f"^{path} is closed$"):
        r.pixels_at(np.array([0]))
    short = WindowReader(str(path), (3, 8, 5))  # one row more than the file holds
    with pytest.raises(OSError, match=f"^short read from {path} \\(row 7\\)$"):
        short.pixels_at(np.array([36]))
    np.testing.assert_array_equal(short[:, 6:7], x[:, 6:7])
    with pytest.raises(OSError, match=f"^short read from {path} \\(row 7\\)$"):
        short[:, 6:8]
    short.close()
