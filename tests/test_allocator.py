"""The caching allocator of the command-line tools: found, preloaded by `python -m hypernet_qgis`, switchable off."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hypernet_qgis.core.hypernet import allocator

REPO = Path(__file__).resolve().parents[1]
TCMALLOC = allocator.find_tcmalloc()
needs_tcmalloc = pytest.mark.skipif(TCMALLOC is None, reason="tcmalloc is not installed (libtcmalloc-minimal4)")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", allocator.ENV_CHOICE, allocator.ENV_DONE)}
    env.update(extra)
    return env


def test_find_tcmalloc_in_given_folders(tmp_path):
    assert allocator.find_tcmalloc((str(tmp_path),)) is None
    (tmp_path / "libtcmalloc_minimal.so.4").write_bytes(b"")
    assert allocator.find_tcmalloc((str(tmp_path),)) == str(tmp_path / "libtcmalloc_minimal.so.4")


@needs_tcmalloc
def test_preload_environment_rules():
    env = allocator.preload_environment(clean_env(LD_PRELOAD="/opt/other.so"))
    assert env is not None and env["LD_PRELOAD"] == f"{TCMALLOC}:/opt/other.so" and env[allocator.ENV_DONE] == "1"
    assert int(env["TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD"]) > 2**40  # no report per large tensor on stderr
    assert allocator.preload_environment(clean_env(HYPERNET_ALLOCATOR="system")) is None
    assert allocator.preload_environment(clean_env(**{allocator.ENV_DONE: "1"})) is None  # tried once: no loop


def _train_log(env: dict[str, str], tmp_path: Path, synthetic_pair) -> str:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "hypernet_qgis",
            "train",
            str(synthetic_pair["t1"]),
            str(synthetic_pair["t2"]),
            "--output",
            str(tmp_path / "m.hypernet"),
            "--epochs",
            "1",
            "--device",
            "cpu",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "large alloc" not in out.stderr
    return out.stderr


@needs_tcmalloc
def test_cli_runs_with_tcmalloc_unless_told_not_to(tmp_path, synthetic_pair):
    assert "tcmalloc allocator" in _train_log(clean_env(), tmp_path, synthetic_pair)
    assert "system allocator" in _train_log(clean_env(HYPERNET_ALLOCATOR="system"), tmp_path, synthetic_pair)


def test_this_process_reports_its_allocator():
    assert allocator.allocator_in_use() in ("system", "tcmalloc", "jemalloc")
    if not os.environ.get("LD_PRELOAD"):
        assert allocator.allocator_in_use() == "system"
