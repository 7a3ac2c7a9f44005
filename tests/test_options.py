"""One set of options for both front ends: the band-list syntax, the defaults and the choices (core/options.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hypernet_qgis.core import options
from hypernet_qgis.core.errors import InputError

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "text, bands", [("1,2,5-8", [1, 2, 5, 6, 7, 8]), (" 3 ; 1 ", [3, 1]), ("", None), (None, None), ("7", [7])]
)
def test_band_lists(text, bands):
    assert options.parse_band_list(text) == bands


@pytest.mark.parametrize(
    "text, words",
    [
        ("1,5-3", "not a band list"),
        ("1,1", "twice"),
        ("0-2", "below 1"),
        ("a", "not a band list"),
        ("1-", "not a band list"),
    ],
)
def test_bad_band_lists_are_refused_by_name(text, words):
    with pytest.raises(InputError, match=words) as info:
        options.parse_band_list(text, "Bands")
    assert str(info.value).startswith("Bands ")


@pytest.mark.parametrize("text", ["1,5-3", "1,1"])
def test_the_cli_refuses_what_qgis_refuses(text, tmp_path):
    """The CLI used to read 1,5-3 as [1] and keep 1,1: now the same parser, exit 2 with one line."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "hypernet_qgis",
            "baseline",
            "cva",
            "a.tif",
            "b.tif",
            "-o",
            str(tmp_path / "c.tif"),
            "--bands",
            text,
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"HYPERNET_ALLOCATOR": "system", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "--bands" in proc.stderr, proc.stderr


def test_train_config_defaults_come_from_options():
    config = options.TrainConfig()
    assert config.learning_rate == options.DEFAULT_LEARNING_RATE and config.gamma == options.DEFAULT_GAMMA
    assert config.memory_budget_mb == options.DEFAULT_MEMORY_BUDGET_MB
    assert config.resolved_epochs() == options.DEFAULT_EPOCHS["default"]
    assert options.TrainConfig(schedule="paper").resolved_epochs() == options.DEFAULT_EPOCHS["paper"]
    from hypernet_qgis.core.hypernet.training import TrainConfig

    assert TrainConfig is options.TrainConfig  # one class, importable without torch from options


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("seed", -1, "SEED"),
        ("seed", 2**40, "SEED"),
        ("memory_budget_mb", 0, "memory budget"),
        ("learning_rate", float("nan"), "LEARNING_RATE"),
        ("gamma", float("inf"), "GAMMA"),
        ("device", "tpu", "device"),
    ],
)
def test_train_config_refuses_bad_values(field, value, words):
    with pytest.raises(InputError, match=words):
        options.TrainConfig(**{field: value}).validate()


def test_options_import_no_torch():
    code = "import sys, hypernet_qgis.core.options; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "False", out.stderr
