"""The memory model (core/memory.py): its decisions, and peak RSS within the budget + 0.5 GB (subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from hypernet_qgis.core import memory

REPO = Path(__file__).resolve().parents[1]


def test_detection_plan_whole_tiles_memory_disk():
    # 300 x 300 x 100 bands, width 50: the whole image needs 300 * 300 * 4 * (100 + 16 * 50) B = 309 MB
    assert memory.detection_plan(100, 50, 300, 300, 400) == memory.DetectionPlan(True, 300, False)
    # 1000 x 1000 at 2048 MB: tiles; the scratch maps (7 * 50 maps, 1335 MB) leave over a quarter of the budget
    plan = memory.detection_plan(100, 50, 1000, 1000, 2048)
    assert not plan.whole and plan.scratch_in_memory
    left = 2048 - memory.scratch_mb(50, 1000, 1000)
    assert (plan.tile + 28) ** 2 * memory.forward_bytes_per_pixel(100, 50) <= left * memory.MB
    # at 512 MB the maps go to disk and the tile gets the whole budget
    plan = memory.detection_plan(100, 50, 1000, 1000, 512)
    assert not plan.whole and not plan.scratch_in_memory
    assert plan.tile == memory.tile_for_budget(100, 50, memory.HOST_TILE_SHARE * 512, 14) == 349
    assert memory.tile_for_budget(100, 50, 512, 14) == 381  # the allocator's slack is left out of the tile
    # a forced tile covering the image is the whole image; a smaller one is kept
    assert memory.detection_plan(100, 50, 1000, 1000, 512, tile=1000).whole
    assert memory.detection_plan(100, 50, 1000, 1000, 16000, tile=500).tile == 500


def test_strips_follow_the_budget():
    assert memory.strip_values(None) == memory.STRIP_VALUES
    assert memory.strip_values(4096) == memory.STRIP_VALUES
    small = memory.strip_values(1024, 224, 2000)
    assert 224 * 2000 <= small < memory.STRIP_VALUES
    # both dates' strips, raw and standardised (+ a float64 temporary), within a quarter of the budget
    assert small * 2 * (4 + 4 + 8) <= 0.25 * 1024 * memory.MB
    assert memory.strip_values(1, 224, 2000) == 224 * 2000  # at least a row


def _covers_once_without_cutting_blocks(windows, rows, cols, block):
    seen = np.zeros((rows, cols), int)
    for r0, r1, c0, c1 in windows:
        seen[r0:r1, c0:c1] += 1
        assert r0 % block[0] == 0 and (r1 % block[0] == 0 or r1 == rows)
        assert c0 % block[1] == 0 and (c1 % block[1] == 0 or c1 == cols)
    assert (seen == 1).all()


@pytest.mark.parametrize(
    "rows, cols, bands, block, values, expected",
    [
        # a block row fits: full-width strips of whole block rows (3 block rows of 4 x 50 x 2 = 1200 values)
        (23, 50, 2, (4, 16), 1250, [(0, 12, 0, 50), (12, 23, 0, 50)]),
        # a block row does not fit: one block row by whole blocks (2 blocks of 4 x 16 x 2 = 256 values)
        (9, 50, 2, (4, 16), 300, [(r, min(9, r + 4), c, min(50, c + 32)) for r in (0, 4, 8) for c in (0, 32)]),
        # less than one block: one block a window (GDAL decodes no less)
        (9, 50, 2, (4, 16), 10, [(r, min(9, r + 4), c, min(50, c + 16)) for r in (0, 4, 8) for c in (0, 16, 32, 48)]),
        # striped files (one row a block): rows by the budget
        (10, 7, 3, (1, 7), 50, [(0, 2, 0, 7), (2, 4, 0, 7), (4, 6, 0, 7), (6, 8, 0, 7), (8, 10, 0, 7)]),
        # blocks larger than the raster
        (5, 6, 1, (256, 256), 1000, [(0, 5, 0, 6)]),
    ],
)
def test_read_windows_follow_the_blocks(rows, cols, bands, block, values, expected):
    windows = memory.read_windows(rows, cols, bands, block, values)
    assert windows == expected
    _covers_once_without_cutting_blocks(windows, rows, cols, (min(block[0], rows), min(block[1], cols)))


def test_read_windows_of_a_big_tiled_scene_at_a_small_budget():
    """2000 x 2000 x 224 in 256 x 256 tiles at 1024 MB: a block row (458 MB a date) is over the share, so windows
    are single tiles, not 18-row strips that decode every tile 14 times (BENCHMARKS.md, SCALE)."""
    values = memory.strip_values(1024, 224, 2000)
    windows = memory.read_windows(2000, 2000, 224, (256, 256), values)
    assert len(windows) == 64 and windows[0] == (0, 256, 0, 256)
    _covers_once_without_cutting_blocks(windows, 2000, 2000, (256, 256))
    assert memory.read_windows(2000, 2000, 224, (256, 256), memory.strip_values(4096, 224, 2000))[0] == (0, 256, 0, 512)


def test_gdal_cache_rule():
    # one row of blocks of both dates, with a margin, within a quarter of the budget, never below the minimum
    assert memory.gdal_cache_mb(4096, 100) == 110
    assert memory.gdal_cache_mb(1024, 2000) == 256
    assert memory.gdal_cache_mb(1024, 1) == memory.GDAL_CACHE_MIN_MB


def test_reading_a_pair_bounds_gdal_cache_and_restores_it(tmp_path):
    """GDAL's default block cache (5 % of the machine's memory) is outside every budget: while a pair is read the
    engine holds it to the memory model's size, on both routes, and gives the previous size back."""
    import numpy as np
    from osgeo import gdal
    from test_qgis_support import write_tif

    from hypernet_qgis.core.pair import open_pair

    rng = np.random.default_rng(0)
    t1 = write_tif(tmp_path / "t1.tif", rng.normal(size=(8, 64, 64)).astype(np.float32))
    t2 = write_tif(tmp_path / "t2.tif", rng.normal(size=(8, 64, 64)).astype(np.float32))
    before = 900 * 2**20
    gdal.SetCacheMax(before)
    seen: list[int] = []

    class Watch:
        def set_progress(self, fraction):
            seen.append(gdal.GetCacheMax())

        def info(self, text):
            pass

        def is_cancelled(self):
            return False

    try:
        for budget in (1024, 0.1):  # in memory, then by windows (the pair is larger than 0.1 MB)
            with open_pair(t1, t2, memory_budget_mb=budget, feedback=Watch()) as pair:
                assert pair.windowed == (budget < 1)
            assert gdal.GetCacheMax() == before
        assert seen and max(seen) <= memory.GDAL_CACHE_MIN_MB * 2**20, seen  # (the windowed route reports progress)
    finally:
        gdal.SetCacheMax(256 * 2**20)


def test_whole_pair_and_training_sizes():
    assert memory.whole_pair_mb(224, 2000, 2000) == pytest.approx(4 * 224 * 4e6 * 4 / memory.MB)
    assert memory.train_step_mb(224, 112, 0) == memory.TRAIN_FIXED_MB
    pixels = memory.train_pixels_for_budget(224, 112, 1024)
    assert memory.train_step_mb(224, 112, pixels) <= 1024 < memory.train_step_mb(224, 112, pixels + 1)


_DETECT_SCRIPT = textwrap.dedent(
    """
    import json, os, resource, sys, tempfile, time
    import numpy as np, torch
    torch.set_num_threads(1)
    from hypernet_qgis.core.hypernet.detection import change_intensity
    from hypernet_qgis.core.hypernet.network import HyperNet
    from hypernet_qgis.core.io.streaming import WindowReader
    side, bands, width, budget = (int(v) for v in sys.argv[1:5])
    folder = tempfile.mkdtemp()
    readers = []
    rng = np.random.default_rng(0)
    for name in ("t1", "t2"):  # disk-backed standardised dates, as the streamed route keeps them
        path = os.path.join(folder, name)
        with open(path, "wb") as f:
            for r0 in range(0, side, 100):
                f.write(rng.normal(size=(min(100, side - r0), side, bands)).astype(np.float32).tobytes())
        readers.append(WindowReader(path, (bands, side, side)))
    torch.manual_seed(0)
    model = HyperNet(bands, width).eval()
    valid = np.ones((side, side), bool)
    start = time.perf_counter()
    out = change_intensity(model, readers[0], readers[1], valid, "mse", "cpu", memory_budget_mb=budget)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for r in readers:
        r.close()
        os.unlink(r.path)
    os.rmdir(folder)
    print(json.dumps({"peak_mb": peak, "seconds": time.perf_counter() - start, "finite": bool(np.isfinite(out).all())}))
    """
)


def _child_env(alloc: str, threads: int) -> dict[str, str]:
    """The environment of a measured child process: this checkout, ``threads`` threads, the system allocator or
    tcmalloc preloaded (skips when tcmalloc is not installed)."""
    from hypernet_qgis.core.hypernet import allocator

    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", allocator.ENV_DONE, allocator.ENV_CHOICE)}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(threads))
    if alloc == "tcmalloc":
        env = allocator.preload_environment(env)
        if env is None:
            pytest.skip("tcmalloc is not installed")
    return env


def detection_peak_mb(side: int, bands: int, width: int, budget: int, alloc: str = "system") -> dict:
    """Peak RSS (MB, whole process: engine import included) of a detection of a disk-backed side x side pair."""
    env = _child_env(alloc, threads=1)
    res = subprocess.run(
        [sys.executable, "-c", _DETECT_SCRIPT, str(side), str(bands), str(width), str(budget)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=True,
    )
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["finite"]
    return out


@pytest.mark.parametrize("alloc", ["system", "tcmalloc"])
def test_detection_peak_rss_within_budget_plus_half_a_gigabyte(alloc):
    """1000 x 1000 x 32 bands, width 16, budget 1024 MB: the whole image would need 1.3 GB, so detection runs by
    tiles with its scratch maps in memory (448 MB) and the rest of the budget for the tile; the process' peak RSS,
    engine import included, stays within budget + 0.5 GB."""
    side, bands, width, budget = 1000, 32, 16, 1024
    assert side * side * memory.forward_bytes_per_pixel(bands, width, 2 * width) > budget * memory.MB
    plan = memory.detection_plan(bands, width, side, side, budget)
    assert not plan.whole and plan.scratch_in_memory
    out = detection_peak_mb(side, bands, width, budget, alloc)
    print(alloc, out)
    assert out["peak_mb"] <= budget + 512, out


def test_an_in_memory_pair_leaves_half_the_budget_to_training_and_detection(tmp_path):
    """A pair that fits the budget but not half of it is read by windows: training and detection get the rest
    (a 3.4 GB pair under 4096 MB used to stay in memory and the job peaked at 12.5 GB, BENCHMARKS.md)."""
    import numpy as np
    from test_qgis_support import write_tif

    from hypernet_qgis.core.pair import in_memory_mb, open_pair

    rng = np.random.default_rng(0)
    t1 = write_tif(tmp_path / "t1.tif", rng.normal(size=(8, 64, 64)).astype(np.float32))
    t2 = write_tif(tmp_path / "t2.tif", rng.normal(size=(8, 64, 64)).astype(np.float32))
    from hypernet_qgis.core.io.raster_io import raster_info

    need = in_memory_mb(raster_info(t1))
    with open_pair(t1, t2, memory_budget_mb=1.5 * need) as pair:
        # a windowed pair holds its per-pixel maps (16 bytes a pixel): the job's tiles get the rest
        assert pair.windowed and pair.held_mb == 16 * 64 * 64 / 2**20
    with open_pair(t1, t2, memory_budget_mb=2 * need) as pair:
        assert not pair.windowed and pair.held_mb == need
        assert memory.working_budget_mb(2 * need, pair.held_mb) == need


_JOB_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    from hypernet_qgis.core.hypernet.training import TrainConfig
    from hypernet_qgis.core.pipeline import detect_files
    t1, t2, out, budget = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    messages = []
    class Log:
        def set_progress(self, fraction): pass
        def is_cancelled(self): return False
        def info(self, text): messages.append(text)
    res = detect_files(t1, t2, out, config=TrainConfig(device="cpu", epochs=1, memory_budget_mb=budget), feedback=Log())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_mb": peak, "messages": messages, "changed": res.changed_pixels}))
    """
)


@pytest.mark.parametrize("alloc", ["system", "tcmalloc"])
def test_a_whole_detect_job_stays_within_budget_plus_half_a_gigabyte(tmp_path, alloc):
    """Read, standardise, train, detect by tiles, fuse with IR-MAD, write: a 700 x 700 x 224 float32 pair (1.7 GB
    in memory) at a 1024 MB budget goes by windows and tiles, and the whole process (engine included) peaks
    within budget + 0.5 GB on both allocators. A job used to hold training's freed blocks and each tiled pass's
    through detection (1000 x 1000 x 224 at 1024 MB: 1.53 GB, BENCHMARKS.md)."""
    sys.path.insert(0, str(REPO / "tools"))
    import bench_speed

    bench_speed._write_geotiffs(str(tmp_path), 224, 700, 700)
    env = _child_env(alloc, threads=2)
    budget = 1024
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            _JOB_SCRIPT,
            str(tmp_path / "t1.tif"),
            str(tmp_path / "t2.tif"),
            str(tmp_path / "c.tif"),
            str(budget),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    text = "\n".join(out["messages"])
    assert "read, standardised and used by windows" in text and "Detection runs by " in text, text
    assert out["changed"] > 0
    print(alloc, round(out["peak_mb"]), "MB")
    assert out["peak_mb"] <= budget + 512, out
