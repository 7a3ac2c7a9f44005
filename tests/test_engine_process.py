"""The engine in a child process (hypernet_qgis/engine_process.py): the QGIS job values become the CLI command line
that means the same thing, QGIS never loads torch, progress streams, cancel is SIGTERM with nothing half-written,
and a crash of the engine leaves the caller running with a message."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_qgis_support import make_pair, read

from hypernet_qgis import cli, engine_process

REPO = Path(__file__).resolve().parents[1]


def _values(tmp: Path, **extra) -> dict:
    values = {
        "t1": "/d/t1.tif",
        "t2": "/d/t2.tif",
        "bands": [1, 2, 5, 6],
        "model": None,
        "mask": "/d/mask.tif",
        "threshold": "fixed",
        "threshold_value": 0.123456789012345,
        "evidence": "hypernet",
        "config": {
            "epochs": 7,
            "learning_rate": 0.0123,
            "gamma": 1.5,
            "seed": 42,
            "device": "cpu",
            "schedule": "paper",
            "memory_budget_mb": 1024,
        },
        "align": False,
        "resampling": "cubic",
        "drop_bad_bands": False,
        "drop_water": True,
        "change": str(tmp / "c.tif"),
        "intensity": str(tmp / "i.tif"),
        "model_out": str(tmp / "m.hypernet"),
        "report": str(tmp / "r.html"),
        "polygons": str(tmp / "p.gpkg"),
        "min_area": 900.0,
        "connectivity": 4,
        "sieve": True,
        "dates": ("2019-05-01", "2020-05-01"),
    }
    values.update(extra)
    return values


def test_detect_values_become_the_same_cli_arguments(tmp_path):
    values = _values(tmp_path)
    args = cli.build_parser().parse_args(engine_process.detect_argv(values))
    assert (args.command, args.t1, args.t2, args.output) == ("detect", values["t1"], values["t2"], values["change"])
    assert args.bands == values["bands"] and args.unchanged_mask == values["mask"]
    assert float(args.threshold) == values["threshold_value"]  # exact: repr() round-trips
    assert args.evidence == "hypernet" and args.intensity == values["intensity"]
    assert args.save_model == values["model_out"] and args.report == values["report"] and args.model is None
    assert (
        args.epochs,
        args.learning_rate,
        args.gamma,
        args.seed,
        args.device,
        args.schedule,
        args.memory_budget_mb,
    ) == (7, 0.0123, 1.5, 42, "cpu", "paper", 1024)
    assert (args.align, args.resampling, args.keep_bad_bands, args.drop_water) == (False, "cubic", True, True)
    assert (args.polygons, args.min_area, args.connectivity, args.sieve, args.dates) == (
        values["polygons"],
        900.0,
        4,
        True,
        "2019-05-01,2020-05-01",
    )
    plain = cli.build_parser().parse_args(
        engine_process.detect_argv(
            _values(
                tmp_path,
                threshold="auto",
                threshold_value=None,
                bands=None,
                mask=None,
                polygons=None,
                sieve=False,
                align=True,
                drop_bad_bands=True,
                drop_water=False,
                model="/d/m.hypernet",
                model_out=None,
            )
        )
    )
    assert (plain.threshold, plain.bands, plain.polygons, plain.align, plain.keep_bad_bands, plain.model) == (
        "auto",
        None,
        None,
        True,
        False,
        "/d/m.hypernet",
    )


def test_train_values_become_the_same_cli_arguments(tmp_path):
    values = _values(tmp_path, model=str(tmp_path / "m.hypernet"))
    args = cli.build_parser().parse_args(engine_process.train_argv(values))
    assert (args.command, args.output, args.bands, args.epochs, args.schedule, args.report) == (
        "train",
        values["model"],
        [1, 2, 5, 6],
        7,
        "paper",
        values["report"],
    )


def test_series_values_become_the_same_cli_arguments(tmp_path):
    values = {
        "images": ["/d/a.tif", "/d/b.tif", "/d/c.tif"],
        "folder": str(tmp_path),
        "method": "hypernet",
        "dates": ["2019-05-01", "2020-05-01", "2021-05-01"],
        "model": "/d/m.hypernet",
        "bands": [3, 4],
        "threshold": "fixed",
        "threshold_value": 0.25,
        "config": {"epochs": 4, "seed": 3, "device": "cpu", "memory_budget_mb": 2048},
        "polygons": True,
        "min_area": 450.0,
        "connectivity": 4,
    }
    args = cli.build_parser().parse_args(engine_process.series_argv(values))
    assert (args.command, args.images, args.output_dir, args.method) == (
        "series",
        values["images"],
        str(tmp_path),
        "hypernet",
    )
    assert (args.dates, args.model, args.bands, args.threshold) == (
        "2019-05-01,2020-05-01,2021-05-01",
        "/d/m.hypernet",
        [3, 4],
        "0.25",
    )
    assert (args.epochs, args.seed, args.device, args.memory_budget_mb) == (4, 3, "cpu", 2048)
    assert (args.polygons, args.min_area, args.connectivity) == (True, 450.0, 4)
    default = cli.build_parser().parse_args(
        engine_process.series_argv({**values, "threshold": "default", "dates": None, "model": None, "polygons": False})
    )
    assert (default.threshold, default.dates, default.model, default.polygons) == (None, None, None, False)


class Recorder:
    """core.progress.Feedback that records, and cancels or crashes the engine once it computes."""

    def __init__(self, action: str = "") -> None:
        self.action, self.progress, self.lines, self.cancel_at = action, [], [], None

    def set_progress(self, fraction: float) -> None:
        self.progress.append(fraction)
        if self.action == "crash" and fraction > 0.05:
            for pid in _children():
                os.kill(pid, signal.SIGSEGV)  # what a crash in torch's native code does to the process
            self.action = ""

    def info(self, message: str) -> None:
        self.lines.append(message)

    def is_cancelled(self) -> bool:
        if self.action == "cancel" and self.cancel_at is None and any(p > 0.05 for p in self.progress):
            self.cancel_at = time.monotonic()
        return self.cancel_at is not None


def _children() -> list[int]:
    """This process's child processes (Linux /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == os.getpid():
                out.append(int(entry.name))
    return out


def test_the_engine_runs_in_a_child_and_streams_its_log(tmp_path):
    files = make_pair(tmp_path / "data")
    fb = Recorder()
    summary = engine_process.run_engine(
        ["detect", files["t1"], files["t2"], "--output", str(tmp_path / "c.tif"), "--epochs", "2", "--device", "cpu"],
        fb,
    )
    values = read(str(tmp_path / "c.tif"))[0]
    assert summary["changed_pixels"] == int((values == 1).sum()) > 0
    assert fb.progress and fb.progress[-1] == 1.0 and fb.progress == sorted(fb.progress)
    engine = next(line for line in fb.lines if line.startswith("HyperNet engine: torch "))
    assert "allocator" in engine and os.path.sep + "torch" in engine  # where the engine lives, which allocator
    assert any(line.startswith("Detecting on CPU") for line in fb.lines)  # which device


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGTERM/SIGSEGV semantics are POSIX")
def test_cancel_is_prompt_and_leaves_no_output(tmp_path):
    files = make_pair(tmp_path / "data", size=96, bands=32)
    fb = Recorder("cancel")
    change = tmp_path / "c.tif"
    with pytest.raises(engine_process.EngineCancelled):
        engine_process.run_engine(
            [
                "detect",
                files["t1"],
                files["t2"],
                "--output",
                str(change),
                "--epochs",
                "400",
                "--schedule",
                "paper",
                "--device",
                "cpu",
            ],
            fb,
        )
    latency = time.monotonic() - fb.cancel_at
    assert latency < 15, latency  # SIGTERM ends the engine within one torch operation, not one job
    assert not change.exists() and not any(p.name.startswith(("c.tif", ".c.tif")) for p in tmp_path.iterdir())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGTERM/SIGSEGV semantics are POSIX")
def test_a_crashing_engine_leaves_the_caller_running(tmp_path):
    files = make_pair(tmp_path / "data", size=96, bands=32)
    change = tmp_path / "c.tif"
    with pytest.raises(engine_process.EngineFailed, match="SIGSEGV.*QGIS keeps running"):
        engine_process.run_engine(
            [
                "detect",
                files["t1"],
                files["t2"],
                "--output",
                str(change),
                "--epochs",
                "400",
                "--schedule",
                "paper",
                "--device",
                "cpu",
            ],
            Recorder("crash"),
        )
    assert not change.exists()


def test_an_engine_error_is_its_one_line_message(tmp_path):
    files = make_pair(tmp_path / "data")
    with pytest.raises(engine_process.EngineFailed) as caught:
        engine_process.run_engine(["detect", files["t1"], files["t1"], "--output", str(tmp_path / "c.tif")], Recorder())
    assert "\n" not in str(caught.value) and "Traceback" not in str(caught.value)
    assert "same" in str(caught.value).lower(), caught.value


QGIS_SCRIPT = r'''
import json, sys
sys.path[:0] = [sys.argv[1], "/usr/share/qgis/python/plugins"]
from qgis.core import QgsApplication, QgsProcessingFeedback
QgsApplication.setPrefixPath("/usr", True)
app = QgsApplication([], False)
app.initQgis()
from processing.core.Processing import Processing
Processing.initialize()
import processing
import hypernet_qgis
plugin = hypernet_qgis.classFactory(None)
plugin.initProcessing()


class Log(QgsProcessingFeedback):
    lines = []
    def pushInfo(self, info):
        self.lines.append(info)


fb = Log()
t1, t2, out = sys.argv[2:5]
res = processing.run("hypernet:detectchange", {"INPUT_T1": t1, "INPUT_T2": t2, "EPOCHS": 2, "DEVICE": "cpu",
                                               "OUTPUT_CHANGE": out}, feedback=fb)
print("RESULT " + json.dumps({"torch_in_qgis": "torch" in sys.modules, "changed": res["CHANGED_PIXELS"],
                              "log": fb.lines}))
'''


def test_detect_change_in_qgis_never_loads_torch_into_qgis(tmp_path):
    files = make_pair(tmp_path / "data")
    out = tmp_path / "c.tif"
    proc = subprocess.run(
        [sys.executable, "-c", QGIS_SCRIPT, str(REPO), files["t1"], files["t2"], str(out)],
        env=dict(os.environ, QT_QPA_PLATFORM="offscreen"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(line[len("RESULT ") :])
    assert result["torch_in_qgis"] is False
    assert result["changed"] == int((read(str(out))[0] == 1).sum()) > 0
    log = "\n".join(result["log"])
    assert "Running the HyperNet engine in a separate process" in log and "HyperNet engine: torch" in log, log
