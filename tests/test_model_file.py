"""Model files: round trip, metadata, atomic writing, and every refusal."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from hypernet_qgis import __version__
from hypernet_qgis.core.errors import InputError
from hypernet_qgis.core.hypernet.model_file import FORMAT, FORMAT_VERSION, load_model, save_model
from hypernet_qgis.core.hypernet.network import HyperNet


def _trained_like_model(bands: int = 6, width: int = 16) -> HyperNet:
    torch.manual_seed(3)
    model = HyperNet(bands, width)
    model.train()
    with torch.no_grad():  # give the BN running statistics non-default values
        model(torch.randn(1, bands, 7, 8))
    return model.eval()


def _payload(model: HyperNet, **extra) -> dict:
    meta = {
        "bands": model.bands,
        "width": model.width,
        "proj_width": model.proj_width,
        "pred_hidden": model.pred_hidden,
    }
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "metadata_json": json.dumps(meta),
        "state_dict": model.state_dict(),
    }
    payload.update(extra)
    return payload


def test_round_trip_weights_outputs_and_metadata(tmp_path):
    model = _trained_like_model()
    meta = {
        "gamma": 2.0,
        "epochs": np.int64(5),
        "seed": 7,
        "loss_history": np.array([0.5, 0.25], np.float32),
        "wavelengths_nm": [450.0, 550.0, 650.0, 750.0, 850.0, 950.0],
        "scaling": {"t1": {"mean": [1.0] * 6, "std": [2.0] * 6}},
        "note": "hello",
    }
    path = tmp_path / "m.pt"
    save_model(path, model, meta)
    loaded, got = load_model(path, expected_bands=6)
    assert not loaded.training
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    x = torch.randn(1, 6, 9, 11)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert got["bands"] == 6 and got["width"] == 16 and got["widths"] == [6, 16, 32, 16]
    assert got["epochs"] == 5 and got["seed"] == 7 and got["gamma"] == 2.0 and got["note"] == "hello"
    assert got["loss_history"] == [0.5, 0.25]
    assert got["wavelengths_nm"][0] == 450.0 and got["scaling"]["t1"]["std"][0] == 2.0
    sw = got["software"]
    assert sw["torch"] == torch.__version__ and sw["numpy"] == np.__version__ and sw["hypernet_qgis"] == __version__
    assert "gdal" in sw
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temp file left behind


def test_file_is_a_plain_dict_of_tensors(tmp_path):
    path = tmp_path / "m.pt"
    save_model(path, _trained_like_model(), {})
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT and raw["format_version"] == 1
    assert isinstance(raw["metadata_json"], str)
    assert all(isinstance(v, torch.Tensor) for v in raw["state_dict"].values())


def test_failed_save_keeps_the_old_file(tmp_path):
    path = tmp_path / "m.pt"
    save_model(path, _trained_like_model(), {"version": 1})
    before = path.read_bytes()
    with pytest.raises(TypeError):
        save_model(path, _trained_like_model(), {"bad": object()})  # not JSON-able: fails before replacing
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_missing_folder(tmp_path):
    with pytest.raises(InputError, match="is a folder"):
        save_model(tmp_path, _trained_like_model(), {})
    with pytest.raises(InputError, match="does not exist"):
        save_model(tmp_path / "nope" / "m.pt", _trained_like_model(), {})


def test_missing_and_empty_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_model(tmp_path / "absent.pt")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_model(empty)


def test_not_a_model_file(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a model" * 10)
    with pytest.raises(InputError, match="not a HyperNet model file"):
        load_model(junk)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(InputError, match="not a HyperNet model file"):
        load_model(other)


def test_truncated_file(tmp_path):
    path = tmp_path / "m.pt"
    save_model(path, _trained_like_model(), {})
    data = path.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="damaged|not a HyperNet"):
        load_model(cut)


def _write_marker(path: str) -> str:
    """The 'payload' a malicious file would run: leaves a marker file."""
    Path(path).write_text("code ran")
    return "pwned"


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (_write_marker, (self.marker,))


class _CustomObject:
    pass


def test_pickled_code_is_refused_without_running(tmp_path):
    marker = tmp_path / "marker.txt"
    model = _trained_like_model()
    evil = tmp_path / "evil.pt"
    torch.save(_payload(model, extra=_Payload(str(marker))), evil)
    with pytest.raises(InputError, match="Python objects or code"):
        load_model(evil)
    assert not marker.exists()
    # the payload is real: an unsafe load would have run it
    torch.load(evil, weights_only=False)
    assert marker.read_text() == "code ran"


def test_custom_class_is_refused(tmp_path):
    evil = tmp_path / "custom.pt"
    torch.save(_payload(_trained_like_model(), extra=_CustomObject()), evil)
    with pytest.raises(InputError, match="Python objects or code"):
        load_model(evil)


def test_wrong_format_version(tmp_path):
    path = tmp_path / "v2.pt"
    payload = _payload(_trained_like_model())
    payload["format_version"] = 2
    torch.save(payload, path)
    with pytest.raises(InputError, match="format version 2"):
        load_model(path)


def test_band_count_mismatch(tmp_path):
    path = tmp_path / "m.pt"
    save_model(path, HyperNet(204, 16), {})
    with pytest.raises(InputError) as err:
        load_model(path, expected_bands=6)
    assert str(err.value) == (
        "The model was trained on 204 bands but the image has 6; train a model on this "
        "sensor's bands or pick the same band subset."
    )
    model, meta = load_model(path, expected_bands=204)
    assert meta["bands"] == 204 and model.bands == 204


def test_weights_that_do_not_fit(tmp_path):
    path = tmp_path / "m.pt"
    model = _trained_like_model()
    payload = _payload(model)
    meta = json.loads(payload["metadata_json"])
    meta["width"] = 32
    payload["metadata_json"] = json.dumps(meta)
    torch.save(payload, path)
    with pytest.raises(InputError, match="damaged"):
        load_model(path)


def test_incomplete_metadata(tmp_path):
    path = tmp_path / "m.pt"
    payload = _payload(_trained_like_model())
    payload["metadata_json"] = "{not json"
    torch.save(payload, path)
    with pytest.raises(InputError, match="damaged"):
        load_model(path)


def test_relative_path_in_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_model("rel.pt", _trained_like_model(), {})
    assert os.path.isfile(tmp_path / "rel.pt")
    load_model("rel.pt")
