"""hypernet:setupengine through qgis_process, for a QGIS whose Python has no torch (the system python3 here), with a
throw-away profile, from an offline source (a folder of wheels) and from the package index (network; skipped with
the reason when pypi.org is unreachable): Detect Change refuses, the set-up installs the engine into the profile,
Detect Change then runs with it (in a child process; the log names the engine folder), uninstall removes it.

The wheel folder is made with `pip download` (torch's CPU wheel from pip's find-links, the rest from the
configured indexes); the test skips when that is impossible (no network and no local wheels).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_qgis_process import QGIS_PROCESS_BIN, assemble_plugin
from test_qgis_support import make_pair, read

SYSTEM_PYTHON = "/usr/bin/python3"
pytestmark = pytest.mark.skipif(
    not QGIS_PROCESS_BIN.exists() or not Path(SYSTEM_PYTHON).exists(),
    reason="qgis_process.bin or the system python3 is missing",
)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> Path:
    """torch (CPU), spectral and QGIS's numpy as files, for the system Python."""
    if subprocess.run([SYSTEM_PYTHON, "-c", "import torch"], capture_output=True).returncode == 0:
        pytest.skip("the system Python already imports torch; this test needs a QGIS Python without it")
    numpy_version = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import numpy; print(numpy.__version__)"], capture_output=True, text=True, check=True
    ).stdout.strip()
    folder = tmp_path_factory.mktemp("wheels")
    import torch

    proc = subprocess.run(
        [
            SYSTEM_PYTHON,
            "-m",
            "pip",
            "download",
            "-q",
            "-d",
            str(folder),
            f"torch=={torch.__version__}",
            "spectral",
            f"numpy=={numpy_version}",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        pytest.skip(f"could not gather the wheels: {proc.stderr.strip().splitlines()[-1:]}")
    return folder


def qgis_process(env: dict, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(QGIS_PROCESS_BIN), *args], env=env, capture_output=True, text=True, timeout=timeout)


def results_of(proc: subprocess.CompletedProcess) -> dict:
    start = proc.stdout.find("{")
    assert proc.returncode == 0 and start >= 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout[start:])["results"]


def _throwaway_qgis(tmp_path: Path) -> tuple[dict, Path]:
    """A QGIS whose Python is the system's (no torch) with a throw-away profile and the plugin enabled."""
    (tmp_path / "plugins").mkdir()
    assemble_plugin(tmp_path / "plugins")
    config = tmp_path / "config"
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "LD_PRELOAD")}
    env.update(
        QGIS_PLUGINPATH=str(tmp_path / "plugins"),
        QGIS_CUSTOM_CONFIG_PATH=str(config),
        PYTHONPATH="/usr/share/qgis/python/plugins",
        QT_QPA_PLATFORM="offscreen",
        XDG_RUNTIME_DIR=str(runtime),
        PATH="/usr/bin:/bin",
    )
    assert qgis_process(env, "plugins", "enable", "hypernet_qgis").returncode == 0
    return env, config


def _install_then_detect(tmp_path: Path, env: dict, config: Path, *setup_args: str) -> tuple[dict, Path]:
    """Detect Change refused, the set-up with ``setup_args``, Detect Change run by the installed engine (in a child
    process, tcmalloc preloaded where installed), uninstall. Returns the set-up's results and the engine folder."""
    files = make_pair(tmp_path / "data")
    detect = (
        "--json",
        "run",
        "hypernet:detectchange",
        "--",
        f"INPUT_T1={files['t1']}",
        f"INPUT_T2={files['t2']}",
        "EPOCHS=2",
        "DEVICE=cpu",
        f"OUTPUT_CHANGE={tmp_path / 'change.tif'}",
    )

    before = qgis_process(env, *detect)  # no torch in QGIS's Python: refused with the way out
    assert before.returncode != 0
    assert "Set up the HyperNet engine" in before.stdout + before.stderr, before.stdout[-2000:] + before.stderr[-2000:]

    setup = results_of(
        qgis_process(env, "--json", "run", "hypernet:setupengine", "--", "ACTION=install", *setup_args, timeout=1800)
    )
    folder = Path(setup["ENGINE_FOLDER"])
    assert folder.is_dir() and str(folder).startswith(str(config / "profiles" / "default" / "hypernet" / "engine"))
    assert (folder / "torch").is_dir() and (folder / "hypernet-engine.json").is_file()
    assert not (folder / "numpy").exists()  # QGIS's numpy stays the only one
    numpy_version = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import numpy; print(numpy.__version__)"], capture_output=True, text=True
    ).stdout.strip()
    assert setup["VERSIONS"].split()[1] == numpy_version  # QGIS's numpy kept
    assert not (tmp_path / "plugins" / "hypernet_qgis" / "torch").exists()  # not in the plugin folder

    run = qgis_process(env, *detect)  # a new QGIS process finds the engine
    after = results_of(run)
    values = read(str(tmp_path / "change.tif"))[0]
    assert after["CHANGED_PIXELS"] == int((values == 1).sum()) > 0 and values.dtype == np.uint8
    log = run.stdout + run.stderr
    assert f"HyperNet engine: torch {setup['VERSIONS'].split()[0]}" in log and str(folder / "torch") in log, log[-3000:]

    gone = results_of(qgis_process(env, "--json", "run", "hypernet:setupengine", "--", "ACTION=uninstall"))
    assert gone["ENGINE_FOLDER"] == str(folder) and not folder.exists()
    return setup, folder


def test_setup_engine_from_a_wheel_folder_then_detect(wheels, tmp_path):
    env, config = _throwaway_qgis(tmp_path)
    env["HYPERNET_ALLOCATOR"] = "system"
    _install_then_detect(tmp_path, env, config, f"SOURCE={wheels}")


def offline_reason() -> str | None:
    """Why the package index cannot be reached from here, or None when it can."""
    try:
        socket.create_connection(("pypi.org", 443), timeout=10).close()
    except OSError as exc:
        return f"offline: pypi.org:443 is not reachable ({exc}); the package-index route needs the network"
    return None


@pytest.mark.network
def test_setup_engine_from_the_package_index_then_detect(tmp_path):
    """The package-index route: no SOURCE, so pip resolves torch, spectral and their dependencies from an index over
    the network. PyTorch's CPU index (download.pytorch.org, the default for the CPU build) is not reachable from
    this project's machines, so the test names PyPI as the index (INDEX_URL) and pins torch to the version the venv
    has (TORCH_VERSION): where pip is configured with a folder of wheels (find-links, as here) it takes torch's CPU
    wheel from there, elsewhere PyPI's build (large)."""
    reason = offline_reason()
    if reason:
        pytest.skip(reason)
    if subprocess.run([SYSTEM_PYTHON, "-c", "import torch"], capture_output=True).returncode == 0:
        pytest.skip("the system Python already imports torch; this test needs a QGIS Python without it")
    import torch

    version = torch.__version__.split("+")[0]
    env, config = _throwaway_qgis(tmp_path)
    setup, folder = _install_then_detect(
        tmp_path, env, config, "VARIANT=cpu", f"TORCH_VERSION={version}", "INDEX_URL=https://pypi.org/simple"
    )
    assert setup["VERSIONS"].split()[0].split("+")[0] == version


def test_bad_version_or_index_is_refused(tmp_path):
    env, config = _throwaway_qgis(tmp_path)
    for arg, pattern in (
        ("TORCH_VERSION=latest", "not a release number"),
        ("INDEX_URL=pypi.org", "not an http(s):// or file:// address"),
    ):
        proc = qgis_process(env, "run", "hypernet:setupengine", "--", "ACTION=install", arg)
        assert proc.returncode != 0 and pattern in proc.stdout + proc.stderr, proc.stdout[-2000:]
    assert not (config / "profiles" / "default" / "hypernet" / "engine").exists() or not any(
        (config / "profiles" / "default" / "hypernet" / "engine").glob("py*-v*/torch")
    )


def test_bad_source_is_refused(tmp_path):
    (tmp_path / "plugins").mkdir()
    assemble_plugin(tmp_path / "plugins")
    env = dict(
        os.environ,
        QGIS_PLUGINPATH=str(tmp_path / "plugins"),
        QGIS_CUSTOM_CONFIG_PATH=str(tmp_path / "c"),
        QT_QPA_PLATFORM="offscreen",
    )
    qgis_process(env, "plugins", "enable", "hypernet_qgis")
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = qgis_process(env, "run", "hypernet:setupengine", "--", "ACTION=install", f"SOURCE={empty}")
    assert proc.returncode != 0 and "holds no wheels" in proc.stdout + proc.stderr, proc.stdout[-2000:]
    assert not (tmp_path / "c" / "profiles" / "default" / "hypernet" / "engine").exists() or not any(
        (tmp_path / "c" / "profiles" / "default" / "hypernet" / "engine").glob("py*-v*/torch")
    )
    assert sys.executable  # the venv's Python is not the one the engine is installed for
