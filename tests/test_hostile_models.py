"""Issue 12, items 4 and 5: crafted model files. Each is refused with one InputError, before any tensor is built
from the metadata, within the file's size in memory; a random-mutation run never gives a traceback or an abort."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from hypernet_qgis.core.errors import InputError
from hypernet_qgis.core.hypernet.model_file import (
    FORMAT,
    FORMAT_VERSION,
    expected_state,
    load_model,
    read_metadata,
    save_model,
)
from hypernet_qgis.core.hypernet.network import HyperNet

REPO = Path(__file__).resolve().parents[1]


def _model(bands: int = 6, width: int = 16) -> HyperNet:
    torch.manual_seed(0)
    return HyperNet(bands, width).eval()


def _real_meta(model: HyperNet) -> dict:
    return {
        "bands": model.bands,
        "width": model.width,
        "proj_width": model.proj_width,
        "pred_hidden": model.pred_hidden,
        "band_count": model.bands,
        "band_selection": None,
        "loss_history": [1.0, 0.5],
    }


def _save(path: Path, meta: dict | str, state: dict, **extra) -> Path:
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "metadata_json": meta if isinstance(meta, str) else json.dumps(meta),
        "state_dict": state,
        **extra,
    }
    torch.save(payload, path)
    return path


def _refused(path: Path, *words: str) -> str:
    started = time.perf_counter()
    for reader in (read_metadata, load_model):
        with pytest.raises(InputError) as err:
            reader(path)
        message = str(err.value)
        assert "\n" not in message
        for w in words:
            assert w in message, (w, message)
    assert time.perf_counter() - started < 10
    return message


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("width", -16, ["width = -16"]),
        ("width", 6000, ["width = 6000", "from 1 to 4096"]),
        ("width", 2_000_000, ["width = 2000000"]),
        ("bands", "x", ["bands = 'x'"]),
        ("band_count", "x", ["band_count = 'x'"]),
        ("band_count", 7, ["band_count 7"]),
        ("band_selection", "abc", ["band_selection"]),
        ("band_selection", {"a": 1}, ["band_selection"]),
        ("band_selection", [[1, 2], [3]], ["band_selection"]),
        ("band_selection", [1, 2, 3], ["band_selection lists 3"]),
        ("band_selection", [1, 1, 2, 3, 4, 5], ["band_selection"]),
        ("wavelengths_nm", ["a"] * 6, ["wavelengths_nm"]),
        ("loss_history", "abc", ["loss_history"]),
        ("training", [1], ["training"]),
        ("members", 10**9, ["members"]),
        ("widths", [6, 16, 32, 999], ["widths"]),
    ],
)
def test_metadata_outside_the_schema(tmp_path, key, value, words):
    model = _model()
    meta = _real_meta(model)
    meta[key] = value
    _refused(_save(tmp_path / "m.hypernet", meta, model.state_dict()), "damaged", *words)


def test_metadata_that_is_no_object(tmp_path):
    model = _model()
    for i, text in enumerate(["[]", "3", "null", '"x"', "{" * 100_000, "x" * 10]):
        _refused(_save(tmp_path / f"m{i}.hypernet", text, model.state_dict()), "damaged")


def test_weights_smaller_than_the_metadata_claims_allocate_nothing(tmp_path):
    """An 89 KB file claiming width 4000: refused from the shapes, without building the network (it would take
    gigabytes): the peak memory of the process barely moves."""
    model = _model()
    meta = _real_meta(model)
    meta.update(width=4000, proj_width=8000, pred_hidden=4000)
    path = _save(tmp_path / "m.hypernet", meta, model.state_dict())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _refused(path, "do not fit", "width 4000")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 200_000  # KiB


def test_a_missing_weight_or_an_extra_one(tmp_path):
    model = _model()
    state = dict(model.state_dict())
    key = next(iter(state))
    _refused(
        _save(tmp_path / "a.hypernet", _real_meta(model), {k: v for k, v in state.items() if k != key}),
        "missing " + key,
    )
    _refused(_save(tmp_path / "b.hypernet", _real_meta(model), {**state, "evil": torch.zeros(3)}), "unexpected evil")
    _refused(_save(tmp_path / "c.hypernet", _real_meta(model), {**state, key: state[key].double()}), "float64")
    _refused(_save(tmp_path / "d.hypernet", _real_meta(model), [1, 2]), "not a dict of tensors")


def test_nan_weights_are_named(tmp_path):
    model = _model()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key][0] = float("nan")
    path = _save(tmp_path / "m.hypernet", _real_meta(model), state)
    with pytest.raises(InputError, match="NaN or infinite weights .*diverged.*LEARNING_RATE"):
        load_model(path)


def test_metadata_without_band_count_reports_the_network_bands(tmp_path):
    model = _model()
    meta = _real_meta(model)
    del meta["band_count"]
    path = _save(tmp_path / "m.hypernet", meta, model.state_dict())
    assert read_metadata(path)["band_count"] == 6
    net, loaded = load_model(path)
    assert loaded["band_count"] == 6 and net.bands == 6


def test_zip_bomb_is_refused_before_expanding(tmp_path):
    """A 60 MB storage of zeros deflated to a few tens of KB: refused from the archive's directory."""
    model = _model()
    src = _save(tmp_path / "plain.hypernet", _real_meta(model), model.state_dict(), pad=torch.zeros(15_000_000))
    bomb = tmp_path / "bomb.hypernet"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename))
    assert bomb.stat().st_size < 1_000_000 < src.stat().st_size
    _refused(bomb, "compressed entry")


def test_several_networks_read_and_refused_cleanly(tmp_path):
    """The shape check already knows files holding K networks (members.<i>.); loading one says what is missing."""
    model = _model()
    meta = {**_real_meta(model), "members": 2}
    state = {f"members.{i}.{k}": v for i in range(2) for k, v in model.state_dict().items()}
    path = _save(tmp_path / "m.hypernet", meta, state)
    assert read_metadata(path)["members"] == 2
    assert set(expected_state(read_metadata(path))) == set(state)
    with pytest.raises(InputError, match="holds 2 networks"):
        load_model(path)


def test_read_metadata_does_not_read_the_weights(tmp_path):
    """read_metadata maps the weights instead of reading them: a large model's metadata costs little memory."""
    model = HyperNet(2000, 256)
    path = tmp_path / "big.hypernet"
    save_model(path, model, {"band_count": 2000})
    del model
    code = (
        "import resource, sys; from hypernet_qgis.core.hypernet.model_file import read_metadata; "
        "r0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; m = read_metadata(sys.argv[1]); "
        "print(m['bands'], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - r0)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    bands, grown = out.stdout.split()
    assert bands == "2000"
    assert int(grown) * 1024 < path.stat().st_size / 2, (grown, path.stat().st_size)


FUZZ = r'''
import io, json, random, resource, sys, traceback, zipfile
import torch
from hypernet_qgis.core.errors import InputError
from hypernet_qgis.core.hypernet.model_file import FORMAT, FORMAT_VERSION, load_model, save_model
from hypernet_qgis.core.hypernet.model_metadata import read_metadata  # the torch-free reader QGIS uses
from hypernet_qgis.core.hypernet.network import HyperNet

folder, count = sys.argv[1], int(sys.argv[2])
rng = random.Random(12)
torch.manual_seed(0)
good = f"{folder}/good.hypernet"
save_model(good, HyperNet(6, 16), {"band_count": 6, "band_selection": [1, 2, 3, 4, 5, 6],
                                   "wavelengths_nm": [400.0 + 10 * i for i in range(6)], "loss_history": [1.0]})
data = open(good, "rb").read()
with zipfile.ZipFile(good) as zf:
    entries = [(i.filename, zf.read(i)) for i in zf.infolist()]
structure = next(body for name, body in entries if name.endswith("/data.pkl"))
OPCODES = b"cRQ(tu}]qhsb.)N\x81\x85\x86\x87X"  # globals, calls, persistent ids, containers, BUILD, STOP
payload = torch.load(good, weights_only=True)
meta0 = json.loads(payload["metadata_json"])
VALUES = [-1, 0, 1, 5, 6, 7, 16, 4096, 4097, 2**31, 2**63, -2**63, 1e308, float("nan"), float("inf"), "abc", "",
          None, True, [], {}, [[1]], [1, "a"], {"a": 1}, list(range(6)), [0] * 6, [1e9] * 6, "6"]
ok = refused = 0
for i in range(count):
    path = f"{folder}/m{i % 5}.hypernet"
    kind = rng.random()
    if kind < 0.5:
        meta = dict(meta0)
        for _ in range(rng.randint(1, 3)):
            key = rng.choice(list(meta0) + ["members", "widths", "new"])
            if rng.random() < 0.15:
                meta.pop(key, None)
            else:
                meta[key] = rng.choice(VALUES)
        p = dict(payload)
        p["metadata_json"] = json.dumps(meta)
        if rng.random() < 0.2:
            p["state_dict"] = {k: (v[: max(0, v.shape[0] - 1)] if v.dim() and rng.random() < 0.3 else v)
                               for k, v in payload["state_dict"].items()}
        torch.save(p, path)
    elif kind < 0.65:  # the pickled structure itself, in a valid archive: what the restricted unpickler sees
        pkl = bytearray(structure)
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(len(pkl))
            if rng.random() < 0.5:
                pkl[at] = rng.randrange(256)
            else:
                pkl[at:at] = bytes([rng.choice(OPCODES)])
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
            for name, body in entries:
                zf.writestr(name, bytes(pkl) if name.endswith("/data.pkl") else body)
    else:
        b = bytearray(data)
        if kind < 0.8:
            for _ in range(rng.randint(1, 30)):
                b[rng.randrange(len(b))] = rng.randrange(256)
        elif kind < 0.9:
            b = b[: rng.randrange(len(b))]
        else:
            at = rng.randrange(len(b))
            b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 200)))
        open(path, "wb").write(bytes(b))
    for reader in (read_metadata, load_model):
        try:
            reader(path)
            ok += 1
        except InputError as exc:
            assert "\n" not in str(exc)
            refused += 1
        except BaseException:
            traceback.print_exc()
            print("case", i, "kind", kind, file=sys.stderr)
            sys.exit(1)
print(ok, refused, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
'''


def test_fuzz_model_loading_never_crashes(tmp_path):
    """Random mutations of a real model's metadata, its pickled structure (in a valid archive) and its bytes, read by
    the torch-free reader and by load_model: only InputError, no abort, bounded memory."""
    out = subprocess.run(
        [sys.executable, "-c", FUZZ, str(tmp_path), "300"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    ok, refused, maxrss_kib = (int(v) for v in out.stdout.split())
    assert refused > 300 and ok > 10  # most mutations are refused, some (harmless values) still load
    assert maxrss_kib < 1_500_000, maxrss_kib
