"""A model file's metadata read without torch (core/hypernet/model_metadata.py): the same metadata as load_model,
torch never imported (the reader alone, the CLI's inspect, and QGIS checking Detect Change's Model file), and
crafted data.pkl entries refused with one InputError without running or importing anything."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

from hypernet_qgis.core.errors import InputError
from hypernet_qgis.core.hypernet import model_metadata
from hypernet_qgis.core.hypernet.model_file import FORMAT, FORMAT_VERSION, expected_state, load_model, save_model
from hypernet_qgis.core.hypernet.model_metadata import (
    STORAGE_DTYPES,
    TensorInfo,
    expected_shapes,
    read_metadata,
)
from hypernet_qgis.core.hypernet.network import HyperNet

REPO = Path(__file__).resolve().parents[1]

#: A sitecustomize that makes torch absent (not mocked): any import of it fails.
BLOCKER = '''
import importlib.abc, sys

class _HideTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _HideTorch())
'''


def _saved(path: Path, bands: int = 6, width: int = 16, selection: bool = True) -> Path:
    torch.manual_seed(0)
    save_model(
        path,
        HyperNet(bands, width),
        {
            "band_count": bands,
            "band_selection": list(range(1, bands + 1)) if selection else None,
            "wavelengths_nm": [450.0 + 20 * i for i in range(bands)],
            "loss_history": [1.0, 0.5, 0.25],
            "training": {"epochs": 3, "learning_rate": 0.001},
            "device": "cpu",
        },
    )
    return path


def _without_torch(tmp_path: Path, code: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    blocker = tmp_path / "blocker"
    blocker.mkdir(exist_ok=True)
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    environ = {**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(blocker), str(REPO)])}
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO, env=environ, timeout=300
    )


def test_metadata_is_read_with_torch_absent(tmp_path):
    """A fresh interpreter where torch cannot be imported reads a real model's metadata, and the CLI's inspect
    prints it: torch is never even asked for."""
    path = _saved(tmp_path / "m.hypernet")
    code = (
        "import json, sys\n"
        "from hypernet_qgis.core.hypernet.model_metadata import read_metadata\n"
        "meta = read_metadata(sys.argv[1])\n"
        "print(json.dumps({'meta': meta, 'torch': 'torch' in sys.modules}))\n"
    )
    out = _without_torch(tmp_path, code, str(path))
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["torch"] is False
    assert result["meta"] == read_metadata(path)
    cli = _without_torch(
        tmp_path,
        "import sys; from hypernet_qgis.cli import main; "
        "rc = main(['inspect', sys.argv[1]]); assert 'torch' not in sys.modules; "
        "sys.exit(rc)",
        str(path),
    )
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert json.loads(cli.stdout)["band_selection"] == [1, 2, 3, 4, 5, 6]


def test_same_metadata_as_load_model(tmp_path):
    path = _saved(tmp_path / "m.hypernet", bands=20, width=16)
    meta = read_metadata(path)
    model, loaded = load_model(path)
    assert meta == loaded and model.bands == 20
    payload = torch.load(path, weights_only=True)
    assert meta == {**json.loads(payload["metadata_json"]), "band_count": 20}
    assert meta["wavelengths_nm"][:2] == [450.0, 470.0] and meta["training"]["epochs"] == 3


def _structure(path: Path) -> object:
    """The unpickled data.pkl of a file, TensorInfo for each tensor (no check of format or metadata)."""
    return model_metadata._unpickle(model_metadata._read_structure(path), path)


@pytest.mark.parametrize(
    "bands, width, proj, pred, members",
    [
        (6, 16, 32, 16, None),
        (16, 16, 32, 16, None),
        (3, 4, 8, 4, None),
        (204, 102, 50, 7, None),
        (5, 17, 34, 17, 2),
    ],
)
def test_torch_free_layout_is_the_network_s(bands, width, proj, pred, members):
    """expected_shapes (no torch) lists exactly the keys, shapes and dtypes of HyperNet's state dict (widths equal
    to the band count have no shortcut; narrow widths a channel-attention hidden width of 1)."""
    meta = {"bands": bands, "width": width, "proj_width": proj, "pred_hidden": pred, "members": members}
    from_network = {k: (shape, str(dtype)) for k, (shape, dtype) in expected_state(meta).items()}
    assert list(expected_shapes(meta).items()) == list(from_network.items())


def test_tensors_of_every_dtype_are_read_as_their_shape_and_dtype(tmp_path):
    """The stand-ins give each tensor's shape and dtype as torch saved them (the storage names of torch 2.x)."""
    dtypes = [
        torch.float64,
        torch.float32,
        torch.float16,
        torch.bfloat16,
        torch.int64,
        torch.int32,
        torch.int16,
        torch.int8,
        torch.uint8,
        torch.bool,
        torch.complex128,
        torch.complex64,
    ]
    assert sorted(str(d) for d in dtypes) == sorted(STORAGE_DTYPES.values())
    state = {str(d): torch.zeros(2, 3, dtype=d) for d in dtypes}
    state["scalar"] = torch.tensor(7)
    state["view"] = torch.arange(24.0).reshape(4, 6)[1:, ::2]  # an offset and strides into a shared storage
    path = tmp_path / "all.pt"
    torch.save({"state_dict": state, "nested": [torch.ones(1)]}, path)
    read = _structure(path)
    assert read["state_dict"] == {k: TensorInfo(tuple(v.shape), str(v.dtype)) for k, v in state.items()}
    assert read["nested"] == [TensorInfo((1,), "torch.float32")]
    with warnings.catch_warnings():  # "TypedStorage is deprecated" (the names stay in torch's pickles)
        warnings.simplefilter("ignore")
        assert {name: str(getattr(torch, name).dtype) for name in STORAGE_DTYPES} == STORAGE_DTYPES


# ------------------------------------------------------------------------------------------ hostile files


def _torch_like(path: Path, structure: bytes, like: Path, compression: int = zipfile.ZIP_STORED) -> Path:
    """A zip laid out as torch writes it (archive/data.pkl, archive/data/0, ...) with ``structure`` as data.pkl."""
    with zipfile.ZipFile(like) as zin, zipfile.ZipFile(path, "w", compression) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, structure if info.filename.endswith("/data.pkl") else zin.read(info))
    return path


def _u(text: str) -> bytes:
    """The pickle opcode BINUNICODE pushing ``text``."""
    return b"X" + len(text.encode()).to_bytes(4, "little") + text.encode()


def _refused(path: Path, *words: str) -> str:
    """Both readers refuse the file with one line holding ``words``; the torch-free one without loading torch."""
    for reader in (read_metadata, load_model):
        with pytest.raises(InputError) as err:
            reader(path)
        message = str(err.value)
        assert "\n" not in message and str(path) in message
        for w in words:
            assert w in message, (w, message)
    return message


class _System:
    """Pickles as a call of os.system: what a malicious model file carries."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _payload(good: Path, **extra) -> dict:
    payload = torch.load(good, weights_only=True)
    return {**payload, **extra}


def _torch_saved(path: Path, payload: dict) -> Path:
    """``payload`` written by torch.save (its pickler: tensors as persistent storages, anything else pickled)."""
    torch.save(payload, path)
    return path


def _data_pkl(path: Path) -> bytes:
    with zipfile.ZipFile(path) as zf:
        return zf.read(next(n for n in zf.namelist() if n.endswith("/data.pkl")))


def test_pickled_os_system_is_refused_without_running(tmp_path):
    """os.system in data.pkl, written by torch.save beside the real weights, and by the pickle module into a zip
    laid out like torch's: refused, the command never runs; plain unpickling would run it."""
    good = _saved(tmp_path / "good.hypernet")
    marker = tmp_path / "ran.txt"
    system = _System(f"touch {marker}")
    by_torch = _torch_saved(tmp_path / "evil.hypernet", _payload(good, extra=system))
    _refused(by_torch, "Python objects or code")
    plain = {**_payload(good), "state_dict": {}, "extra": system}  # no tensors: the pickle module alone
    by_pickle = _torch_like(tmp_path / "evil2.hypernet", pickle.dumps(plain, protocol=2), good)
    _refused(by_pickle, "Python objects or code")
    assert not marker.exists()
    pickle.loads(_data_pkl(by_pickle))  # the payload is real: plain unpickling runs it
    assert marker.exists()


def test_an_unknown_global_is_refused_before_it_is_imported(tmp_path, monkeypatch):
    """data.pkl naming a module's function: refused from the name alone; the module is never imported."""
    marker = tmp_path / "imported.txt"
    (tmp_path / "hypernet_evil_module.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef run(): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    good = _saved(tmp_path / "good.hypernet")
    structure = _data_pkl(good)
    # a dict entry "x": hypernet_evil_module.run() (and other globals) spliced in before STOP, set on the top dict
    assert structure.endswith(b"u.")  # ...SETITEMS, STOP
    for i, value in enumerate(
        (
            b"chypernet_evil_module\nrun\n)R",
            b"cdatetime\ndate\nK\x01K\x01K\x01\x87R",
            b"ctorch._utils\n_rebuild_parameter\n)R",
            b"cbuiltins\neval\n" + _u("1") + b"\x85R",
            b"ctorch\nUntypedStorage\n",
        )
    ):
        path = _torch_like(tmp_path / f"global{i}.hypernet", structure[:-1] + _u("x") + value + b"s.", good)
        _refused(path, "Python objects or code")
    assert not marker.exists() and "hypernet_evil_module" not in sys.modules


def test_the_stand_ins_refuse_misuse(tmp_path):
    """The allowed globals used the wrong way (a storage type called or built with NEWOBJ, a tensor without a
    storage, a persistent id that is no storage, BUILD changing a stand-in): damaged, never a traceback, and the
    stand-ins stay as they were for the next file."""
    good = _saved(tmp_path / "good.hypernet")
    structure = _data_pkl(good)[:-1]  # the top dict, without STOP
    storage = b"(" + _u("storage") + b"ctorch\nFloatStorage\n" + _u("0") + _u("cpu") + b"K\x01tQ"
    tensor = b"ctorch._utils\n_rebuild_tensor_v2\n(" + storage + b"K\x00K\x01\x85K\x01\x85\x89NtR"
    values = [
        b"ctorch\nFloatStorage\n)R",  # a storage type called
        b"ctorch\nFloatStorage\n)\x81",  # NEWOBJ on it
        b"ctorch._utils\n_rebuild_tensor_v2\n(K\x01K\x00)\x89NtR",  # no storage
        b"ctorch._utils\n_rebuild_tensor_v2\n(" + _u("s") + b"K\x00K\x02\x85K\x01\x85\x89NtR",
        b"ctorch._utils\n_rebuild_tensor_v2\n(" + storage + b"K\x00" + _u("2") + b"K\x01\x85\x89NtR",  # shape
        _u("abc") + b"Q",  # a persistent id that is a string
        b"(" + _u("storage") + _u("0") + b"tQ",  # a short one
        b"ctorch\nFloatStorage\n}" + _u("dtype") + _u("torch.int64") + b"sb",  # BUILD with a dict
        b"ctorch\nFloatStorage\nN}" + _u("dtype") + _u("torch.int64") + b"s\x86b",  # BUILD with slots
        tensor + b"}" + _u("shape") + b"K\x01sb",
        tensor + b"N}" + _u("shape") + b")s\x86b",
    ]
    assert _structure(_torch_like(tmp_path / "fine.hypernet", structure + _u("x") + tensor + b"s.", good))[
        "x"
    ] == TensorInfo((1,), "torch.float32")  # the spliced tensor itself is well formed
    for i, value in enumerate(values):
        path = _torch_like(tmp_path / f"misuse{i}.hypernet", structure + _u("x") + value + b"s.", good)
        with pytest.raises(InputError) as err:
            read_metadata(path)
        assert "\n" not in str(err.value) and "is damaged or not a HyperNet model file" in str(err.value), (
            i,
            err.value,
        )
    assert read_metadata(good)["bands"] == 6


def test_a_far_memo_index_costs_no_memory(tmp_path):
    """LONG_BINPUT 2**27 (five bytes) made the C unpickler size its memo array to 2 GB (found by the fuzz test);
    the reader's memo is a dict."""
    good = _saved(tmp_path / "good.hypernet")
    far = b"r" + (2**27).to_bytes(4, "little")
    path = _torch_like(tmp_path / "memo.hypernet", _data_pkl(good)[:-1] + _u("x") + b"N" + far + b"s.", good)
    tracemalloc.start()
    try:
        assert read_metadata(path)["bands"] == 6
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 << 20, peak


def test_compressed_entry_is_refused(tmp_path):
    good = _saved(tmp_path / "good.hypernet")
    with zipfile.ZipFile(good) as zf:
        structure = zf.read(next(n for n in zf.namelist() if n.endswith("/data.pkl")))
    path = _torch_like(tmp_path / "deflated.hypernet", structure, good, zipfile.ZIP_DEFLATED)
    _refused(path, "compressed entry")


def test_a_huge_claimed_size_is_refused_before_reading(tmp_path):
    """The central directory claims 2 GB for data.pkl in a small file: refused from the directory."""
    good = _saved(tmp_path / "good.hypernet")
    data = bytearray(good.read_bytes())
    at = data.find(b"PK\x01\x02")  # the first central directory header: archive/data.pkl
    assert data[at + 46 : at + 46 + len(b"archive/data.pkl")] == b"archive/data.pkl"
    data[at + 20 : at + 28] = (2_000_000_000).to_bytes(4, "little") * 2  # compressed and uncompressed size
    path = tmp_path / "huge.hypernet"
    path.write_bytes(bytes(data))
    _refused(path, "claims 2000000000 bytes")


def test_damaged_structures_are_named(tmp_path):
    good = _saved(tmp_path / "good.hypernet")
    cases = {
        "truncated": (_data_pkl(good)[:500], "is damaged or not a HyperNet model file. Train"),
        "not a pickle": (b"this is not a pickle at all", "is damaged or not a HyperNet model file. Train"),
        "a list": (pickle.dumps([1, 2, 3], protocol=2), "is a PyTorch file but not a HyperNet model file"),
        "no weights": (
            _data_pkl(_torch_saved(tmp_path / "n.pt", {**_payload(good), "state_dict": None})),
            "its weights are not a dict of tensors",
        ),
    }
    for i, (structure, words) in enumerate(cases.values()):
        _refused(_torch_like(tmp_path / f"d{i}.hypernet", structure, good), words)
    with zipfile.ZipFile(tmp_path / "nopkl.hypernet", "w") as zf:
        zf.writestr("archive/data/0", b"\0" * 16)
    _refused(tmp_path / "nopkl.hypernet", "no data.pkl")
    io_bytes = io.BytesIO()
    torch.save({"weights": torch.zeros(3)}, io_bytes)
    other = tmp_path / "other.pt"
    other.write_bytes(io_bytes.getvalue())
    _refused(other, "not a HyperNet model file")
    payload = _payload(good, format_version=FORMAT_VERSION + 1)
    assert payload["format"] == FORMAT
    _refused(_torch_saved(tmp_path / "v2.hypernet", payload), "format version 2")


# ------------------------------------------------------------------------------------- QGIS checks a model

QGIS_SCRIPT = r'''
import json, os, sys
sys.path[:0] = [sys.argv[1], "/usr/share/qgis/python/plugins"]
from qgis.core import QgsApplication, QgsProcessingContext
QgsApplication.setPrefixPath("/usr", True)
app = QgsApplication([], False)
app.initQgis()
from processing.core.Processing import Processing
Processing.initialize()
import processing
import hypernet_qgis
plugin = hypernet_qgis.classFactory(None)
plugin.initProcessing()
registry = QgsApplication.processingRegistry()
t1, t2, model, wrong, folder = sys.argv[2:7]
detect = registry.algorithmById("hypernet:detectchange")
out = {}
for name, path in (("fits", model), ("wrong", wrong)):
    out[name] = detect.checkParameterValues({"INPUT_T1": t1, "INPUT_T2": t2, "MODEL": path,
                                             "OUTPUT_CHANGE": os.path.join(folder, "c.tif")}, QgsProcessingContext())
res = processing.run("hypernet:inspectmodel", {"INPUT": model, "OUTPUT_REPORT": os.path.join(folder, "m.html")})
out["bands"] = res["BANDS"]
out["torch"] = "torch" in sys.modules
print("RESULT " + json.dumps(out))
'''


def test_qgis_checks_a_model_file_without_loading_torch(tmp_path):
    """Detect Change's check of a Model file (band count, band selection) and Inspect HyperNet model run in a
    QGIS process with torch installed but never imported: the engine runs elsewhere."""
    from test_qgis_support import make_pair

    files = make_pair(tmp_path / "data")
    model, wrong = _saved(tmp_path / "m.hypernet"), _saved(tmp_path / "w.hypernet", bands=4, selection=False)
    proc = subprocess.run(
        [sys.executable, "-c", QGIS_SCRIPT, str(REPO), files["t1"], files["t2"], str(model), str(wrong), str(tmp_path)],
        env=dict(os.environ, QT_QPA_PLATFORM="offscreen"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(line[len("RESULT ") :])
    assert out["fits"] == [True, ""], out["fits"]
    assert out["wrong"][0] is False and "trained on 4 bands" in out["wrong"][1], out["wrong"]
    assert out["bands"] == 6 and (tmp_path / "m.html").is_file()
    assert out["torch"] is False
