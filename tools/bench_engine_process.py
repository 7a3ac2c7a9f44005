#!/usr/bin/env python3
"""In-process engine vs the engine in a child process (issue 13, item 2): what QGIS keeps, cancel, crashes, tcmalloc.

Each measurement runs in fresh processes. The "host" stands in for QGIS: a Python process that has imported
qgis.core and started a QgsApplication (offscreen), then runs one Detect Change (training on the pair) either in
its own process (core.pipeline.detect_files, what the plugin did up to 0.1) or as ``python -m hypernet_qgis detect``
in a child process, supervised the way the QGIS algorithms do it (hypernet_qgis/engine_process.py).

1. rss:    the host's resident memory before and after the job (and the child's peak), torch loaded in the host?
2. cancel: seconds from the cancel request to the job's end, in process (Feedback.is_cancelled turns True, the
           engine checks it between steps) and in the child (SIGTERM); outputs absent afterwards?
3. crash:  SIGSEGV in the middle of the job (as a crash in torch's native code would): does the host survive?
4. alloc:  a training run (paper schedule) in the child with glibc's allocator and with tcmalloc preloaded.

    .venv/bin/python tools/bench_engine_process.py --size 300 --bands 100 --json bench-results/engine-process.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

HOST = r'''
import json, os, resource, signal, subprocess, sys, threading, time
sys.path[:0] = [sys.argv[1], "/usr/share/qgis/python/plugins"]
mode, t1, t2, out, epochs, schedule, action = sys.argv[2:9]


def rss_mb():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024


from qgis.core import QgsApplication
QgsApplication.setPrefixPath("/usr", True)
app = QgsApplication([], False)
app.initQgis()
result = {"mode": mode, "rss_start_mb": round(rss_mb(), 1)}


class Canceller:
    """Feedback whose user presses Cancel 1.5 s after the first epoch ended (mid-epoch, as a user would)."""
    def __init__(self):
        self.cancel_at = None
        self.progress = 0.0
    def set_progress(self, f):
        if action == "cancel" and f > 0.05 and self.progress <= 0.05:
            threading.Timer(1.5, self.press).start()
        self.progress = f
    def press(self):
        self.cancel_at = time.monotonic()
    def info(self, m):
        pass
    def is_cancelled(self):
        return self.cancel_at is not None


started = time.monotonic()
if mode == "inprocess":
    from hypernet_qgis.core import pipeline
    from hypernet_qgis.core.errors import Cancelled
    from hypernet_qgis.core.options import TrainConfig

    class Feedback(Canceller):
        def set_progress(self, f):
            super().set_progress(f)
            if action == "crash" and f > 0.05:
                os.kill(os.getpid(), signal.SIGSEGV)

    fb = Feedback()
    try:
        pipeline.detect_files(t1, t2, out, config=TrainConfig(epochs=int(epochs), schedule=schedule, device="cpu"),
                              feedback=fb)
        result["status"] = "done"
    except Cancelled:
        result["status"] = "cancelled"
        result["cancel_latency_s"] = round(time.monotonic() - fb.cancel_at, 3)
else:
    from hypernet_qgis import engine_process

    Feedback = Canceller

    fb = Feedback()
    argv = ["detect", t1, t2, "--output", out, "--epochs", epochs, "--schedule", schedule, "--device", "cpu"]
    if action == "crash":
        argv.append("--quiet")
    try:
        if action == "crash":  # a native crash in the engine: SIGSEGV to the child once it computes
            proc = subprocess.Popen(engine_process.engine_command(argv), env=engine_process.engine_environment(),
                                    stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            time.sleep(8)
            proc.send_signal(signal.SIGSEGV)
            proc.wait()
            raise engine_process.EngineFailed(f"exit {proc.returncode}")
        summary = engine_process.run_engine(argv, fb)
        result["status"] = "done"
    except engine_process.EngineCancelled:
        result["status"] = "cancelled"
        result["cancel_latency_s"] = round(time.monotonic() - fb.cancel_at, 3)
    except engine_process.EngineFailed as exc:
        result["status"] = f"engine failed, host alive: {exc}"
    result["child_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
result["seconds"] = round(time.monotonic() - started, 2)
result["rss_end_mb"] = round(rss_mb(), 1)
result["host_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
result["torch_in_host"] = "torch" in sys.modules
result["output_exists"] = os.path.exists(out)
print("RESULT " + json.dumps(result), flush=True)
'''


def make_pair(folder: Path, size: int, bands: int) -> tuple[str, str]:
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import write_pair

    paths = write_pair(folder, bands=bands, rows=size, cols=size, nodata_corner=False)
    return str(paths["t1"]), str(paths["t2"])


def host(mode: str, t1: str, t2: str, out: Path, epochs: int, schedule: str, action: str = "run") -> dict:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", HYPERNET_ALLOCATOR="system")
    env.pop("LD_PRELOAD", None)  # the host runs with glibc's allocator, like QGIS desktop
    proc = subprocess.run(
        [sys.executable, "-c", HOST, str(REPO), mode, t1, t2, str(out), str(epochs), schedule, action],
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        return {
            "mode": mode,
            "action": action,
            "host_exit": proc.returncode,
            "host_alive": False,
            "stderr_tail": proc.stderr.strip().splitlines()[-2:],
        }
    result = json.loads(line[len("RESULT ") :])
    result.update(action=action, host_exit=proc.returncode, host_alive=True)
    if out.exists():
        out.unlink()
    return result


def train_seconds(t1: str, t2: str, out: Path, epochs: int, allocator: str) -> dict:
    env = dict(os.environ, HYPERNET_ALLOCATOR=allocator)
    env.pop("LD_PRELOAD", None)
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "hypernet_qgis",
            "train",
            t1,
            t2,
            "--output",
            str(out),
            "--epochs",
            str(epochs),
            "--schedule",
            "paper",
            "--device",
            "cpu",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    device = next((ln for ln in proc.stderr.splitlines() if ln.startswith("Training HyperNet on")), "")
    return {
        "allocator": allocator,
        "training_s": summary["seconds"],
        "wall_s": round(time.monotonic() - started, 1),
        "log": device.split(":")[0],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=300, help="rows = columns of the synthetic pair")
    parser.add_argument("--bands", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=5, help="epochs of the detection's training")
    parser.add_argument("--train-epochs", type=int, default=2, help="paper-schedule epochs of the allocator run")
    parser.add_argument("--only", nargs="*", default=["rss", "cancel", "crash", "alloc"])
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="hypernet-engine-bench-"))
    t1, t2 = make_pair(work, args.size, args.bands)
    out = work / "change.tif"
    results: dict = {"pair": f"{args.size}x{args.size}x{args.bands}", "load": os.getloadavg()[0]}
    if "rss" in args.only:
        results["rss"] = [host(m, t1, t2, out, args.epochs, "default") for m in ("inprocess", "child")]
    if "cancel" in args.only:
        results["cancel"] = [host(m, t1, t2, out, 3, "paper", "cancel") for m in ("inprocess", "child")]
    if "crash" in args.only:
        results["crash"] = [host(m, t1, t2, out, 3, "paper", "crash") for m in ("inprocess", "child")]
    if "alloc" in args.only:
        results["alloc"] = [
            train_seconds(t1, t2, work / "m.hypernet", args.train_epochs, a) for a in ("system", "tcmalloc")
        ]
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
