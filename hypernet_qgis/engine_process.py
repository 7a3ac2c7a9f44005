"""The engine in a child process: QGIS runs ``python -m hypernet_qgis train|detect ...`` and supervises it.

Why (docs/ARCHITECTURE.md "The engine runs in a child process", BENCHMARKS.md): torch and its libraries never
load into QGIS (QGIS stays at about 180 MB instead of keeping ~1 GB after a detection), a crash in native code
ends the child and leaves QGIS running, cancel is a SIGTERM that the CLI turns into its clean-up (outputs whole or
absent) within the running torch call instead of the rest of an epoch, and the child starts with tcmalloc
preloaded (launch.py), which desktop QGIS could not have.

The child is the Python QGIS runs (engine_setup.interpreter()), seeing what QGIS sees: the private engine folder
first (engine_setup.engine_dir), then this plugin's parent folder, then QGIS's own sys.path. It prints progress
("  40%") and messages on stderr and one JSON summary on stdout (cli.py). This module turns the job's values into
that command line (the same values the in-process front ends pass to core.pipeline), streams stderr into a
Feedback and reads the summary. Standard library only; no QGIS, no torch.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess  # nosec B404: runs QGIS's own Python with a fixed module (-m hypernet_qgis), never a shell
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import engine_setup
from .core.options import DEFAULT_SERIES_TRAINING

#: How long a cancelled engine may take to clean up after SIGTERM before it is killed.
GRACE_SECONDS = 30.0
_PROGRESS = re.compile(r"^\s*(\d{1,3})%$")
PACKAGE_PARENT = str(Path(__file__).resolve().parents[1])


class EngineFailed(RuntimeError):
    """The engine ended with an error; the message is one line for the user."""


class EngineCancelled(RuntimeError):
    """The engine stopped because the job was cancelled; no output was left half-written."""


def engine_python() -> str:
    """The Python that runs the engine: QGIS's own (sys.executable is the QGIS binary in several builds)."""
    return engine_setup.interpreter()


def engine_path(settings_dir: str | os.PathLike | None = None) -> list[str]:
    """The child's sys.path additions: the private engine folder (if installed), this package, QGIS's sys.path."""
    paths: list[str] = []
    if settings_dir is not None and engine_setup.installed(settings_dir) is not None:
        paths.append(str(engine_setup.engine_dir(settings_dir)))
    paths.append(PACKAGE_PARENT)
    paths += [p for p in sys.path if p and os.path.isdir(p)]
    return list(dict.fromkeys(paths))


def engine_environment(
    settings_dir: str | os.PathLike | None = None, base: dict[str, str] | None = None
) -> dict[str, str]:
    """The child's environment: QGIS's (GDAL_DATA, PROJ, PATH for DLLs, ...) with the paths above on PYTHONPATH."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(engine_path(settings_dir))
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    env.pop("PYTHONSTARTUP", None)
    return env


def engine_command(argv: Sequence[str], python: str | None = None) -> list[str]:
    return [python or engine_python(), "-m", "hypernet_qgis", *argv]


def describe(settings_dir: str | os.PathLike | None = None, python: str | None = None) -> str:
    """One log line: which Python runs the engine and where its torch comes from."""
    folder = engine_setup.engine_dir(settings_dir) if settings_dir is not None else None
    where = (
        f"the engine folder {folder}"
        if folder is not None and engine_setup.installed(settings_dir)
        else "the Python packages QGIS sees"
    )
    return f"Running the HyperNet engine in a separate process: {python or engine_python()}, torch from {where}."


# ------------------------------------------------------------------------------------------ command lines


def _training(values: dict[str, Any]) -> list[str]:
    """The bands, known-unchanged mask and training settings (the CLI's "training" group)."""
    argv: list[str] = []
    if values.get("bands"):
        argv += ["--bands", ",".join(str(b) for b in values["bands"])]
    if values.get("mask"):
        argv += ["--unchanged-mask", values["mask"]]
    config = values.get("config") or {}
    for key, flag in (
        ("epochs", "--epochs"),
        ("seed", "--seed"),
        ("device", "--device"),
        ("schedule", "--schedule"),
        ("learning_rate", "--learning-rate"),
        ("gamma", "--gamma"),
        ("width", "--width"),
        ("memory_budget_mb", "--memory-budget-mb"),
    ):
        if config.get(key) is not None:
            argv += [flag, repr(config[key]) if isinstance(config[key], float) else str(config[key])]
    return argv


def _grid_and_bands(values: dict[str, Any]) -> list[str]:
    """Grid alignment and the bad/water bands (train, detect, series)."""
    argv = [
        "--align" if values.get("align", True) else "--no-align",
        "--resampling",
        values.get("resampling") or "bilinear",
    ]
    if not values.get("drop_bad_bands", True):
        argv.append("--keep-bad-bands")
    if values.get("drop_water"):
        argv.append("--drop-water")
    return argv


def _common(values: dict[str, Any]) -> list[str]:
    """Training settings, grid alignment, bad/water bands and the report (train and detect)."""
    argv = _training(values) + _grid_and_bands(values)
    if values.get("report"):
        argv += ["--report", values["report"]]
    return argv


def train_argv(values: dict[str, Any]) -> list[str]:
    """``train`` for Train HyperNet's job values (t1, t2, model, bands, mask, config, align, ..., report)."""
    return ["train", values["t1"], values["t2"], "--output", values["model"], *_common(values)]


def detect_argv(values: dict[str, Any]) -> list[str]:
    """``detect`` for Detect Change's job values (the keys of DetectChangeAlgorithm.resolve)."""
    argv = ["detect", values["t1"], values["t2"], "--output", values["change"], *_common(values)]
    if values.get("intensity"):
        argv += ["--intensity", values["intensity"]]
    if values.get("model"):
        argv += ["--model", values["model"]]
    if values.get("model_out"):
        argv += ["--save-model", values["model_out"]]
    method = values.get("threshold") or "auto"
    argv += ["--threshold", repr(float(values["threshold_value"])) if method == "fixed" else method]
    argv += ["--evidence", values.get("evidence") or "fused"]
    if values.get("polygons"):
        argv += [
            "--polygons",
            values["polygons"],
            "--min-area",
            repr(float(values.get("min_area") or 0.0)),
            "--connectivity",
            str(values.get("connectivity", 8)),
        ]
        if values.get("sieve"):
            argv.append("--sieve")
        if values.get("dates"):
            argv += ["--dates", ",".join(values["dates"])]
    return argv


def series_argv(values: dict[str, Any]) -> list[str]:
    """``series`` for Detect change in a time series' job values with the HyperNet method."""
    argv = [
        "series",
        *values["images"],
        "--output-dir",
        values["folder"],
        "--method",
        "hypernet",
        "--training",
        values.get("training") or DEFAULT_SERIES_TRAINING,
        *_training(values),
        *_grid_and_bands(values),
    ]
    if values.get("dates"):
        argv += ["--dates", ",".join(values["dates"])]
    if values.get("model"):
        argv += ["--model", values["model"]]
    method = values.get("threshold") or "default"
    if method == "fixed":
        argv += ["--threshold", repr(float(values["threshold_value"]))]
    elif method != "default":
        argv += ["--threshold", method]
    if values.get("polygons"):
        argv.append("--polygons")
    argv += [
        "--min-area",
        repr(float(values.get("min_area") or 0.0)),
        "--connectivity",
        str(values.get("connectivity", 8)),
    ]
    return argv


# ---------------------------------------------------------------------------------------------- running


def _reader(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line.rstrip("\r\n"))
    lines.put(None)


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(code).name
    except ValueError:
        return f"signal {code}"


def run_engine(
    argv: Sequence[str],
    feedback,
    *,
    settings_dir: str | os.PathLike | None = None,
    python: str | None = None,
    grace: float = GRACE_SECONDS,
) -> dict[str, Any]:
    """Run ``python -m hypernet_qgis <argv>`` and return its JSON summary. Progress and messages go to ``feedback``
    (core.progress.Feedback). Cancel: SIGTERM (the CLI removes what it had started), SIGKILL after ``grace`` s.
    Raises EngineCancelled, or EngineFailed with the engine's one-line message."""
    cmd = engine_command(argv, python)
    kwargs: dict[str, Any] = {}
    if os.name == "nt":
        kwargs["creationflags"] = getattr(subprocess, "CREATE_NO_WINDOW", 0)
    else:
        kwargs["start_new_session"] = True  # Ctrl-C in a terminal that started QGIS is not the engine's
    try:
        # nosec B603: QGIS's own Python, the fixed module hypernet_qgis, arguments from checked job values
        proc = subprocess.Popen(
            cmd,
            env=engine_environment(settings_dir),
            stdout=subprocess.PIPE,  # nosec B603
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            encoding="utf-8",
            errors="replace",
            **kwargs,
        )
    except OSError as exc:
        raise EngineFailed(
            f"Could not start the HyperNet engine ({cmd[0]}: {exc}). Run Set up the HyperNet "
            "engine (hypernet:setupengine)."
        ) from None
    out_lines: list[str] = []
    out_thread = threading.Thread(target=lambda: out_lines.extend(proc.stdout), daemon=True)
    out_thread.start()
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_reader, args=(proc.stderr, lines), daemon=True).start()
    errors: list[str] = []
    tail: list[str] = []
    terminated_at = None
    stderr_open = True
    while stderr_open or proc.poll() is None:
        try:
            line = lines.get(timeout=0.1)
        except queue.Empty:
            line = ""
        if line is None:
            stderr_open = False
        elif line:
            match = _PROGRESS.match(line)
            if match:
                feedback.set_progress(min(100, int(match.group(1))) / 100.0)
            else:
                feedback.info(line)
                tail = (tail + [line])[-20:]
                if line.startswith("error: "):
                    errors.append(line[len("error: ") :])
        if terminated_at is None and feedback.is_cancelled() and proc.poll() is None:
            terminated_at = time.monotonic()
            proc.terminate()  # SIGTERM: the CLI unwinds (temporary files removed, nothing half-written)
        elif terminated_at is not None and proc.poll() is None and time.monotonic() - terminated_at > grace:
            proc.kill()
        if not stderr_open and proc.poll() is None:
            time.sleep(0.05)
    code = proc.wait()
    out_thread.join(timeout=5)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    if terminated_at is not None or code in (130, 128 + 15):
        raise EngineCancelled("Cancelled; no output was written.")
    if code == 0:
        text = "".join(out_lines)
        start = text.find("{")
        try:
            return json.loads(text[start:]) if start >= 0 else {}
        except ValueError:
            raise EngineFailed(f"The HyperNet engine gave no readable summary: {text.strip()[-300:]!r}") from None
    if errors:
        raise EngineFailed(" ".join(errors))
    if code < 0:
        raise EngineFailed(
            f"The HyperNet engine stopped abnormally ({_signal_name(-code)}); QGIS keeps running and "
            "no output was written. Run it again; if it repeats, run Set up the HyperNet engine "
            "with Action = repair."
        )
    last = next((ln for ln in reversed(tail) if ln.strip()), f"exit code {code}")
    raise EngineFailed(f"The HyperNet engine failed (exit code {code}): {last}")
