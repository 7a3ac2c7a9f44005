"""Issue 12 through the CLI, as a hostile user: outputs over inputs, full disks, signals, bad numbers.

Every case runs the real ``python -m hypernet_qgis`` in a subprocess on real files, and checks the exit code,
that stderr is one line naming the problem, and that no input (hashed before and after) nor old output changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import write_pair
from osgeo import gdal

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "HYPERNET_ALLOCATOR": "system"}


def cli(*args: str, cwd: Path | None = None, preexec=None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hypernet_qgis", *map(str, args)],
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
        preexec_fn=preexec,
    )


def digest(folder: Path) -> dict[str, str]:
    """Name -> sha256 of every file in ``folder`` (hidden files included)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def one_line_error(r: subprocess.CompletedProcess, *words: str, code: int = 2) -> str:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error")]
    assert len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in r.stderr, r.stderr
    for w in words:
        assert w.lower() in errors[0].lower(), (w, errors[0])
    return errors[0]


@pytest.fixture
def pair(tmp_path: Path) -> dict[str, Path]:
    return write_pair(tmp_path)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    p = write_pair(folder)
    model = folder / "m.hypernet"
    r = cli("train", p["t1"], p["t2"], "-o", model, "--epochs", "2", "--device", "cpu", "--quiet")
    assert r.returncode == 0, r.stderr
    return model


# ------------------------------------------------------------------------------ 1. --report over an input


def test_report_never_overwrites_an_input_or_another_output(pair, model_file, tmp_path):
    t1, t2, gt = pair["t1"], pair["t2"], pair["gt"]
    c = tmp_path / "c.tif"
    r = cli("baseline", "cva", t1, t2, "-o", c)
    assert r.returncode == 0, r.stderr
    before = digest(tmp_path)
    model_before = hashlib.sha256(model_file.read_bytes()).hexdigest()
    cases = [
        (["detect", t1, t2, "-o", tmp_path / "d.tif", "--report", t1, "--epochs", "1"], "t1.tif"),
        (["detect", t1, t2, "-o", tmp_path / "d.tif", "--report", tmp_path / "d.tif"], "same path"),
        (["detect", t1, t2, "-o", tmp_path / "d.tif", "--model", model_file, "--report", model_file], "m.hypernet"),
        (["train", t1, t2, "-o", tmp_path / "m2.hypernet", "--report", t2], "t2.tif"),
        (["evaluate", c, gt, "--report", gt], "gt.tif"),
        (["evaluate", c, gt, "--report", c], "c.tif"),
        (["inspect", model_file, "--report", model_file], "m.hypernet"),
        (["baseline", "cva", t1, t2, "-o", t2], "t2.tif"),
        (["baseline", "cva", t1, t2, "-o", tmp_path / "x.tif", "--intensity", tmp_path / "x.tif"], "same path"),
    ]
    for args, word in cases:
        started = time.perf_counter()
        one_line_error(cli(*args), word)
        assert time.perf_counter() - started < 60  # refused before any training
    assert digest(tmp_path) == before
    assert hashlib.sha256(model_file.read_bytes()).hexdigest() == model_before


def test_output_behind_a_vrt_or_a_link_is_refused(pair, tmp_path):
    t1, t2 = pair["t1"], pair["t2"]
    for name in ("t1", "t2"):
        ds = gdal.BuildVRT(str(tmp_path / f"{name}.vrt"), [str(pair[name])])
        ds = None  # noqa: F841
    nested = tmp_path / "nested.vrt"
    gdal.BuildVRT(str(nested), [str(tmp_path / "t1.vrt")]).FlushCache()
    os.link(t1, tmp_path / "hard.tif")
    os.symlink(t2, tmp_path / "soft.tif")
    sub = tmp_path / "sub"
    sub.mkdir()
    before = digest(tmp_path)
    one_line_error(cli("baseline", "cva", tmp_path / "t1.vrt", tmp_path / "t2.vrt", "-o", t1), "t1.vrt", "made of")
    one_line_error(
        cli("baseline", "cva", nested, tmp_path / "t2.vrt", "-o", tmp_path / "x.tif", "--intensity", t1), "nested.vrt"
    )
    one_line_error(cli("baseline", "cva", t1, t2, "-o", tmp_path / "hard.tif"), "t1.tif")
    one_line_error(cli("baseline", "cva", t1, t2, "-o", tmp_path / "soft.tif"), "t2.tif")
    one_line_error(cli("baseline", "cva", t1, t2, "-o", sub / ".." / "t1.tif"), "t1.tif")
    assert digest(tmp_path) == before


# ------------------------------------------------------------------------ 10. errors found before any work


@pytest.mark.parametrize(
    "extra, words",
    [
        (["-o", "{tmp}/missing/c.tif"], ["does not exist"]),
        (["-o", "{tmp}"], ["is a folder"]),
        (["-o", "{tmp}/c.tif", "--report", "{tmp}/missing/r.html"], ["report", "does not exist"]),
        (["-o", "{tmp}/c.tif", "--threshold", "nan"], ["--threshold", "finite"]),
        (["-o", "{tmp}/c.tif", "--threshold", "inf"], ["--threshold", "finite"]),
        (["-o", "{tmp}/c.tif", "--threshold", "1e400"], ["--threshold", "finite"]),
        (["-o", "{tmp}/c.tif", "--memory-budget-mb", "0"], ["--memory-budget-mb", "outside"]),
        (["-o", "{tmp}/c.tif", "--memory-budget-mb", "-5"], ["--memory-budget-mb", "outside"]),
        (["-o", "{tmp}/c.tif", "--seed", "-1"], ["--seed", "outside"]),
        (["-o", "{tmp}/c.tif", "--seed", "99999999999999999999999"], ["--seed", "outside"]),
        (["-o", "{tmp}/c.tif", "--gamma", "nan"], ["--gamma", "finite"]),
        (["-o", "{tmp}/c.tif", "--learning-rate", "0"], ["--learning-rate", "outside"]),
        (["-o", "{tmp}/c.tif", "--epochs", "x"], ["--epochs", "whole number"]),
        (["--output"], ["--output", "expected one argument"]),
    ],
)
def test_detect_refuses_before_training(pair, tmp_path, extra, words):
    args = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    before = digest(tmp_path)
    started = time.perf_counter()
    r = cli("detect", pair["t1"], pair["t2"], *args, "--epochs", "500")
    one_line_error(r, *words)
    assert "usage:" not in r.stderr and "Traceback" not in r.stderr
    assert time.perf_counter() - started < 30, "refused only after training"
    assert digest(tmp_path) == before


def test_read_only_output_is_refused_not_replaced(pair, tmp_path):
    c = tmp_path / "c.tif"
    assert cli("baseline", "cva", pair["t1"], pair["t2"], "-o", c).returncode == 0
    c.chmod(0o444)
    before = digest(tmp_path)
    one_line_error(cli("baseline", "sam", pair["t1"], pair["t2"], "-o", c), "read-only")
    assert digest(tmp_path) == before and (c.stat().st_mode & 0o777) == 0o444


# -------------------------------------------------------------------------------------- 2, 8. a full disk


def _file_size_limit(limit: int):
    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes then fail with EFBIG, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


def test_full_disk_keeps_the_old_outputs_as_a_set(pair, tmp_path):
    """The change map fits, the intensity does not: both old files stay, exit 2, no temporary file left."""
    c, i = tmp_path / "c.tif", tmp_path / "i.tif"
    r = cli("baseline", "cva", pair["t1"], pair["t2"], "-o", c, "--intensity", i)
    assert r.returncode == 0, r.stderr
    assert c.stat().st_size < 3000 < i.stat().st_size
    before = digest(tmp_path)
    r = cli("baseline", "sam", pair["t1"], pair["t2"], "-o", c, "--intensity", i, preexec=_file_size_limit(3000))
    one_line_error(r, "i.tif", "unchanged")
    assert digest(tmp_path) == before  # both old, no leftovers (digest lists hidden files too)
    for path in (c, i):
        ds = gdal.Open(str(path))
        assert ds.GetRasterBand(1).Checksum() >= 0 and gdal.GetLastErrorType() < gdal.CE_Failure
    # nothing there before: nothing there after
    r = cli(
        "baseline",
        "sam",
        pair["t1"],
        pair["t2"],
        "-o",
        tmp_path / "c2.tif",
        "--intensity",
        tmp_path / "i2.tif",
        preexec=_file_size_limit(3000),
    )
    one_line_error(r, "unchanged")
    assert digest(tmp_path) == before


def test_full_disk_while_saving_a_model_or_report(pair, model_file, tmp_path):
    """atomic_file: a full disk is one line, the old model stays whole, no temporary file is left."""
    old = tmp_path / "m.hypernet"
    old.write_bytes(model_file.read_bytes())
    before = digest(tmp_path)
    r = cli(
        "train",
        pair["t1"],
        pair["t2"],
        "-o",
        old,
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--quiet",
        preexec=_file_size_limit(20_000),
    )
    one_line_error(r, "m.hypernet", "nothing was changed")
    assert digest(tmp_path) == before
    r = cli("inspect", old, "--report", tmp_path / "r.html", preexec=_file_size_limit(20_000))
    one_line_error(r, "r.html")
    assert digest(tmp_path) == before


# -------------------------------------------------------------------------------------------- 9. signals


def test_sigterm_during_training_removes_everything(pair, tmp_path):
    before = digest(tmp_path)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hypernet_qgis",
            "detect",
            str(pair["t1"]),
            str(pair["t2"]),
            "-o",
            str(tmp_path / "c.tif"),
            "--intensity",
            str(tmp_path / "i.tif"),
            "--epochs",
            "100000",
            "--device",
            "cpu",
        ],
        cwd=REPO,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = ""
    while "epoch 1/" not in line:
        line = proc.stderr.readline()
        assert line or proc.poll() is None, "the run ended before training"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1] == "terminated: no output was written."
    assert digest(tmp_path) == before


def test_leftovers_of_killed_runs_are_removed(pair, tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    stale = [tmp_path / f".c.tif.{dead}-0123abcd.part.tif", tmp_path / f".i.tif.{dead}-feedbeef.part.tif"]
    live = tmp_path / f".c.tif.{os.getpid()}-89abcdef.part.tif"  # a run still writing: kept
    for p in stale + [live]:
        p.write_bytes(b"x" * 1000)
    r = cli("baseline", "cva", pair["t1"], pair["t2"], "-o", tmp_path / "c.tif", "--intensity", tmp_path / "i.tif")
    assert r.returncode == 0, r.stderr
    assert not any(p.exists() for p in stale) and live.exists()


# ------------------------------------------------------------------------------ 7, 11. grids and messages


def _warped(src: Path, dst: Path, shift: float = 0.0, epsg: int | None = None) -> Path:
    ds = gdal.Translate(str(dst), str(src))
    if shift:
        gt = list(ds.GetGeoTransform())
        gt[0] += shift
        ds.SetGeoTransform(gt)
    if epsg:
        from osgeo import osr

        srs = osr.SpatialReference()
        srs.ImportFromEPSG(epsg)
        ds.SetProjection(srs.ExportToWkt())
    ds = None  # noqa: F841
    return dst


def test_evaluate_refuses_a_reference_on_another_grid(pair, tmp_path):
    c = tmp_path / "c.tif"
    assert cli("baseline", "cva", pair["t1"], pair["t2"], "-o", c).returncode == 0
    assert cli("evaluate", c, pair["gt"]).returncode == 0
    one_line_error(cli("evaluate", c, _warped(pair["gt"], tmp_path / "shift.tif", shift=200.0)), "origins differ")
    one_line_error(
        cli("evaluate", c, _warped(pair["gt"], tmp_path / "geo.tif", epsg=4326)), "coordinate reference systems"
    )


def test_clear_messages(pair, tmp_path):
    # complex input: refused, not silently reduced to its real part
    for name in ("cx.tif", "cx2.tif"):
        ds = gdal.GetDriverByName("GTiff").Create(str(tmp_path / name), 36, 40, 2, gdal.GDT_CFloat32)
        ds.GetRasterBand(1).WriteArray(np.ones((40, 36), np.complex64) * 1j)
        ds = None
    one_line_error(
        cli("baseline", "cva", tmp_path / "cx.tif", tmp_path / "cx2.tif", "-o", tmp_path / "c.tif"), "complex"
    )
    # an all-NaN band is named
    ds = gdal.Translate(str(tmp_path / "nanband.tif"), str(pair["t1"]))
    ds.GetRasterBand(3).WriteArray(np.full((40, 36), np.nan, np.float32))
    ds = None
    one_line_error(
        cli("baseline", "cva", tmp_path / "nanband.tif", pair["t2"], "-o", tmp_path / "c.tif"),
        "band 3",
        "no valid pixel",
        "--bands",
    )
    # a 3x3 pair: the classic method is named, not HyperNet
    for name in ("a", "b"):
        gdal.Translate(str(tmp_path / f"{name}.tif"), str(pair["t2"]), srcWin=[10, 10, 3, 3])
    line = one_line_error(
        cli("baseline", "cva", tmp_path / "a.tif", tmp_path / "b.tif", "-o", tmp_path / "c.tif"),
        "CVA needs at least 8x8",
    )
    assert "HyperNet" not in line


def test_failed_report_says_what_was_written(pair, model_file, tmp_path):
    r = cli(
        "detect",
        pair["t1"],
        pair["t2"],
        "-o",
        tmp_path / "c.tif",
        "--model",
        model_file,
        "--report",
        tmp_path / "r.html",
        preexec=_file_size_limit(20_000),
    )
    line = one_line_error(r, "r.html")
    assert "c.tif was written" in line and (tmp_path / "c.tif").exists() and not (tmp_path / "r.html").exists()
    out = json.loads(cli("evaluate", tmp_path / "c.tif", pair["gt"]).stdout)
    assert out["input_kind"] == "binary"
