"""The QGIS-free engine (hypernet_qgis/core) type-checks with mypy, configured in pyproject.toml; `make install`
installs mypy."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _mypy() -> list[str]:
    local = Path(sys.executable).with_name("mypy")
    if local.exists():
        return [str(local)]
    if shutil.which("mypy"):
        return ["mypy"]
    pytest.skip("mypy is not installed (make install installs it)")


def test_core_type_checks():
    proc = subprocess.run(
        [*_mypy(), "--config-file", str(REPO / "pyproject.toml")], capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
