"""The code passes ruff with the settings in pyproject.toml (pycodestyle, pyflakes, import order, bugbear,
pyupgrade) and is laid out as `ruff format` lays it out; `make install` installs ruff."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _ruff() -> list[str]:
    local = Path(sys.executable).with_name("ruff")
    if local.exists():
        return [str(local)]
    if shutil.which("ruff"):
        return ["ruff"]
    pytest.skip("ruff is not installed (make install installs it)")


def test_ruff_is_clean():
    proc = subprocess.run(
        [*_ruff(), "check", "hypernet_qgis", "tests", "tools"], capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_ruff_format_is_clean():
    """`ruff format hypernet_qgis tests tools` changes nothing (run it before committing)."""
    proc = subprocess.run(
        [*_ruff(), "format", "--check", "hypernet_qgis", "tests", "tools"], capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
