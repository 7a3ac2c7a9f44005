"""Issue 12 under qgis_process: crafted models, numbers that are not numbers, enums by number, no side files
beside inputs, an output behind a VRT input, and the wrapper's pinned interpreter."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

import pytest
import torch
from osgeo import gdal
from test_qgis_process import QGIS_PROCESS_BIN, results_of, run, wrapper  # noqa: F401  (wrapper: a fixture)
from test_qgis_support import hashes, make_pair

from hypernet_qgis.core.hypernet.model_file import save_model
from hypernet_qgis.core.hypernet.network import HyperNet

pytestmark = pytest.mark.skipif(not QGIS_PROCESS_BIN.exists(), reason="qgis_process.bin is not installed")


def _crafted(path: Path, **changes) -> Path:
    """A real 6-band model whose metadata is then changed as an attacker would."""
    save_model(path, HyperNet(6, 16), {"band_count": 6})
    import zipfile

    payload = torch.load(path, weights_only=True)
    meta = json.loads(payload["metadata_json"])
    meta.update(changes)
    payload["metadata_json"] = json.dumps(meta)
    torch.save(payload, path)
    assert zipfile.is_zipfile(path)
    return path


@pytest.mark.parametrize(
    "changes",
    [
        {"width": -16},
        {"band_selection": "abc"},
        {"band_selection": {"a": 1}},
        {"band_selection": [[1, 2], [3]]},
        {"band_count": "x"},
    ],
)
def test_crafted_model_is_a_message_not_an_abort(wrapper, tmp_path, changes):  # noqa: F811
    files = make_pair(tmp_path / "data")
    model = _crafted(tmp_path / "m.hypernet", **changes)
    before = hashes(tmp_path / "data")
    proc = run(
        wrapper,
        "run",
        "hypernet:detectchange",
        "--",
        f"INPUT_T1={files['t1']}",
        f"INPUT_T2={files['t2']}",
        f"MODEL={model}",
        f"OUTPUT_CHANGE={tmp_path / 'c.tif'}",
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, (proc.returncode, text[-2000:])  # not -6 (SIGABRT) nor 139
    assert "is damaged or not a HyperNet model file" in text and "Traceback" not in text, text[-2000:]
    assert not (tmp_path / "c.tif").exists() and hashes(tmp_path / "data") == before
    proc = run(wrapper, "run", "hypernet:inspectmodel", "--", f"INPUT={model}", f"OUTPUT_REPORT={tmp_path / 'r.html'}")
    assert proc.returncode == 1 and "damaged" in proc.stdout + proc.stderr
    assert not (tmp_path / "r.html").exists()


def test_numbers_that_are_not_numbers_and_enums_by_number(wrapper, tmp_path):  # noqa: F811
    files = make_pair(tmp_path / "data")
    pair = [f"INPUT_T1={files['t1']}", f"INPUT_T2={files['t2']}"]
    for alg in ("hypernet:detectchange", "hypernet:classicchange"):
        proc = run(
            wrapper,
            "run",
            alg,
            "--",
            *pair,
            "THRESHOLD_METHOD=fixed",
            "THRESHOLD=abc",
            f"OUTPUT_CHANGE={tmp_path / 'c.tif'}",
        )
        assert proc.returncode != 0 and "THRESHOLD 'abc' is not a number" in proc.stdout + proc.stderr
        assert not (tmp_path / "c.tif").exists()
    proc = run(
        wrapper, "run", "hypernet:trainhypernet", "--", *pair, "EPOCHS=abc", f"OUTPUT_MODEL={tmp_path / 'm.hypernet'}"
    )
    assert proc.returncode != 0 and "EPOCHS 'abc' is not a number" in proc.stdout + proc.stderr
    # `qgis_process help` lists the options by number: 2 is kmeans for the classic methods
    by_number = results_of(
        run(
            wrapper,
            "--json",
            "run",
            "hypernet:classicchange",
            "--",
            *pair,
            "THRESHOLD_METHOD=2",
            f"OUTPUT_CHANGE={tmp_path / 'n.tif'}",
        )
    )
    by_name = results_of(
        run(
            wrapper,
            "--json",
            "run",
            "hypernet:classicchange",
            "--",
            *pair,
            "THRESHOLD_METHOD=kmeans",
            f"OUTPUT_CHANGE={tmp_path / 'k.tif'}",
        )
    )
    assert by_number["THRESHOLD_USED"] == by_name["THRESHOLD_USED"]


def test_inputs_untouched_and_output_behind_a_vrt_refused(wrapper, tmp_path):  # noqa: F811
    files = make_pair(tmp_path / "data")
    for name in ("t1", "t2"):
        gdal.BuildVRT(str(tmp_path / "data" / f"{name}.vrt"), [str(files[name])]).FlushCache()
    before = hashes(tmp_path / "data")
    proc = run(
        wrapper,
        "run",
        "hypernet:classicchange",
        "--",
        f"INPUT_T1={tmp_path / 'data' / 't1.vrt'}",
        f"INPUT_T2={tmp_path / 'data' / 't2.vrt'}",
        f"OUTPUT_CHANGE={files['t1']}",
    )
    assert proc.returncode != 0 and "would overwrite the input" in proc.stdout + proc.stderr
    # QGIS itself stores the statistics of a VRT layer it loads inside the .vrt (not ours to prevent; the pixels
    # and sources stay); every other file is unchanged
    after = hashes(tmp_path / "data")
    assert {k: v for k, v in after.items() if not k.endswith(".vrt")} == {
        k: v for k, v in before.items() if not k.endswith(".vrt")
    }
    for name in ("t1", "t2"):
        (tmp_path / "data" / f"{name}.vrt").unlink()
    before = hashes(tmp_path / "data")
    results_of(
        run(
            wrapper,
            "--json",
            "run",
            "hypernet:classicchange",
            "--",
            f"INPUT_T1={files['t1']}",
            f"INPUT_T2={files['t2']}",
            f"OUTPUT_CHANGE={tmp_path / 'c.tif'}",
        )
    )
    assert hashes(tmp_path / "data") == before, "qgis_process left files beside the inputs (.aux.xml)"


def _other_python3() -> str | None:
    """A python3 that is not the system one QGIS links (pyenv, conda), to put first on PATH."""
    system = os.path.realpath("/usr/bin/python3")
    for candidate in sorted(
        glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin/python3"))
        + glob.glob("/opt/conda/bin/python3")
        + glob.glob(os.path.expanduser("~/*conda*/bin/python3"))
    ):
        if os.path.realpath(candidate) != system:
            return candidate
    return None


@pytest.mark.parametrize("version", ["same", "any"])
def test_wrapper_pins_the_interpreter(wrapper, version):  # noqa: F811
    """An activated pyenv/conda python3 first on PATH made qgis_process crash (exit 139)."""
    import sys

    other = _other_python3()
    if version == "same":
        mine = f"{sys.version_info[0]}.{sys.version_info[1]}"
        same = [p for p in glob.glob(os.path.expanduser(f"~/.pyenv/versions/{mine}.*/bin/python3"))]
        other = same[0] if same else None
    if other is None:
        pytest.skip("no other python3 installed here")
    env = {**wrapper["env"], "PATH": f"{os.path.dirname(other)}:{wrapper['env'].get('PATH', '')}"}
    proc = run(wrapper, "list", env=env)
    assert proc.returncode == 0 and "hypernet:detectchange" in proc.stdout, (proc.returncode, proc.stderr[-1500:])
