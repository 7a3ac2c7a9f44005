#!/usr/bin/env python3
"""Speed and memory benchmark (`make bench-speed`): writes bench-results/speed.json and the SPEED section of
BENCHMARKS.md.

Measured, each case in a fresh subprocess (so each has its own peak RSS), with OMP_NUM_THREADS=1 and with torch's
default thread count (on a shared 2-core machine the default can be much slower: its threads spin-wait):

* paper-schedule training: seconds per epoch (after one warm-up epoch) and peak RSS at 307x241x154 and
  600x500x224 (synthetic data), the achieved training GFLOP/s (FLOPs counted by torch's FlopCounterMode) next to
  the fp32 matmul GFLOP/s measured in the same subprocess;
* default-schedule end-to-end Detect Change (read GeoTIFFs, standardise, train, detect, threshold, write) at
  600x500x224;
* with --big: a 2000x2000x224 scene end to end through core.io.streaming (train + detect) and its peak RSS.

Timings on a shared machine vary with the load; compare ratios within one run (the matmul figure is the yardstick).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: The authors' code on this machine kind (the issue): seconds per paper epoch, peak GB, at 208 GFLOP/s matmul.
AUTHORS = {"307x241x154": (2.5, 3.3), "600x500x224": (45.0, 13.5)}
AUTHORS_MATMUL = 208.0
SIZES = {"307x241x154": (154, 241, 307), "600x500x224": (224, 500, 600)}


# ------------------------------------------------------------------------------------------------ child cases


def _peak_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _matmul_gflops(n: int = 2048, reps: int = 6) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def _train_flops_per_pixel(bands: int, width: int) -> float:
    """FLOPs of one paper training step per pixel (both dates, forward + backward), counted on a 32x32 image
    with the published operations (the work the method asks for; our faster operations do slightly less)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from hypernet_qgis.core.hypernet.network import HyperNet, default_widths

    model = HyperNet(bands, *default_widths(bands, width)).train()
    x1, x2 = torch.randn(1, bands, 32, 32), torch.randn(1, bands, 32, 32)
    with FlopCounterMode(display=False) as counter:
        published_training_loss(model, x1, x2, torch.arange(0, 1024, 2), 1.0).backward()
    return counter.get_total_flops() / 1024


def _synthetic(bands: int, rows: int, cols: int, seed: int = 0):
    """A smooth synthetic standardised pair with a changed block (what training sees)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    classes = rng.normal(size=(6, bands)).astype(np.float32)
    yy, xx = np.mgrid[0:rows, 0:cols]
    label = ((yy // 23) + (xx // 17)) % 6
    x1 = classes[label].transpose(2, 0, 1) + rng.normal(0, 0.3, (bands, rows, cols)).astype(np.float32)
    x2 = classes[label].transpose(2, 0, 1) + rng.normal(0, 0.3, (bands, rows, cols)).astype(np.float32)
    x2[:, rows // 3 : rows // 3 + rows // 8, cols // 3 : cols // 3 + cols // 8] += 1.5
    return np.ascontiguousarray(x1, np.float32), np.ascontiguousarray(x2, np.float32), np.ones((rows, cols), bool)


def published_training_loss(model, x1, x2, index, gamma):
    """The training loss computed as published: predictor and cosine on every pixel, then indexed by mask g."""
    from hypernet_qgis.core.hypernet.loss import focal_cosine_loss

    _, z1, p1 = model.features_and_projections(x1)
    _, z2, p2 = model.features_and_projections(x2)
    return focal_cosine_loss(p1, z1, p2, z2, index, gamma)


def _use_published_ops() -> None:
    """Run training with the operations as published: nn.AvgPool2d for the 5x5 mean, and the predictor and the
    loss on every pixel before indexing mask g (the same numbers; the yardstick for our speed-ups, same run)."""
    from torch import nn

    from hypernet_qgis.core.hypernet import network, training

    network.BoxMean = lambda k: nn.AvgPool2d(k, stride=1, padding=k // 2)
    training.training_loss = published_training_loss


def case_paper(size: str, epochs: int, reuse: bool, ops: str = "ours") -> dict:
    """Paper schedule s/epoch (epochs after the first), peak RSS, GFLOP/s, matmul GFLOP/s."""
    import numpy as np
    import torch

    from hypernet_qgis.core.hypernet import perf
    from hypernet_qgis.core.hypernet.network import default_widths
    from hypernet_qgis.core.hypernet.training import TrainConfig, train_hypernet
    from hypernet_qgis.core.progress import NullFeedback

    bands, rows, cols = SIZES[size]
    if not reuse:
        perf.REUSE_HEADROOM = float("inf")
    if ops == "published":
        _use_published_ops()
    x1, x2, valid = _synthetic(bands, rows, cols)
    mask = np.zeros_like(valid)
    mask[::2] = True  # half the pixels as mask g (the FLOPs do not depend on it)

    class Clock(NullFeedback):
        def __init__(self):
            self.marks, self.cpu = [time.perf_counter()], [os.times()]

        def set_progress(self, fraction):
            self.marks.append(time.perf_counter())
            self.cpu.append(os.times())

    clock = Clock()
    width = default_widths(bands)[0]
    cfg = TrainConfig(epochs=epochs, schedule="paper", device="cpu", memory_budget_mb=23 * 1024)
    train_hypernet(x1, x2, valid, cfg, mask, clock)
    steps = np.diff(clock.marks)
    per_epoch = float(np.mean(steps[1:])) if len(steps) > 1 else float(steps[0])
    user = np.diff([c.user for c in clock.cpu])
    system = np.diff([c.system for c in clock.cpu])
    sl = slice(1, None) if len(steps) > 1 else slice(0, None)
    flops = _train_flops_per_pixel(bands, width) * rows * cols
    return {
        "case": "paper",
        "ops": ops,
        "size": size,
        "threads": torch.get_num_threads(),
        "reuse_pages": reuse
        and perf.train_step_mb(bands, width, rows * cols) * perf.REUSE_HEADROOM <= cfg.memory_budget_mb,
        "width": width,
        "epochs_timed": len(steps) - 1,
        "first_epoch_s": float(steps[0]),
        "s_per_epoch": per_epoch,
        "cpu_user_s_per_epoch": float(np.mean(user[sl])),
        "cpu_system_s_per_epoch": float(np.mean(system[sl])),
        "peak_rss_gb": _peak_gb(),
        "train_gflop_per_epoch": flops / 1e9,
        "train_gflops": flops / per_epoch / 1e9,
        "matmul_gflops": _matmul_gflops(),
        "estimated_step_gb": perf.train_step_mb(bands, width, rows * cols) / 1024,
    }


def _write_geotiffs(folder: str, bands: int, rows: int, cols: int, dtype: str = "float32") -> tuple[str, str]:
    """A synthetic pair as GeoTIFFs (UTM 33N), written strip by strip so the writer stays small."""
    import numpy as np
    from osgeo import gdal, osr

    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    gdt = gdal.GDT_Int16 if dtype == "int16" else gdal.GDT_Float32
    rng = np.random.default_rng(1)
    classes = rng.normal(1000, 300, size=(6, bands)).astype(np.float32)
    paths = []
    for k, name in enumerate(("t1", "t2")):
        path = os.path.join(folder, f"{name}.tif")
        ds = gdal.GetDriverByName("GTiff").Create(path, cols, rows, bands, gdt, ["INTERLEAVE=PIXEL", "TILED=YES"])
        ds.SetGeoTransform((500000.0, 30.0, 0.0, 4600000.0, 0.0, -30.0))
        ds.SetProjection(srs.ExportToWkt())
        step = max(1, (64 * 2**20) // (cols * bands * 4))
        for r0 in range(0, rows, step):
            r1 = min(rows, r0 + step)
            yy, xx = np.mgrid[r0:r1, 0:cols]
            label = ((yy // 23) + (xx // 17)) % 6
            if k == 1:
                block = (
                    (yy >= rows // 3) & (yy < rows // 3 + rows // 8) & (xx >= cols // 3) & (xx < cols // 3 + cols // 8)
                )
                label = np.where(block, (label + 3) % 6, label)
            data = classes[label].transpose(2, 0, 1) + rng.normal(0, 30, (bands, r1 - r0, cols)).astype(np.float32)
            if k == 1:
                data = 1.05 * data + 20
            ds.WriteRaster(
                0,
                r0,
                cols,
                r1 - r0,
                data.astype(np.int16 if dtype == "int16" else np.float32).tobytes(),
                buf_type=gdt,
                band_list=list(range(1, bands + 1)),
            )
        ds = None
        paths.append(path)
    return paths[0], paths[1]


def case_detect_default(size: str, folder: str) -> dict:
    """Default-schedule Detect Change end to end from GeoTIFFs (pipeline.detect_files)."""
    import torch

    from hypernet_qgis.core.hypernet.training import TrainConfig
    from hypernet_qgis.core.pipeline import detect_files

    bands, rows, cols = SIZES[size]
    t1, t2 = _write_geotiffs(folder, bands, rows, cols)
    start = time.perf_counter()
    res = detect_files(t1, t2, os.path.join(folder, "change.tif"), config=TrainConfig(device="cpu"))
    seconds = time.perf_counter() - start
    return {
        "case": "detect_default",
        "size": size,
        "threads": torch.get_num_threads(),
        "seconds": seconds,
        "train_s": res.train.seconds if res.train else None,
        "peak_rss_gb": _peak_gb(),
        "changed_fraction": res.changed_fraction,
        "matmul_gflops": _matmul_gflops(),
    }


def case_big(folder: str, side: int, bands: int) -> dict:
    """A side x side x bands scene end to end through core.io.streaming within the default memory budget."""
    import torch

    from hypernet_qgis.core.hypernet.training import TrainConfig
    from hypernet_qgis.core.pipeline import detect_files

    t = time.perf_counter()
    t1, t2 = _write_geotiffs(folder, bands, side, side, dtype="int16")
    write_s = time.perf_counter() - t
    rss_after_writing = _peak_gb()
    start = time.perf_counter()
    res = detect_files(t1, t2, os.path.join(folder, "change.tif"), config=TrainConfig(device="cpu"))
    seconds = time.perf_counter() - start
    return {
        "case": "big_streamed",
        "size": f"{side}x{side}x{bands}",
        "threads": torch.get_num_threads(),
        "seconds": seconds,
        "input_write_s": write_s,
        "peak_rss_gb": _peak_gb(),
        "peak_rss_gb_while_writing_inputs": rss_after_writing,
        **res.extra.get("stages_s", {}),
        "changed_fraction": res.changed_fraction,
        "memory_budget_mb": TrainConfig().memory_budget_mb,
        "windowed": bool(res.extra.get("streamed", False)),
    }


class _RssLog:
    """A job's feedback that records the process' peak RSS (GB) so far at each log message: which stage set
    the peak."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, float]] = []

    def set_progress(self, fraction: float) -> None:
        pass

    def info(self, text: str) -> None:
        self.entries.append((text[:90], round(_peak_gb(), 3)))

    def is_cancelled(self) -> bool:
        return False


def case_job_budget(folder: str, side: int, bands: int, budget: int, epochs: int) -> dict:
    """The whole Detect Change job (read, standardise, train ``epochs``, detect, write) from float32 GeoTIFFs
    within ``budget`` MB: the peak RSS of the whole process against the budget (issue 14's goal)."""
    import torch

    from hypernet_qgis.core.hypernet.training import TrainConfig
    from hypernet_qgis.core.memory import detection_plan, working_budget_mb
    from hypernet_qgis.core.pipeline import detect_files

    # the inputs are written by another process: GDAL's cache while writing them is not the job's memory
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); import bench_speed; "
            "bench_speed._write_geotiffs(sys.argv[2], *map(int, sys.argv[3:6]))",
            str(Path(__file__).parent),
            folder,
            str(bands),
            str(side),
            str(side),
        ],
        check=True,
    )
    t1, t2 = os.path.join(folder, "t1.tif"), os.path.join(folder, "t2.tif")
    before = _peak_gb()
    start = time.perf_counter()
    log = _RssLog()
    res = detect_files(
        t1,
        t2,
        os.path.join(folder, "change.tif"),
        config=TrainConfig(device="cpu", epochs=epochs, memory_budget_mb=budget),
        feedback=log,
    )
    width = res.train.model.width if res.train else 0
    work = working_budget_mb(budget, res.pair.held_mb)  # what the job's detection got (pipeline.py)
    plan = detection_plan(bands, width, side, side, work, res.train.model.halo()) if res.train else None
    return {
        "case": "job_budget",
        "size": f"{side}x{side}x{bands}",
        "budget_mb": budget,
        "epochs": epochs,
        "threads": torch.get_num_threads(),
        "seconds": time.perf_counter() - start,
        "peak_rss_gb": _peak_gb(),
        "peak_rss_gb_before_job": before,
        "windowed": bool(res.extra.get("streamed", False)),
        "stages_s": res.extra.get("stages_s", {}),
        "plan": plan.__dict__ if plan else None,
        "rss_by_message": log.entries,
    }


def _disk_pair(folder: str, bands: int, rows: int, cols: int):
    """The synthetic standardised pair written strip by strip as the streamed route's scratch files (WindowReaders)."""
    import numpy as np

    from hypernet_qgis.core.io.streaming import WindowReader

    rng = np.random.default_rng(0)
    classes = rng.normal(size=(6, bands)).astype(np.float32)
    readers = []
    for k in range(2):
        path = os.path.join(folder, f"t{k + 1}.f32")
        with open(path, "wb") as f:
            for r0 in range(0, rows, 64):
                yy, xx = np.mgrid[r0 : min(rows, r0 + 64), 0:cols]
                label = ((yy // 23) + (xx // 17)) % 6
                if k == 1:
                    r, c = rows // 3, cols // 3
                    block = (yy >= r) & (yy < r + rows // 8) & (xx >= c) & (xx < c + cols // 8)
                    label = np.where(block, (label + 3) % 6, label)
                data = classes[label] + rng.normal(0, 0.3, (*label.shape, bands)).astype(np.float32)
                f.write(np.ascontiguousarray(data, np.float32).tobytes())
        readers.append(WindowReader(path, (bands, rows, cols)))
    return readers[0], readers[1], np.ones((rows, cols), bool)


def _detection_model(bands: int):
    import torch

    from hypernet_qgis.core.hypernet.network import HyperNet, default_widths

    torch.manual_seed(0)
    return HyperNet(bands, *default_widths(bands)).eval()


def case_tiled(side: int, bands: int) -> dict:
    """Detection of one pair, whole image and by tiles (layer-by-layer passes), same process: wall and CPU s."""
    import numpy as np
    import torch

    from hypernet_qgis.core.hypernet.detection import change_intensity

    x1, x2, valid = _synthetic(bands, side, side)
    model = _detection_model(bands)
    runs = [
        ("whole", {"memory_budget_mb": 1e6}),
        ("4 tiles, scratch in memory", {"memory_budget_mb": 1e6, "tile": (side + 1) // 2}),
        ("tiles by a 512 MB budget, scratch on disk", {"memory_budget_mb": 512}),
        ("whole (again)", {"memory_budget_mb": 1e6}),
    ]
    out: dict = {"case": "tiled", "size": f"{side}x{side}x{bands}", "threads": torch.get_num_threads(), "runs": []}
    ref = None
    for name, kw in runs:
        messages = []

        class Log:
            def set_progress(self, fraction):
                pass

            def info(self, text):
                messages.append(text)  # noqa: B023 (used within this iteration)

            def is_cancelled(self):
                return False

        t, c = time.perf_counter(), time.process_time()
        got = change_intensity(model, x1, x2, valid, "mse", "cpu", feedback=Log(), **kw)
        run = {"name": name, "wall_s": time.perf_counter() - t, "cpu_s": time.process_time() - c, "plan": messages}
        if ref is None:
            ref = got
        else:
            run["max_diff_over_range"] = float(np.nanmax(np.abs(got - ref)) / (np.nanmax(ref) - np.nanmin(ref)))
        out["runs"].append(run)
    whole = min(r["wall_s"] for r in out["runs"] if r["name"].startswith("whole"))
    whole_cpu = min(r["cpu_s"] for r in out["runs"] if r["name"].startswith("whole"))
    for r in out["runs"]:
        r["wall_ratio"], r["cpu_ratio"] = r["wall_s"] / whole, r["cpu_s"] / whole_cpu
    out["peak_rss_gb"] = _peak_gb()
    return out


def case_budget(folder: str, side: int, bands: int, budget: int) -> dict:
    """Detection (given model) of a disk-backed pair within ``budget`` MB: peak RSS of the whole process."""
    import numpy as np
    import torch

    from hypernet_qgis.core.hypernet.detection import change_intensity
    from hypernet_qgis.core.memory import detection_plan

    x1, x2, valid = _disk_pair(folder, bands, side, side)
    model = _detection_model(bands)
    before = _peak_gb()
    t = time.perf_counter()
    out = change_intensity(model, x1, x2, valid, "mse", "cpu", memory_budget_mb=budget)
    plan = detection_plan(bands, model.width, side, side, budget, model.halo())
    return {
        "case": "budget",
        "size": f"{side}x{side}x{bands}",
        "budget_mb": budget,
        "threads": torch.get_num_threads(),
        "seconds": time.perf_counter() - t,
        "peak_rss_gb": _peak_gb(),
        "peak_rss_gb_before_detection": before,
        "plan": plan.__dict__,
        "finite": bool(np.isfinite(out).all()),
    }


# ------------------------------------------------------------------------------------------------ driver


def _run_child(args: list[str], threads: int | None, timeout: int, alloc: str = "system") -> dict:
    """Run one case in a fresh interpreter; ``alloc`` "tcmalloc" preloads it as the CLI tools do."""
    from hypernet_qgis.core.hypernet import allocator

    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", allocator.ENV_DONE)}
    env.update(PYTHONPATH=str(REPO), **{allocator.ENV_CHOICE: "system"})
    env.pop("OMP_NUM_THREADS", None)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    if alloc == "tcmalloc":
        preload = allocator.preload_environment({k: v for k, v in env.items() if k != allocator.ENV_CHOICE})
        if preload is None:
            return {
                "case": " ".join(args),
                "error": "tcmalloc is not installed",
                "omp_num_threads": threads or "default",
            }
        env = preload
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *args]
    print("  running:", " ".join(args), f"(OMP_NUM_THREADS={threads or 'default'}, {alloc})", flush=True)
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"case": args[0], "error": f"timed out after {timeout} s"}
    if out.returncode != 0:
        why = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"
        if out.returncode < 0:
            why = f"killed by signal {-out.returncode} (out of memory?)"
        return {"case": " ".join(args), "error": why, "omp_num_threads": threads or "default"}
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["omp_num_threads"] = threads or "default"
    result["allocator"] = alloc
    print("   ", json.dumps(result), flush=True)
    return result


def _fmt(v, nd=1):
    return "-" if v is None else f"{v:.{nd}f}"


def _markdown(results: dict) -> str:
    lines = [
        "<!-- SPEED -->",
        f"`make bench-speed` (`{results['command']}`), {results['date']}, {results['machine']}, torch "
        f"{results['torch']}, CPU only (no GPU on this machine; the CUDA path sizes tiles and crops from "
        "`torch.cuda.mem_get_info` and its tests skip without CUDA). The machine is shared: compare the ratios to "
        "the fp32 matmul GFLOP/s measured in the same subprocess, not absolute seconds across runs.",
        "",
        "### Paper schedule (whole image every epoch), seconds per epoch after one warm-up epoch",
        "",
        "| size | operations | threads | allocator | page reuse | s/epoch (wall) | CPU s/epoch user + system | "
        "200 epochs (min) | peak RSS (GB) | GFLOP per epoch | training GFLOP/s | matmul GFLOP/s | "
        "training / matmul | s/epoch if every FLOP ran at matmul speed | authors: s/epoch at 208 GFLOP/s | "
        "speed-up vs authors, matmul-normalised | speed-up vs published operations, same run |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    # the yardstick: the published operations with the system allocator, same size and threads, same run
    published = {
        (r["size"], r["omp_num_threads"]): r["s_per_epoch"]
        for r in results["cases"]
        if r.get("case") == "paper"
        and r.get("ops") == "published"
        and "error" not in r
        and r.get("allocator", "system") == "system"
    }
    for r in results["cases"]:
        if r.get("case") != "paper" or "error" in r:
            continue
        a_s, a_gb = AUTHORS[r["size"]]
        # authors' epoch in units of this run's matmul speed: a_s * 208 / matmul
        speedup = (a_s * AUTHORS_MATMUL / r["matmul_gflops"]) / r["s_per_epoch"]
        ops = r.get("ops", "ours")
        base = published.get((r["size"], r["omp_num_threads"])) if ops == "ours" else None
        lines.append(
            f"| {r['size']} | {ops} | {r['omp_num_threads']} | {r.get('allocator', 'system')} | "
            f"{('yes' if r['reuse_pages'] else 'no') if r.get('allocator', 'system') == 'system' else 'n/a'} | "
            f"{_fmt(r['s_per_epoch'], 2)} | {_fmt(r['cpu_user_s_per_epoch'])} + {_fmt(r['cpu_system_s_per_epoch'])} | "
            f"{_fmt(r['s_per_epoch'] * 200 / 60)} | {_fmt(r['peak_rss_gb'], 2)} "
            f"(authors {a_gb}) | {_fmt(r['train_gflop_per_epoch'], 0)} | {_fmt(r['train_gflops'])} | "
            f"{_fmt(r['matmul_gflops'])} | {_fmt(r['train_gflops'] / r['matmul_gflops'], 2)} | "
            f"{_fmt(r['train_gflop_per_epoch'] / r['matmul_gflops'], 2)} | {a_s} | {_fmt(speedup, 2)}x | "
            f"{_fmt(base / r['s_per_epoch'], 2) + 'x' if base else ''} |"
        )
    lines += [
        "",
        "### End to end",
        "",
        "| case | size | threads | allocator | seconds | peak RSS (GB) | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["cases"]:
        if r.get("case") == "detect_default" and "error" not in r:
            lines.append(
                f"| Detect Change, default schedule (read, train 60 epochs, detect, write) | {r['size']} | "
                f"{r['omp_num_threads']} | {r.get('allocator', 'system')} | {_fmt(r['seconds'])} | "
                f"{_fmt(r['peak_rss_gb'], 2)} | training "
                f"{_fmt(r['train_s'])} s; matmul {_fmt(r['matmul_gflops'])} GFLOP/s; goal <= 300 s |"
            )
        if r.get("case") == "big_streamed" and "error" not in r:
            lines.append(
                f"| core.io.streaming train + detect (int16 GeoTIFFs) | {r['size']} | {r['omp_num_threads']} | "
                f"{r.get('allocator', 'system')} | "
                f"{_fmt(r['seconds'])} | {_fmt(r['peak_rss_gb'], 2)} | read+standardise "
                f"{_fmt(r.get('read_standardise_s'))} s, train {_fmt(r.get('train_s'))} s, detect "
                f"{_fmt(r.get('detect_s'))} s, write {_fmt(r.get('write_s'))} s; budget "
                f"{r['memory_budget_mb']} MB; goal peak <= 6 GB |"
            )
    errors = [r for r in results["cases"] if "error" in r]
    for r in errors:
        lines.append(f"| {r['case']} failed | | {r.get('omp_num_threads', '')} | | | | {r['error']} |")
    if results.get("big_skipped"):
        lines += [
            "",
            "The 2000x2000x224 streamed case (train + detect through core.io.streaming, int16 GeoTIFFs) runs with "
            "`--big` or `--big-only` (long; `--big-tcmalloc` preloads tcmalloc as the CLI does); the last "
            "record per allocator is kept in bench-results/speed-big.json.",
        ]
    recorded = results.get("big_recorded") or {}
    if "case" in recorded:  # an older single record
        recorded = {recorded.get("allocator", "system"): recorded}
    if recorded and results.get("big_skipped"):
        lines += [
            "",
            "| 2000x2000x224 streamed (`--big-only`) | allocator | seconds | read + standardise | train | "
            "detect | peak RSS (GB) | recorded |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for alloc, big in sorted(recorded.items()):
            lines.append(
                f"| {big['size']}, OMP_NUM_THREADS={big['omp_num_threads']}, budget "
                f"{big.get('memory_budget_mb', '-')} MB | {alloc} | {_fmt(big['seconds'])} | "
                f"{_fmt(big.get('read_standardise_s'))} | {_fmt(big.get('train_s'))} | "
                f"{_fmt(big.get('detect_s'))} | {_fmt(big['peak_rss_gb'], 2)} (goal <= 6) | "
                f"{big.get('date', '-')} |"
            )
    lines += ["", "<!-- /SPEED -->"]
    return "\n".join(lines)


def _markdown_detection(results: dict) -> str:
    """The DETECTION-SPEED section: tiled/whole detection and peak RSS against the budget."""
    lines: list[str] = []
    tiled = [r for r in results["cases"] if r.get("case") == "tiled" and "error" not in r]
    if tiled:
        lines += [
            "### Detection by tiles against the whole image (same model, same pair, same process)",
            "",
            "| size | threads | run | wall s | CPU s | wall / whole | CPU / whole | max difference / range |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in tiled:
            for run in r["runs"]:
                lines.append(
                    f"| {r['size']} | {r['omp_num_threads']} | {run['name']} | {_fmt(run['wall_s'])} | "
                    f"{_fmt(run['cpu_s'])} | {_fmt(run['wall_ratio'], 2)} | {_fmt(run['cpu_ratio'], 2)} | "
                    f"{run.get('max_diff_over_range', 0):.1e} |"
                )
    budgets = [r for r in results["cases"] if r.get("case") == "budget" and "error" not in r]
    if budgets:
        lines += [
            "",
            "### Peak RSS against the memory budget (detection of a disk-backed pair, given model)",
            "",
            "| size | budget (MB) | allocator | plan | seconds | peak RSS (GB), whole process | budget + 0.5 GB |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in budgets:
            p = r["plan"]
            how = (
                "whole"
                if p["whole"]
                else f"tiles of {p['tile']}, scratch in " + ("memory" if p["scratch_in_memory"] else "disk files")
            )
            lines.append(
                f"| {r['size']} | {r['budget_mb']} | {r.get('allocator', 'system')} | {how} | "
                f"{_fmt(r['seconds'])} | {_fmt(r['peak_rss_gb'], 2)} | "
                f"{(r['budget_mb'] + 512) / 1024:.2f} |"
            )
    lines = [
        "<!-- DETECTION-SPEED -->",
        f"`python tools/bench_speed.py --detection-only`, {results['date']}, "
        f"{results['machine']}, torch {results['torch']}. The machine is shared with other jobs: wall seconds "
        "vary with the load; the CPU seconds and the ratios within one process are the comparison.",
        "",
    ] + lines
    lines += ["", "<!-- /DETECTION-SPEED -->"]
    return "\n".join(lines)


def _markdown_job_budget(results: dict) -> str:
    """The JOB-BUDGET section: peak RSS of whole Detect Change jobs against the memory budget."""
    lines = [
        "<!-- JOB-BUDGET -->",
        f"`python tools/bench_speed.py --job-budget-only`, {results['date']}, "
        f"{results['machine']}, torch {results['torch']}; each row a fresh process (read, standardise, train, "
        "detect, write float32 GeoTIFFs; peak RSS of the whole process, engine import included). Seconds "
        "depend on the load of the shared machine; the peak memory does not.",
        "",
        "| size | budget (MB) | allocator | epochs | route | detection | seconds | peak RSS (GB) | "
        "budget + 0.5 GB | within |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["cases"]:
        if "error" in r:
            lines.append(f"| {r.get('case')} | | {r.get('allocator', '')} | | | | | failed: {r['error']} | | |")
            continue
        p = r.get("plan") or {}
        how = (
            "-"
            if not p
            else (
                "whole"
                if p.get("whole")
                else f"tiles of {p.get('tile')}, scratch in "
                + ("memory" if p.get("scratch_in_memory") else "disk files")
            )
        )
        limit = (r["budget_mb"] + 512) / 1024
        lines.append(
            f"| {r['size']} | {r['budget_mb']} | {r.get('allocator', 'system')} | {r['epochs']} | "
            f"{'windows' if r['windowed'] else 'in memory'} | {how} | {_fmt(r['seconds'])} | "
            f"{_fmt(r['peak_rss_gb'], 2)} | {limit:.2f} | {'yes' if r['peak_rss_gb'] <= limit else 'NO'} |"
        )
    lines += ["", "<!-- /JOB-BUDGET -->"]
    return "\n".join(lines)


def _update_benchmarks_md(section: str, tag: str = "SPEED") -> None:
    path = REPO / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"<!-- {tag} -->.*?<!-- /{tag} -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda m: section, text)
    elif tag != "SPEED" and "<!-- /SPEED -->" in text:  # right after the SPEED section
        text = text.replace("<!-- /SPEED -->", "<!-- /SPEED -->\n\n" + section, 1)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def _scale_plan(args) -> list[tuple[list[str], int | None, int, str]]:
    """The --scale-only cases, in order: tiled/whole, the big scene end to end, the job-budget rows."""
    timed: list[tuple[list[str], int | None, int, str]] = [
        (["tiled", "1000", "100"], 2, 1800, "system"),
        (["big", "2000", "224"], 2, 3600, "tcmalloc"),
    ]
    jobs: list[tuple[list[str], int | None, int, str]] = []
    for size in args.job_sizes.split(","):
        side, bands = size.split("x")
        for budget in (1024, 2048, 4096):
            for alloc in ("system", "tcmalloc"):
                jobs.append((["job_budget", side, bands, str(budget), str(args.job_epochs)], 2, 3600, alloc))
    return jobs + timed if args.jobs_first else timed + jobs


def _markdown_scale(results: dict) -> str:
    """The SCALE section: issue 14's three measurements from one run."""
    lines = [
        "<!-- SCALE -->",
        f"`python tools/bench_speed.py --scale-only`, one run: {results['date']} to "
        f"{results.get('end', '(running)')}, {results['machine']}, torch {results['torch']}, "
        f"OMP_NUM_THREADS=2, {results.get('load', 'nothing else running')}. Each case a fresh process; peak RSS "
        "of the whole process (engine import included).",
        "",
    ]
    tiled = [r for r in results["cases"] if r.get("case") == "tiled" and "error" not in r]
    if tiled:
        section = _markdown_detection({**results, "cases": tiled}).splitlines()
        lines += [ln for ln in section[3:] if not ln.startswith("<!--")][:-1]
    for r in results["cases"]:
        if r.get("case") == "big_streamed" and "error" not in r:
            lines += [
                "",
                f"### {r['size']} end to end (int16 GeoTIFFs, default settings, budget "
                f"{r['memory_budget_mb']} MB, {r['allocator']})",
                "",
                "| seconds | read + standardise | train | detect | classic evidence (IR-MAD, CVA) | write | "
                "peak RSS (GB) | route | goal |",
                "|---|---|---|---|---|---|---|---|---|",
                f"| {_fmt(r['seconds'])} | {_fmt(r.get('read_standardise_s'))} | {_fmt(r.get('train_s'))} | "
                f"{_fmt(r.get('detect_s'))} | {_fmt(r.get('classic_s'))} | {_fmt(r.get('write_s'))} | "
                f"{_fmt(r['peak_rss_gb'], 2)} | {'windows' if r.get('windowed') else 'in memory'} | "
                f"<= 150 s: {'met' if r['seconds'] <= 150 else 'not met'} |",
            ]
    jobs = [r for r in results["cases"] if str(r.get("case", "")).startswith("job_budget")]
    if jobs:
        table = _markdown_job_budget({**results, "cases": jobs}).splitlines()
        lines += ["", "### Peak RSS of whole Detect Change jobs against the memory budget", ""]
        lines += [ln for ln in table[3:] if not ln.startswith("<!--")]
    failed = [r for r in results["cases"] if "error" in r and not str(r.get("case", "")).startswith("job_budget")]
    for r in failed:
        lines.append(f"\n{r.get('case')} failed: {r['error']}")
    lines += ["", "<!-- /SCALE -->"]
    return "\n".join(lines)


def _scale_run(args) -> int:
    """Run the --scale-only cases; the record and the SCALE section are rewritten after each case."""
    import torch

    out = Path(args.out).with_name("speed-scale.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "torch": torch.__version__,
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, {platform.python_version()}",
        "cases": [],
    }
    if args.load:
        results["load"] = args.load
    for child, threads, timeout, alloc in _scale_plan(args):
        results["cases"].append(_run_child(child, threads, timeout, alloc))
        out.write_text(json.dumps(results, indent=2))
        _update_benchmarks_md(_markdown_scale(results), "SCALE")
    results["end"] = time.strftime("%H:%M")
    out.write_text(json.dumps(results, indent=2))
    _update_benchmarks_md(_markdown_scale(results), "SCALE")
    print(f"recorded {out} and the SCALE section of BENCHMARKS.md")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    p.add_argument("--big", action="store_true", help="also run the 2000x2000x224 streamed scene (long)")
    p.add_argument("--big-side", type=int, default=2000)
    p.add_argument("--big-tcmalloc", action="store_true", help="run the big scene with tcmalloc preloaded")
    p.add_argument(
        "--big-only",
        action="store_true",
        help="run only the big streamed scene; keep the other results of the last run in the report",
    )
    p.add_argument(
        "--detection-only",
        action="store_true",
        help="run only the tiled-versus-whole and peak-RSS-versus-budget detection cases; keep the other "
        "results of the last run in the report",
    )
    p.add_argument(
        "--job-budget-only",
        action="store_true",
        help="run only the peak-RSS-versus-budget table of whole Detect Change jobs (1024, 2048, 4096 MB; "
        "both allocators; --job-sizes); keep the other results of the last run in the report",
    )
    p.add_argument(
        "--scale-only",
        action="store_true",
        help="issue 14's figures in one run: tiled/whole detection (1000x1000x100), the 2000x2000x224 "
        "scene end to end (default settings, 2 threads, tcmalloc) and the job-budget table "
        "(--job-sizes); written to the SCALE section of BENCHMARKS.md after each case",
    )
    p.add_argument("--job-sizes", default="1500x100,2000x224", help="side x bands of the job-budget pairs")
    p.add_argument("--job-epochs", type=int, default=2, help="training epochs of the job-budget runs")
    p.add_argument(
        "--jobs-first",
        action="store_true",
        help="--scale-only: the job-budget rows (peak RSS, which load does not change) before the timed cases",
    )
    p.add_argument("--load", help="--scale-only: what else ran during the run, for the report's header")
    p.add_argument("--quick", action="store_true", help="only the 307x241x154 paper epochs (a smoke run)")
    p.add_argument("--epochs", type=int, default=2, help="paper epochs per case, the first is the warm-up")
    p.add_argument("--out", default=str(REPO / "bench-results" / "speed.json"))
    args = p.parse_args(argv)

    if args.child:
        kind = args.child[0]
        with tempfile.TemporaryDirectory(prefix="hypernet-bench-") as folder:
            if kind == "paper":
                res = case_paper(
                    args.child[1],
                    int(args.child[2]),
                    args.child[3] == "reuse",
                    args.child[4] if len(args.child) > 4 else "ours",
                )
            elif kind == "detect_default":
                res = case_detect_default(args.child[1], folder)
            elif kind == "big":
                res = case_big(folder, int(args.child[1]), int(args.child[2]))
            elif kind == "tiled":
                res = case_tiled(int(args.child[1]), int(args.child[2]))
            elif kind == "budget":
                res = case_budget(folder, int(args.child[1]), int(args.child[2]), int(args.child[3]))
            elif kind == "job_budget":
                res = case_job_budget(folder, *(int(a) for a in args.child[1:5]))
            else:
                raise SystemExit(f"unknown case {kind}")
        print(json.dumps(res))
        return 0

    import torch

    start = time.perf_counter()
    cases = []
    plan: list[tuple[list[str], int | None, int, str]] = []
    only = args.big_only or args.detection_only or args.job_budget_only or args.scale_only
    for threads in (1, None) if not only else ():
        for ops in ("ours", "published"):
            plan.append((["paper", "307x241x154", str(args.epochs + 1), "reuse", ops], threads, 900, "system"))
        plan.append((["paper", "307x241x154", str(args.epochs + 1), "reuse", "ours"], threads, 900, "tcmalloc"))
    if not args.quick and not only:
        plan.append((["paper", "307x241x154", str(args.epochs + 1), "noreuse"], 1, 900, "system"))
        for ops in ("ours", "published"):  # no page reuse here: 2 x 13.7 GB is over the machine's 23 GB
            plan.append((["paper", "600x500x224", str(args.epochs), "reuse", ops], None, 1800, "system"))
        plan.append((["paper", "600x500x224", str(args.epochs), "reuse", "ours"], None, 1800, "tcmalloc"))
        plan.append((["detect_default", "600x500x224"], 1, 1800, "system"))
        for alloc in ("system", "tcmalloc"):
            plan.append((["detect_default", "600x500x224"], None, 1800, alloc))
    if not args.quick and not args.big_only and not args.detection_only:
        for size in args.job_sizes.split(","):
            side, bands = size.split("x")
            for budget in (1024, 2048, 4096):
                for alloc in ("system", "tcmalloc"):
                    plan.append((["job_budget", side, bands, str(budget), str(args.job_epochs)], 2, 3600, alloc))
    if not args.quick and not args.big_only and not args.job_budget_only:
        plan.append((["tiled", "1000", "100"], 2, 1800, "system"))
        for budget in (1024, 2048, 4096):
            for alloc in ("system", "tcmalloc"):
                plan.append((["budget", "1500", "100", str(budget)], 2, 1800, alloc))
    if (args.big or args.big_only) and not args.detection_only:
        plan.append((["big", str(args.big_side), "224"], 1, 7200, "tcmalloc" if args.big_tcmalloc else "system"))
    if args.scale_only:
        return _scale_run(args)
    for child, threads, timeout, alloc in plan:
        cases.append(_run_child(child, threads, timeout, alloc))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    big_path = out.with_name("speed-big.json")  # {allocator: last record}
    big_recorded = json.loads(big_path.read_text()) if big_path.exists() else {}
    if "case" in big_recorded:  # an older single record
        big_recorded = {big_recorded.get("allocator", "system"): big_recorded}
    for r in cases:
        if r.get("case") == "big_streamed" and "error" not in r:
            r["date"] = time.strftime("%Y-%m-%d")
            big_recorded[r.get("allocator", "system")] = r
            big_path.write_text(json.dumps(big_recorded, indent=2))
    detection = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "torch": torch.__version__,
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, {platform.python_version()}",
        "cases": [r for r in cases if r.get("case") in ("tiled", "budget")],
    }
    if detection["cases"]:
        out.with_name("speed-detection.json").write_text(json.dumps(detection, indent=2))
        _update_benchmarks_md(_markdown_detection(detection), "DETECTION-SPEED")
    jobs = {
        "date": detection["date"],
        "torch": torch.__version__,
        "machine": detection["machine"],
        "cases": [r for r in cases if str(r.get("case", "")).startswith("job_budget")],
    }
    if jobs["cases"]:
        out.with_name("speed-job-budget.json").write_text(json.dumps(jobs, indent=2))
        _update_benchmarks_md(_markdown_job_budget(jobs), "JOB-BUDGET")
    if args.detection_only or args.job_budget_only:
        print(f"recorded the detection / job-budget cases in {out.parent} and BENCHMARKS.md")
        return 0
    if args.big_only and out.exists():  # keep the last full run, with the new big record
        results = json.loads(out.read_text())
        results["big_recorded"], results["big_skipped"] = big_recorded, True
        results["cases"] = [r for r in results["cases"] if r.get("case") != "big_streamed"]
        out.write_text(json.dumps(results, indent=2))
        _update_benchmarks_md(_markdown(results))
        print(f"recorded the big scene in {big_path} and the SPEED section of BENCHMARKS.md")
        return 0
    results = {
        "command": "python tools/bench_speed.py" + (" --big" if args.big else "") + (" --quick" if args.quick else ""),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, {platform.python_version()}",
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
        "cases": cases,
        "big_skipped": not args.big,
        "big_recorded": big_recorded,
        "total_s": time.perf_counter() - start,
    }
    out.write_text(json.dumps(results, indent=2))
    _update_benchmarks_md(_markdown(results))
    print(f"wrote {out} and the SPEED section of BENCHMARKS.md in {results['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
