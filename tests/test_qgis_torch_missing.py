"""Without torch the plugin still loads: the HyperNet algorithms fail with one clear install message, and the
classic, evaluation and model-inspection algorithms, which need no torch, run.

torch is made absent (not mocked) in a fresh QGIS process: a sitecustomize on PYTHONPATH puts a meta-path finder
in front of the import system that refuses ``torch`` and its submodules.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from test_qgis_support import hashes, make_pair

from hypernet_qgis.core.hypernet.model_file import save_model
from hypernet_qgis.core.hypernet.network import HyperNet

REPO = Path(__file__).resolve().parents[1]

BLOCKER = '''
import importlib.abc, sys

class _HideTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _HideTorch())
'''

SCRIPT = r'''
import json, os, sys
sys.path[:0] = [sys.argv[1], "/usr/share/qgis/python/plugins"]
from qgis.core import QgsApplication, QgsProcessingContext, QgsProcessingException
QgsApplication.setPrefixPath("/usr", True)
app = QgsApplication([], False)
app.initQgis()
from processing.core.Processing import Processing
Processing.initialize()
import processing
out = {"torch_importable": True}
try:
    import torch  # noqa: F401
except ImportError:
    out["torch_importable"] = False
import hypernet_qgis
plugin = hypernet_qgis.classFactory(None)
plugin.initProcessing()
registry = QgsApplication.processingRegistry()
out["algorithms"] = sorted(a.id() for a in registry.providerById("hypernet").algorithms())
out["torch_loaded_by_plugin"] = "torch" in sys.modules
t1, t2, ref, folder, model = sys.argv[2:7]
runs = {
    "hypernet:trainhypernet": {"INPUT_T1": t1, "INPUT_T2": t2, "EPOCHS": 2,
                               "OUTPUT_MODEL": os.path.join(folder, "m.hypernet")},
    "hypernet:detectchange": {"INPUT_T1": t1, "INPUT_T2": t2, "OUTPUT_CHANGE": os.path.join(folder, "c.tif")},
    "hypernet:classicchange": {"METHOD": "cva", "INPUT_T1": t1, "INPUT_T2": t2,
                               "OUTPUT_CHANGE": os.path.join(folder, "k.tif")},
    "hypernet:evaluatechange": {"INPUT": ref, "REFERENCE": ref},
    "hypernet:inspectmodel": {"INPUT": model, "OUTPUT_REPORT": os.path.join(folder, "model.html")},
}
out["errors"], out["checks"] = {}, {}
for alg_id, params in runs.items():
    alg = registry.algorithmById(alg_id)
    ok, message = alg.checkParameterValues(params, QgsProcessingContext())
    out["checks"][alg_id] = [ok, message]
    try:
        result = processing.run(alg_id, params)
        out["errors"][alg_id] = None
        out.setdefault("results", {})[alg_id] = {k: v for k, v in result.items() if isinstance(v, (int, float, str))}
    except QgsProcessingException as exc:
        out["errors"][alg_id] = str(exc)
out["torch_loaded_after_runs"] = "torch" in sys.modules
out["executable"], out["version"] = sys.executable, sys.version.split()[0]
plugin.unload()
out["unloaded"] = registry.providerById("hypernet") is None
print("RESULT " + json.dumps(out))
'''


def test_plugin_loads_and_algorithms_explain_missing_torch(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    data = tmp_path / "data"
    files = make_pair(data)
    model = data / "given.hypernet"  # a model file made where torch is (this process), inspected where it is not
    torch.manual_seed(0)
    save_model(model, HyperNet(6, 16), {"band_count": 6, "loss_history": [1.0, 0.5]})
    before = hashes(data)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")]),
        QT_QPA_PLATFORM="offscreen",
    )
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(REPO), files["t1"], files["t2"], files["ref"], str(data), str(model)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(line[len("RESULT ") :])
    assert out["torch_importable"] is False  # the blocker works
    assert out["algorithms"] == [
        "hypernet:Train and detect, then evaluate",
        "hypernet:classicchange",
        "hypernet:detectchange",
        "hypernet:detectseries",
        "hypernet:evaluatechange",
        "hypernet:inspectmodel",
        "hypernet:setupengine",
        "hypernet:trainhypernet",
    ]
    assert out["torch_loaded_by_plugin"] is False
    needs_torch = {"hypernet:trainhypernet", "hypernet:detectchange"}
    for alg_id in out["errors"].keys() - needs_torch:  # classic, evaluation and inspection run without torch
        assert out["errors"][alg_id] is None, out["errors"][alg_id]
        assert out["checks"][alg_id][0] is True, out["checks"][alg_id]
    assert (data / "k.tif").is_file()
    assert out["results"]["hypernet:evaluatechange"]["OA"] == 1.0  # the reference scored against itself
    assert out["results"]["hypernet:inspectmodel"]["BANDS"] == 6 and (data / "model.html").is_file()
    assert out["torch_loaded_after_runs"] is False
    for alg_id in needs_torch:
        message = out["errors"][alg_id]
        assert message is not None, f"{alg_id} ran without torch"
        assert "'torch'" in message and "Set up the HyperNet engine (hypernet:setupengine" in message, message
        assert out["executable"] in message and out["version"] in message, message
        assert "Traceback" not in message
        ok, check = out["checks"][alg_id]
        assert ok is False and "\n" not in check and check in message, check  # one line, the one QGIS shows
    assert out["unloaded"] is True
    assert {k: v for k, v in hashes(data).items() if k in before} == before  # inputs unchanged
    assert not any((data / name).exists() for name in ("m.hypernet", "c.tif"))
