"""Scale: detection by tiles equals whole-image detection; memory is set by the budget, not by the scene;
training respects the budget; the GPU path (skipped without CUDA)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from hypernet_qgis.core.errors import InputError
from hypernet_qgis.core.hypernet.detection import RxStats, change_intensity, detection_tile, rx_score
from hypernet_qgis.core.hypernet.network import HyperNet
from hypernet_qgis.core.progress import NullFeedback

REPO = Path(__file__).resolve().parents[1]


def _trained_like_model(bands: int, width: int, seed: int = 0) -> HyperNet:
    """A float32 HyperNet in eval mode with non-trivial BatchNorm running statistics."""
    torch.manual_seed(seed)
    model = HyperNet(bands, width)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                if m.affine:
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(3)
    bands, rows, cols = 6, 47, 39
    x1 = rng.normal(size=(bands, rows, cols)).astype(np.float32)
    x2 = (x1 + rng.normal(scale=0.3, size=x1.shape)).astype(np.float32)
    x2[:, 10:21, 5:16] += 2.0  # a changed block
    valid = np.ones((rows, cols), bool)
    valid[:4, :5] = False
    valid[30, 20] = False
    return _trained_like_model(bands, 16), x1, x2, valid


@pytest.mark.parametrize("distance", ["mse", "cosine", "rx"])
@pytest.mark.parametrize("tile", [5, 16, 23, 40])
def test_tiled_detection_equals_whole_image(pair, distance, tile):
    model, x1, x2, valid = pair
    whole = change_intensity(model, x1, x2, valid, distance, "cpu")
    tiled = change_intensity(model, x1, x2, valid, distance, "cpu", tile=tile)
    assert tiled.dtype == np.float32 and tiled.shape == whole.shape
    assert np.array_equal(np.isnan(tiled), ~valid) and np.array_equal(np.isnan(whole), ~valid)
    span = np.nanmax(whole) - np.nanmin(whole)
    assert span > 0
    assert np.nanmax(np.abs(tiled - whole)) <= 1e-4 * span
    # the changed block ranks high: the comparison is not between two constant maps
    assert np.nanmean(whole[10:21, 5:16]) > np.nanmean(whole[30:, 25:])


def test_budget_picks_tiles_and_tiles_still_match(pair):
    model, x1, x2, valid = pair
    dev = torch.device("cpu")
    assert detection_tile(model, 47, 39, 4096, dev) == 47  # fits: one whole-image pass
    small = detection_tile(model, 2000, 2000, 64, dev)
    assert 32 <= small < 2000
    # a budget too small for this image forces the tiled path, with the same result
    whole = change_intensity(model, x1, x2, valid, "mse", "cpu")
    by_budget = change_intensity(model, x1, x2, valid, "mse", "cpu", memory_budget_mb=0.05)
    assert np.nanmax(np.abs(by_budget - whole)) <= 1e-4 * (np.nanmax(whole) - np.nanmin(whole))


def test_memmap_input_is_read_by_windows(pair, tmp_path):
    model, x1, x2, valid = pair
    maps = []
    for name, x in (("a", x1), ("b", x2)):
        m = np.lib.format.open_memmap(tmp_path / f"{name}.npy", mode="w+", dtype=np.float32, shape=x.shape)
        m[:] = x
        m.flush()
        maps.append(np.load(tmp_path / f"{name}.npy", mmap_mode="r"))
    whole = change_intensity(model, x1, x2, valid, "cosine", "cpu")
    got = change_intensity(model, maps[0], maps[1], valid, "cosine", "cpu", tile=16)
    assert np.nanmax(np.abs(got - whole)) <= 1e-4 * (np.nanmax(whole) - np.nanmin(whole))


def test_rx_stats_match_numpy_reference():
    rng = np.random.default_rng(0)
    d = rng.normal(size=(5, 30, 20)) * np.array([1, 2, 3, 4, 5.0])[:, None, None] + 100.0  # offset: cancellation
    v = rng.random((30, 20)) > 0.1
    x = d[:, v]
    c = x - x.mean(1, keepdims=True)
    cov = c @ c.T / (x.shape[1] - 1)
    cov += np.eye(5) * 1e-6 * np.trace(cov) / 5
    expected = np.einsum("ij,ij->j", c, np.linalg.solve(cov, c))
    got = rx_score(d, v)
    np.testing.assert_allclose(got[v], expected, rtol=1e-5)
    assert np.isnan(got[~v]).all()
    # merged chunk by chunk (including an empty chunk) equals all at once
    stats = RxStats(5)
    for r0 in range(0, 30, 7):
        stats.add(d[:, r0 : r0 + 7], v[r0 : r0 + 7])
    stats.add(d[:, :2], np.zeros((2, 20), bool))
    assert stats.n == v.sum()
    np.testing.assert_allclose(stats.mean, x.mean(1), rtol=1e-12)
    np.testing.assert_allclose(stats.scatter, c @ c.T, rtol=1e-9)


def test_bad_inputs(pair):
    model, x1, x2, valid = pair
    with pytest.raises(InputError, match="differ in shape"):
        change_intensity(model, x1, x2[:, :-1], valid, "mse", "cpu", tile=8)
    with pytest.raises(InputError, match="Unknown distance"):
        change_intensity(model, x1, x2, valid, "l1", "cpu", tile=8)
    with pytest.raises(InputError, match="trained on 6 bands"):
        change_intensity(model, x1[:3], x2[:3], valid, "mse", "cpu", tile=8)


def test_tiled_progress_is_monotonic(pair):
    model, x1, x2, valid = pair

    class Record(NullFeedback):
        def __init__(self):
            self.values = []

        def set_progress(self, fraction):
            self.values.append(fraction)

    fb = Record()
    change_intensity(model, x1, x2, valid, "rx", "cpu", feedback=fb, tile=16)
    assert fb.values == sorted(fb.values) and fb.values[-1] == pytest.approx(1.0)


_PEAK_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np, torch
    torch.set_num_threads(1)
    from hypernet_qgis.core.hypernet.detection import change_intensity
    from hypernet_qgis.core.hypernet.network import HyperNet
    side, budget = int(sys.argv[1]), float(sys.argv[2])
    torch.manual_seed(0)
    model = HyperNet(8, 16).eval()
    rng = np.random.default_rng(0)
    x1 = rng.normal(size=(8, side, side)).astype(np.float32)
    x2 = rng.normal(size=(8, side, side)).astype(np.float32)
    valid = np.ones((side, side), bool)
    # warm-up by tiles at the same budget: oneDNN caches one set-up per convolution shape (about 11 MB, once per
    # process, whatever the scene size), which is not what this test measures
    change_intensity(model, x1[:, :400, :400], x2[:, :400, :400], valid[:400, :400], "mse", "cpu",
                     memory_budget_mb=float(sys.argv[2]))

    def status(key):  # kB
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(key))

    with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current RSS
        f.write("5")
    before = status("VmRSS:")
    out = change_intensity(model, x1, x2, valid, "mse", "cpu", memory_budget_mb=budget)
    print(json.dumps({"extra_mb": (status("VmHWM:") - before) / 1024, "finite": bool(np.isfinite(out).all())}))
    """
)


def _peak_extra_mb(side: int, budget: float, alloc: str = "system") -> float:
    from hypernet_qgis.core.hypernet import allocator

    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", allocator.ENV_DONE, allocator.ENV_CHOICE)}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    if alloc == "tcmalloc":  # as the command-line tools run (core/hypernet/allocator.py)
        env = allocator.preload_environment(env)
        if env is None:
            pytest.skip("tcmalloc is not installed")
    res = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, str(side), str(budget)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=True,
    )
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["finite"]
    return out["extra_mb"]


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc peak-RSS reset")
@pytest.mark.parametrize("alloc", ["system", "tcmalloc"])
def test_peak_memory_is_set_by_the_budget_not_the_scene(alloc):
    """Same 48 MB budget on a 400x400 and an 800x800 scene (8 bands, width 16): the growth of the peak RSS during
    detection stays within the budget (+16 MB for the intensity map, the two per-date calibrated model copies and
    allocator slack; measured 39 and 54 MB) for both, while a whole-image pass of 800x800 would need about 640 MB.
    Also with tcmalloc, which the command-line tools preload."""
    budget = 48
    small, large = _peak_extra_mb(400, budget, alloc), _peak_extra_mb(800, budget, alloc)
    whole_estimate = 800 * 800 * 4 * (8 + 14 * 16 + 32) / 2**20
    assert whole_estimate > 600
    assert small <= budget + 16 and large <= budget + 16, (small, large)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_tiled_detection_equals_cpu(pair):
    model, x1, x2, valid = pair
    cpu = change_intensity(model, x1, x2, valid, "mse", "cpu")
    gpu = change_intensity(model, x1, x2, valid, "mse", "cuda", tile=16)
    assert np.nanmax(np.abs(gpu - cpu)) <= 1e-4 * (np.nanmax(cpu) - np.nanmin(cpu))
    model.cpu()


# --- training within the budget ---------------------------------------------------------------------------------


def test_crop_plan_respects_the_budget():
    from hypernet_qgis.core.hypernet.perf import crop_plan, train_pixels_for_budget, train_step_mb

    # plenty of memory: the configured crops (64 x 64, 65536 pixels = 16 crops)
    assert crop_plan(1000, 1000, 224, 32, 64, 65536, 4096) == (64, 16)
    # small images: one crop of the image's short side
    assert crop_plan(40, 30, 8, 16, 64, 65536, 4096) == (30, 1)
    # a tight budget: fewer crops, each step's estimate within the budget
    crop, count = crop_plan(2000, 2000, 224, 112, 64, 65536, 1024)
    assert crop == 64 and 1 <= count < 16
    assert train_step_mb(224, 112, count * crop * crop) <= 1024
    assert count == train_pixels_for_budget(224, 112, 1024) // (64 * 64)
    # a budget below one crop: the crop shrinks (not below 16) and there is always one
    crop, count = crop_plan(2000, 2000, 224, 112, 64, 65536, 300)
    assert 16 <= crop < 64 and count >= 1


def test_paper_schedule_refused_when_the_budget_cannot_hold_the_image():
    from hypernet_qgis.core.hypernet.training import TrainConfig, train_hypernet

    rng = np.random.default_rng(0)
    x1 = rng.normal(size=(8, 64, 64)).astype(np.float32)
    x2 = rng.normal(size=(8, 64, 64)).astype(np.float32)
    valid = np.ones((64, 64), bool)
    cfg = TrainConfig(epochs=1, schedule="paper", device="cpu", memory_budget_mb=260)
    with pytest.raises(InputError, match="--schedule default"):
        train_hypernet(x1, x2, valid, cfg)
    # the default schedule runs within the same budget
    res = train_hypernet(x1, x2, valid, TrainConfig(epochs=2, device="cpu", memory_budget_mb=260))
    assert np.isfinite(res.loss_history).all()


def test_training_reads_crops_from_disk_backed_inputs(tmp_path):
    """Memory-mapped inputs are read crop by crop and train exactly as the same arrays in memory."""
    from hypernet_qgis.core.hypernet.training import TrainConfig, train_hypernet

    rng = np.random.default_rng(1)
    x1 = rng.normal(size=(6, 50, 44)).astype(np.float32)
    x2 = (x1 + rng.normal(scale=0.2, size=x1.shape)).astype(np.float32)
    valid = np.ones((50, 44), bool)
    maps = []
    for name, x in (("a", x1), ("b", x2)):
        np.save(tmp_path / f"{name}.npy", x)
        maps.append(np.load(tmp_path / f"{name}.npy", mmap_mode="r"))
    cfg = dict(epochs=3, device="cpu", crop_size=16, pixels_per_step=1024, seed=4)
    a = train_hypernet(x1, x2, valid, TrainConfig(**cfg))
    b = train_hypernet(maps[0], maps[1], valid, TrainConfig(**cfg))
    assert a.loss_history == b.loss_history


# --- scenes larger than memory: streaming.py ---------------------------------------------------------------------


def test_window_reader_slices_like_the_array(tmp_path):
    from hypernet_qgis.core.io.streaming import WindowReader

    x = np.arange(3 * 7 * 5, dtype=np.float32).reshape(3, 7, 5)
    path = tmp_path / "x.f32"
    path.write_bytes(np.ascontiguousarray(x.transpose(1, 2, 0)).tobytes())
    r = WindowReader(str(path), x.shape)
    assert r.shape == (3, 7, 5) and r.ndim == 3
    for key in [
        (slice(None), slice(2, 6), slice(1, 4)),
        (slice(None), slice(0, 7), slice(0, 5)),
        (slice(1, 3), slice(5, 9), slice(3, 5)),
        (slice(None), slice(3, 3), slice(0, 2)),
    ]:
        np.testing.assert_array_equal(r[key], x[key])
    np.testing.assert_array_equal(np.asarray(r), x)
    for r0, r1 in ((0, 7), (2, 5), (6, 7), (4, 4)):  # rows as stored, (rows, cols, bands)
        np.testing.assert_array_equal(r.pixels(r0, r1), x[:, r0:r1].transpose(1, 2, 0))
    with pytest.raises(TypeError):
        r[:, ::2]
    r.close()


def test_streamed_pair_equals_in_memory_pair(tmp_path):
    from conftest import write_pair

    from hypernet_qgis.core.hypernet.training import pre_detection_score
    from hypernet_qgis.core.io.streaming import load_pair_streamed
    from hypernet_qgis.core.pipeline import load_pair

    p = write_pair(tmp_path, bands=7, rows=41, cols=35)
    ref = load_pair(str(p["t1"]), str(p["t2"]))
    # tiny strips (3 rows) so that the strip-by-strip merge is exercised
    with load_pair_streamed(str(p["t1"]), str(p["t2"]), strip_values=3 * 35 * 7) as pair:
        np.testing.assert_array_equal(pair.valid, ref.valid)
        assert not pair.valid[:3, :3].any()
        np.testing.assert_allclose(np.asarray(pair.x1s), ref.x1s, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(pair.x2s), ref.x2s, rtol=1e-5, atol=1e-5)
        for d in ("t1", "t2"):
            np.testing.assert_allclose(pair.scaling[d]["mean"], ref.scaling[d]["mean"], rtol=1e-10)
            np.testing.assert_allclose(pair.scaling[d]["std"], ref.scaling[d]["std"], rtol=1e-10)
        np.testing.assert_allclose(pair.cva, pre_detection_score(ref.x1s, ref.x2s, ref.valid), rtol=1e-4, atol=1e-4)
        scratch = pair.scratch
        assert os.path.isdir(scratch)
    assert not os.path.exists(scratch)  # scratch files removed


def test_streamed_pair_from_tiled_int16_files_by_block_windows(tmp_path):
    """Tiled, pixel-interleaved int16 GeoTIFFs with nodata in T2 only, read by one-block windows (a budget below a
    block row): the same valid mask (T2's nodata counts), z-scores and CVA as the in-memory pair."""
    from osgeo import gdal

    from hypernet_qgis.core import memory
    from hypernet_qgis.core.hypernet.training import pre_detection_score
    from hypernet_qgis.core.io.streaming import load_pair_streamed
    from hypernet_qgis.core.pipeline import load_pair

    rng = np.random.default_rng(5)
    bands, rows, cols = 5, 70, 90
    paths = []
    for k in range(2):
        x = (rng.normal(1000, 200, (bands, rows, cols)) * (1 + 0.1 * k)).astype(np.int16)
        if k == 1:
            x[:, 40:45, 10:20] = -32768  # nodata in T2 only
            x[2, 60, 80] = -32768  # one band's nodata invalidates the pixel
        path = str(tmp_path / f"t{k + 1}.tif")
        ds = gdal.GetDriverByName("GTiff").Create(
            path, cols, rows, bands, gdal.GDT_Int16, ["TILED=YES", "BLOCKXSIZE=32", "BLOCKYSIZE=16"]
        )
        ds.SetGeoTransform((500000.0, 30.0, 0.0, 4600000.0, 0.0, -30.0))
        for b in range(bands):
            ds.GetRasterBand(b + 1).SetNoDataValue(-32768)
            ds.GetRasterBand(b + 1).WriteArray(x[b])
        ds = None
        paths.append(path)
    windows = memory.read_windows(rows, cols, bands, (16, 32), 16 * 32 * bands)
    assert len(windows) == 5 * 3 and windows[1] == (0, 16, 32, 64)
    ref = load_pair(*paths)
    assert not ref.valid[40:45, 10:20].any() and not ref.valid[60, 80] and ref.valid.sum() == rows * cols - 51
    with load_pair_streamed(*paths, strip_values=16 * 32 * bands) as pair:
        np.testing.assert_array_equal(pair.valid, ref.valid)
        for d in ("t1", "t2"):
            np.testing.assert_allclose(pair.scaling[d]["mean"], ref.scaling[d]["mean"], rtol=1e-12)
            np.testing.assert_allclose(pair.scaling[d]["std"], ref.scaling[d]["std"], rtol=1e-12)
        np.testing.assert_allclose(np.asarray(pair.x1s), ref.x1s, rtol=0, atol=1e-6)
        np.testing.assert_allclose(np.asarray(pair.x2s), ref.x2s, rtol=0, atol=1e-6)
        assert (np.asarray(pair.x2s)[:, ~ref.valid] == 0).all()
        expected = pre_detection_score(ref.x1s, ref.x2s, ref.valid)
        np.testing.assert_allclose(pair.cva, expected, rtol=1e-5, atol=1e-5)
        assert np.isnan(pair.cva[~ref.valid]).all()


def test_streamed_detection_end_to_end(tmp_path):
    """Train + detect from files through the streaming path; the (default, fused) intensity equals the fusion of
    whole-image detection with the same model and the classic evidence of the in-memory pair, and the outputs are
    whole GeoTIFFs."""
    from conftest import write_pair

    from hypernet_qgis.core.fusion import classic_evidence, fuse
    from hypernet_qgis.core.hypernet.training import TrainConfig
    from hypernet_qgis.core.io import raster_io
    from hypernet_qgis.core.pipeline import detect_files, load_pair

    p = write_pair(tmp_path, bands=6, rows=48, cols=44)
    out, inten = tmp_path / "change.tif", tmp_path / "intensity.tif"
    # a budget far below the pair's 0.13 MB: read, trained and detected by windows
    cfg = TrainConfig(epochs=3, device="cpu", crop_size=24, pixels_per_step=1200, memory_budget_mb=0.02)
    res = detect_files(str(p["t1"]), str(p["t2"]), str(out), intensity_out=str(inten), config=cfg)
    assert res.extra.get("streamed") is True and res.extra["evidence"] == "fused"
    got, gvalid, _ = raster_io.read_raster(str(inten))
    pair = load_pair(str(p["t1"]), str(p["t2"]))
    np.testing.assert_array_equal(gvalid, pair.valid)
    hypernet = change_intensity(res.train.model, pair.x1s, pair.x2s, pair.valid, "mse", "cpu")
    whole = fuse(hypernet, classic_evidence(pair), pair.valid)
    assert np.nanmax(np.abs(got[0] - whole)) <= 1e-4 * (np.nanmax(whole) - np.nanmin(whole))
    change, cvalid, _ = raster_io.read_raster(str(out))
    assert int((change[0][cvalid] == 1).sum()) == res.changed_pixels > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_budget_comes_from_the_card_and_training_runs():
    from hypernet_qgis.core.hypernet.perf import CUDA_SHARE, device_budget_mb
    from hypernet_qgis.core.hypernet.training import TrainConfig, train_hypernet

    dev = torch.device("cuda")
    free, _ = torch.cuda.mem_get_info(dev)
    assert device_budget_mb(dev, 1) == pytest.approx(CUDA_SHARE * free / 2**20, rel=0.05)
    rng = np.random.default_rng(0)
    x1 = rng.normal(size=(8, 64, 64)).astype(np.float32)
    x2 = rng.normal(size=(8, 64, 64)).astype(np.float32)
    res = train_hypernet(x1, x2, np.ones((64, 64), bool), TrainConfig(epochs=2, device="cuda"))
    assert res.device_name.startswith("CUDA") and np.isfinite(res.loss_history).all()
    intensity = change_intensity(res.model, x1, x2, np.ones((64, 64), bool), "rx", "cuda", tile=24)
    assert np.isfinite(intensity).all()
