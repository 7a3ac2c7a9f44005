"""qgis_process through the wrapper (tools/qgis_process.in): train then detect on real files, from another folder.

The wrapper is generated from the template exactly as ``make install`` does (@REPO@ replaced), for a repository
folder in tmp whose .venv is this checkout's and whose build/hypernet_qgis is assembled from the current sources
(as ``make plugin`` does), so the test always runs the code under test. QGIS settings go to a profile in tmp
(QGIS_CUSTOM_CONFIG_PATH), never to the user's.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from test_qgis_support import CHANGED, GEOTRANSFORM, hashes, make_pair, read, same_crs

REPO = Path(__file__).resolve().parents[1]
QGIS_PROCESS_BIN = Path("/usr/bin/qgis_process.bin")

pytestmark = pytest.mark.skipif(not QGIS_PROCESS_BIN.exists(), reason="qgis_process.bin is not installed")


def assemble_plugin(target: Path) -> Path:
    """What `make plugin` builds (tools/package.py: package, resources without the sample, metadata, licence)."""
    spec = importlib.util.spec_from_file_location("package_tool", REPO / "tools" / "package.py")
    package = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(package)
    return package.assemble(target / "hypernet_qgis")


@pytest.fixture(scope="module")
def wrapper(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("qgis_process")
    repo = root / "repo"
    (repo / "build").mkdir(parents=True)
    venv = REPO / ".venv"
    if venv.is_dir():  # torch and spectral for QGIS's Python; without a venv (QGIS 3.40 chroot) the system's
        (repo / ".venv").symlink_to(venv)
    assemble_plugin(repo / "build")
    script = repo / "qgis_process"
    script.write_text((REPO / "tools" / "qgis_process.in").read_text().replace("@REPO@", str(repo)))
    script.chmod(0o755)
    config = root / "config"
    env = {k: v for k, v in os.environ.items() if k not in ("QGIS_PLUGINPATH", "PYTHONPATH", "XDG_RUNTIME_DIR")}
    env.update(QGIS_CUSTOM_CONFIG_PATH=str(config), TMPDIR=str(root))
    elsewhere = root / "elsewhere"  # run from a folder that is neither the repo nor the data
    elsewhere.mkdir()
    return {"script": str(script), "env": env, "cwd": str(elsewhere), "config": config, "root": root}


def run(wrapper: dict, *args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [wrapper["script"], *args],
        env=env or wrapper["env"],
        cwd=wrapper["cwd"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def results_of(proc: subprocess.CompletedProcess) -> dict:
    """The 'results' of `qgis_process --json run` (stdout may carry warnings before the JSON)."""
    text = proc.stdout
    start = text.find("{")
    assert proc.returncode == 0 and start >= 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(text[start:])["results"]


def test_wrapper_lists_the_provider_and_enables_the_plugin(wrapper):
    proc = run(wrapper, "list")
    assert proc.returncode == 0, proc.stderr
    for alg in ("hypernet:trainhypernet", "hypernet:detectchange", "hypernet:evaluatechange", "hypernet:classicchange"):
        assert alg in proc.stdout
    ini = wrapper["config"] / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    assert "hypernet_qgis=true" in ini.read_text()
    runtime = Path(wrapper["root"]) / f"hypernet-xdg-{os.getuid()}"
    assert runtime.is_dir() and (runtime.stat().st_mode & 0o777) == 0o700


def test_train_then_detect_then_evaluate_on_files(wrapper, tmp_path):
    data = tmp_path / "data"
    files = make_pair(data)
    before = hashes(data)
    out = tmp_path / "out"
    out.mkdir()
    model = out / "pair.hypernet"
    train = results_of(
        run(
            wrapper,
            "--json",
            "run",
            "hypernet:trainhypernet",
            "--",
            f"INPUT_T1={files['t1']}",
            f"INPUT_T2={files['t2']}",
            "EPOCHS=3",
            "SEED=2",
            "DEVICE=cpu",
            f"OUTPUT_MODEL={model}",
        )
    )
    assert model.is_file() and train["OUTPUT_MODEL"] == str(model)
    assert np.isfinite(train["FINAL_LOSS"])
    detect = results_of(
        run(
            wrapper,
            "--json",
            "run",
            "hypernet:detectchange",
            "--",
            f"INPUT_T1={files['t1']}",
            f"INPUT_T2={files['t2']}",
            f"MODEL={model}",
            "THRESHOLD_METHOD=otsu",
            f"OUTPUT_CHANGE={out / 'change.tif'}",
            f"OUTPUT_INTENSITY={out / 'intensity.tif'}",
        )
    )
    values, gt, wkt, nodata = read(str(out / "change.tif"))
    assert values.dtype == np.uint8 and set(np.unique(values)) <= {0, 1} and nodata == 255
    assert gt == pytest.approx(GEOTRANSFORM) and same_crs(wkt)
    intensity = read(str(out / "intensity.tif"))[0]
    assert np.array_equal(values == 1, intensity > detect["THRESHOLD_USED"])
    ref = np.zeros(values.shape, bool)
    ref[CHANGED] = True
    recall = ((values == 1) & ref).sum() / ref.sum()
    precision = ((values == 1) & ref).sum() / max((values == 1).sum(), 1)
    assert recall > 0.5 and precision > 0.5, (recall, precision)  # 3 epochs: a rough but real detection
    assert detect["CHANGED_PIXELS"] == int((values == 1).sum())
    assert (out / "change.qml").is_file() and "paletted" in (out / "change.qml").read_text()
    assert "singlebandpseudocolor" in (out / "intensity.qml").read_text()
    evaluate = results_of(
        run(
            wrapper,
            "--json",
            "run",
            "hypernet:evaluatechange",
            "--",
            f"INPUT={out / 'change.tif'}",
            f"REFERENCE={files['ref']}",
        )
    )
    assert evaluate["RECALL"] == pytest.approx(recall) and evaluate["PRECISION"] == pytest.approx(precision)
    assert hashes(data) == before


def test_bad_input_exits_with_the_message(wrapper, tmp_path):
    files = make_pair(tmp_path / "data")
    proc = run(
        wrapper,
        "run",
        "hypernet:detectchange",
        "--",
        f"INPUT_T1={files['t1']}",
        f"INPUT_T2={files['t2']}",
        "BANDS=1-9",
        f"OUTPUT_CHANGE={tmp_path / 'c.tif'}",
    )
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "Bands asks for band 7 but t1.tif has 6 bands" in text, text[-2000:]
    assert not (tmp_path / "c.tif").exists()


def test_torch_missing_under_qgis_process(wrapper, tmp_path):
    """A sitecustomize that hides torch, on PYTHONPATH: the plugin loads, the run fails with the install hint."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import importlib.abc, sys\n"
        "class _Hide(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, _Hide())\n"
    )
    files = make_pair(tmp_path / "data")
    env = dict(wrapper["env"], PYTHONPATH=str(blocker))
    proc = run(
        wrapper,
        "run",
        "hypernet:detectchange",
        "--",
        f"INPUT_T1={files['t1']}",
        f"INPUT_T2={files['t2']}",
        f"OUTPUT_CHANGE={tmp_path / 'c.tif'}",
        env=env,
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "not found" not in text  # the provider loaded; the algorithm refused
    assert "'torch'" in text and "Set up the HyperNet engine (hypernet:setupengine" in text, text[-2000:]
    assert "the Python QGIS runs (/usr/bin/python3" in text, text[-2000:]  # QGIS's Python, named
    assert not (tmp_path / "c.tif").exists()


def test_installed_wrapper_if_present():
    """`make install` puts the wrapper in .venv/bin; it must point at this checkout."""
    installed = REPO / ".venv" / "bin" / "qgis_process"
    if not installed.exists():
        pytest.skip("run make install to create .venv/bin/qgis_process")
    text = installed.read_text()
    assert f'REPO="{REPO}"' in text and "@REPO@" not in text
    assert os.access(installed, os.X_OK)


def test_wrapper_runs_qgis_with_tcmalloc(wrapper, tmp_path):
    """The wrapper preloads tcmalloc when installed (whole-image training up to 2x faster); the log says which."""
    from hypernet_qgis.core.hypernet.allocator import find_tcmalloc

    files = make_pair(tmp_path / "data")
    args = (
        "run",
        "hypernet:trainhypernet",
        "--",
        f"INPUT_T1={files['t1']}",
        f"INPUT_T2={files['t2']}",
        "EPOCHS=1",
        "DEVICE=cpu",
        f"OUTPUT_MODEL={tmp_path / 'm.hypernet'}",
    )
    env = {
        k: v
        for k, v in wrapper["env"].items()
        if k not in ("LD_PRELOAD", "HYPERNET_ALLOCATOR", "HYPERNET_ALLOCATOR_SET")
    }
    proc = run(wrapper, *args, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    expected = "tcmalloc allocator" if find_tcmalloc() else "system allocator"
    assert expected in proc.stdout, proc.stdout[-2000:]
    proc = run(wrapper, *args, env=dict(env, HYPERNET_ALLOCATOR="system"))
    assert proc.returncode == 0 and "system allocator" in proc.stdout, proc.stdout[-2000:]
