"""``python -m hypernet_qgis``: the forms scripts rely on, JSON output, exit code 2 with one line on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hypernet_qgis", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def test_help_lists_every_command():
    out = cli("--help")
    assert out.returncode == 0
    for word in ("detect", "train", "evaluate", "baseline", "inspect", "examples"):
        assert word in out.stdout


def test_train_detect_evaluate_baseline(synthetic_pair, tmp_path):
    t1, t2, gt = (str(synthetic_pair[k]) for k in ("t1", "t2", "gt"))
    model, change, inten = tmp_path / "m.hypernet", tmp_path / "c.tif", tmp_path / "i.tif"
    r = cli("train", t1, t2, "--output", str(model), "--epochs", "3", "--seed", "1", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["model"] == str(model) and "epoch 3/3" in r.stderr
    r = cli(
        "detect",
        t1,
        t2,
        "--output",
        str(change),
        "--intensity",
        str(inten),
        "--model",
        str(model),
        "--threshold",
        "kmeans",
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    from osgeo import gdal

    cmap = gdal.Open(str(change)).ReadAsArray()
    assert summary["changed_pixels"] == int((cmap == 1).sum()) and inten.exists()
    assert int((cmap == 255).sum()) == 9  # T1's nodata corner
    assert 0 < summary["changed_pixels"] < 0.5 * (cmap != 255).sum()
    assert summary["changed_fraction"] == pytest.approx(summary["changed_pixels"] / (cmap != 255).sum(), abs=1e-6)
    r = cli("detect", t1, t2, "--output", str(change), "--epochs", "2", "--threshold", "0.5", "--quiet")
    assert r.returncode == 0 and r.stderr == ""
    r = cli("evaluate", str(change), gt, "--changed", "1", "--unchanged", "0")
    assert r.returncode == 0, r.stderr
    assert set(json.loads(r.stdout)) >= {"OA", "kappa", "F1", "precision", "recall", "AUC"}
    for method in ("cva", "sam", "irmad", "pcakmeans"):
        r = cli("baseline", method, t1, t2, "--output", str(tmp_path / f"{method}.tif"))
        assert r.returncode == 0, r.stderr
    r = cli("inspect", str(model))
    assert r.returncode == 0 and json.loads(r.stdout)["band_count"] == 8


@pytest.mark.parametrize(
    "args, message",
    [
        (["detect", "missing1.tif", "missing2.tif", "--output", "x.tif"], "missing1.tif"),
        (["inspect", "no-such-model.pt"], "no-such-model.pt"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, message, tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "hypernet_qgis", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], r.stderr


def test_output_equal_to_input_is_refused(synthetic_pair):
    t1 = str(synthetic_pair["t1"])
    r = cli("detect", t1, str(synthetic_pair["t2"]), "--output", t1)
    assert r.returncode == 2 and "error:" in r.stderr


def test_classic_and_evaluate_run_without_torch(synthetic_pair, tmp_path):
    """torch made absent (a meta-path blocker, as in test_qgis_torch_missing): baseline and evaluate still work,
    detect exits 2 with one line naming the missing package."""
    import os

    from test_qgis_torch_missing import BLOCKER

    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        BLOCKER + "\nimport atexit\natexit.register(lambda: "
        "sys.stderr.write('TORCH LOADED\\n') if 'torch' in sys.modules else None)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(blocker), str(REPO), os.environ.get("PYTHONPATH", "")]))

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "hypernet_qgis", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )

    t1, t2, gt = (str(synthetic_pair[k]) for k in ("t1", "t2", "gt"))
    change = tmp_path / "cva.tif"
    r = run("baseline", "cva", t1, t2, "--output", str(change))
    assert r.returncode == 0 and change.is_file(), r.stderr
    r = run("evaluate", str(change), gt)
    assert r.returncode == 0 and "kappa" in json.loads(r.stdout), r.stderr
    assert "TORCH LOADED" not in r.stderr
    r = run("detect", t1, t2, "--output", str(tmp_path / "hn.tif"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "'torch'" in r.stderr, r.stderr
    assert not (tmp_path / "hn.tif").exists()
