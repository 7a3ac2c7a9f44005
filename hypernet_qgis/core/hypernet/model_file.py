"""Safe HyperNet model files: tensors plus JSON metadata, loaded without unpickling any code.

A model file is ``torch.save`` of a plain dict::

    {"format": "hypernet-qgis-model", "format_version": 1, "metadata_json": str, "state_dict": {name: tensor}}

and is read with ``torch.load(weights_only=True)``, which only rebuilds tensors and plain containers and refuses
any other Python object (so a crafted file cannot run code). The metadata records how the model was made
(bands, widths, wavelengths, scaling statistics, training settings, loss history, software versions).
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from ..errors import InputError
from ..io.atomic import atomic_file
from .network import HyperNet

FORMAT = "hypernet-qgis-model"
FORMAT_VERSION = 1


def software_versions() -> dict[str, str | None]:
    """Versions of the software that made a model (for reproducibility)."""
    from ... import __version__

    try:
        from osgeo import gdal

        gdal_version: str | None = gdal.__version__
    except Exception:  # GDAL is optional for the engine itself
        gdal_version = None
    return {"hypernet_qgis": __version__, "torch": torch.__version__, "numpy": np.__version__, "gdal": gdal_version}


def _jsonable(value: Any) -> Any:
    """json.dumps fallback: numpy scalars/arrays and tensors as plain numbers/lists, paths as strings."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.tolist()
    if isinstance(value, (Path, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"metadata value of type {type(value).__name__} cannot be stored as JSON")


def save_model(path: str | os.PathLike, model: HyperNet, metadata: dict | None = None) -> None:
    """Write ``model`` and ``metadata`` to ``path`` atomically (temp file in the same folder, then rename)."""
    meta = dict(metadata or {})
    meta.update(
        bands=model.bands, width=model.width, proj_width=model.proj_width, pred_hidden=model.pred_hidden,
        widths=[model.bands, model.width, model.proj_width, model.pred_hidden],
    )
    meta.setdefault("software", software_versions())
    meta.setdefault("saved_utc", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "metadata_json": json.dumps(meta, default=_jsonable, sort_keys=True),
        "state_dict": {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()},
    }
    buffer = io.BytesIO()  # torch's writer turns a full disk into an opaque RuntimeError; plain writes do not
    torch.save(payload, buffer)
    with atomic_file(path, "the model file", "model.pt") as fh:
        fh.write(buffer.getbuffer())


#: Bounds of what a model file may claim (far above any real sensor or network; checked before allocating).
MAX_BANDS = 10_000
MAX_WIDTH = 4_096
MAX_MEMBERS = 64
#: Bounds of the archive itself: entries, the pickled structure, the JSON metadata.
MAX_ENTRIES = 10_000
MAX_PICKLE_BYTES = 64 << 20
MAX_METADATA_CHARS = 16 << 20


def _damaged(path: Path, why: str) -> InputError:
    return InputError(f"{path} is damaged or not a HyperNet model file ({why}). Train the model again or pick a "
                      "model file written by Train HyperNet.")


def _check_archive(path: Path) -> None:
    """Refuse archives that could expand in memory: compressed entries (zip bombs), sizes beyond the file's."""
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as zf:
            entries = zf.infolist()
    except Exception as exc:  # noqa: BLE001  (zipfile raises many kinds on crafted directories)
        raise _damaged(path, f"unreadable archive: {type(exc).__name__}") from None
    if len(entries) > MAX_ENTRIES:
        raise _damaged(path, f"{len(entries)} archive entries")
    total = 0
    for e in entries:
        if e.compress_type != zipfile.ZIP_STORED:  # torch.save never compresses; expansion = a zip bomb
            raise _damaged(path, f"compressed entry {e.filename!r}")
        if e.file_size != e.compress_size or e.file_size > size:
            raise _damaged(path, f"entry {e.filename!r} claims {e.file_size} bytes in a {size}-byte file")
        if e.filename.endswith("data.pkl") and e.file_size > MAX_PICKLE_BYTES:
            raise _damaged(path, f"a {e.file_size}-byte structure")
        total += e.file_size
    if total > size:
        raise _damaged(path, f"entries claim {total} bytes in a {size}-byte file")


def _read_payload(path: Path) -> dict:
    """The file's top-level dict, with the weights memory-mapped (not read) and no code run."""
    if not path.is_file():
        raise InputError(f"Model file {path} does not exist. Train a model first (Train HyperNet) or pick an existing "
                         "model file.")
    if path.stat().st_size == 0:
        raise InputError(f"Model file {path} is empty (an interrupted copy?). Train the model again or pick another file.")
    if not zipfile.is_zipfile(path):
        raise InputError(f"{path} is not a HyperNet model file (not a PyTorch archive). Pick a model file written by "
                         "Train HyperNet.")
    _check_archive(path)
    try:
        with warnings.catch_warnings():  # a crafted pickle makes torch warn on stderr; the message says enough
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001  (any failure of a foreign file is "damaged")
        # torch raises pickle's UnpicklingError for globals it refuses (matched by name: no pickle import here)
        if type(exc).__name__ == "UnpicklingError" and "global" in str(exc).lower():
            raise InputError(f"Refused to load {path}: it contains Python objects or code, not only weights. Model "
                             "files from this plugin never do; only use model files from a trusted source.") from None
        raise InputError(f"{path} is damaged or not a HyperNet model file. Train the model again.") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"{path} is a PyTorch file but not a HyperNet model file. Pick a model file written by "
                         "Train HyperNet.")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise InputError(f"{path} has model format version {version!r}; this plugin reads version {FORMAT_VERSION}. "
                         "Update the plugin or train the model again with this version.")
    return payload


def _int_field(meta: dict, key: str, lo: int, hi: int, path: Path, required: bool = True) -> int | None:
    value = meta.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _damaged(path, f"metadata {key} = {value!r}, expected a whole number from {lo} to {hi}")
    return value


def _number_list(meta: dict, key: str, path: Path, length: int | None = None) -> None:
    value = meta.get(key)
    if value is None:
        return
    if not isinstance(value, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                              for v in value):
        raise _damaged(path, f"metadata {key} is not a list of numbers")
    if length is not None and len(value) != length:
        raise _damaged(path, f"metadata {key} has {len(value)} values for {length} bands")


def validate_metadata(meta: Any, path: str | os.PathLike = "the model file") -> dict:
    """Check a model's metadata against the schema (types and bounds); return it with band_count filled in.

    Raises InputError naming the first bad field. Nothing is allocated from the values before they pass.
    """
    path = Path(path)
    if not isinstance(meta, dict):
        raise _damaged(path, "its metadata is not a JSON object")
    bands = _int_field(meta, "bands", 1, MAX_BANDS, path)
    _int_field(meta, "width", 1, MAX_WIDTH, path)
    for key in ("proj_width", "pred_hidden"):  # 2 x width by default
        _int_field(meta, key, 1, 2 * MAX_WIDTH, path)
    widths = meta.get("widths")
    if widths is not None and widths != [bands, meta["width"], meta["proj_width"], meta["pred_hidden"]]:
        raise _damaged(path, f"metadata widths {widths!r} disagree with bands/width/proj_width/pred_hidden")
    count = _int_field(meta, "band_count", 1, MAX_BANDS, path, required=False)
    if count is not None and count != bands:
        raise _damaged(path, f"metadata band_count {count} but the network takes {bands} bands")
    selection = meta.get("band_selection")
    if selection is not None:
        if (not isinstance(selection, list) or not all(isinstance(b, int) and not isinstance(b, bool)
                                                       and 1 <= b <= 100_000 for b in selection)):
            raise _damaged(path, "metadata band_selection is not a list of band numbers from 1")
        if len(selection) != bands or len(set(selection)) != len(selection):
            raise _damaged(path, f"metadata band_selection lists {len(selection)} bands (or a band twice) for a "
                                 f"network of {bands}")
    _number_list(meta, "wavelengths_nm", path, bands)
    _number_list(meta, "loss_history", path)
    _int_field(meta, "members", 1, MAX_MEMBERS, path, required=False)
    for key in ("training", "scaling", "software", "inputs"):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            raise _damaged(path, f"metadata {key} is not a JSON object")
    for key in ("distance", "device", "mask_g", "saved_utc"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise _damaged(path, f"metadata {key} is not a string")
    out = dict(meta)
    out["band_count"] = bands
    return out


def expected_state(meta: dict) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Key -> (shape, dtype) of the state dict the metadata implies, from a network built on torch's "meta"
    device (no memory). A file with ``members: K`` holds K networks under the keys ``members.<i>.``."""
    with torch.device("meta"):
        net = HyperNet(meta["bands"], meta["width"], meta["proj_width"], meta["pred_hidden"])
    single = {k: (tuple(v.shape), v.dtype) for k, v in net.state_dict().items()}
    members = meta.get("members")
    if not members:
        return single
    return {f"members.{i}.{k}": v for i in range(members) for k, v in single.items()}


def _check_state(state: Any, meta: dict, path: Path) -> None:
    """The weights are exactly the tensors the metadata implies (keys, shapes, dtypes) and all finite."""
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise _damaged(path, "its weights are not a dict of tensors")
    expected = expected_state(meta)
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise InputError(f"{path} is damaged: its weights do not fit a HyperNet of {meta['bands']} bands and width "
                         f"{meta['width']} ({'missing ' + missing[0] if missing else 'unexpected ' + extra[0]}). "
                         "Train the model again.")
    for key, (shape, dtype) in expected.items():
        t = state[key]
        if tuple(t.shape) != shape or t.dtype != dtype:
            raise InputError(f"{path} is damaged: its weights do not fit a HyperNet of {meta['bands']} bands and "
                             f"width {meta['width']} ({key} is {tuple(t.shape)} {t.dtype}, expected {shape} "
                             f"{dtype}). Train the model again.")


def _check_finite(state: dict, path: Path) -> None:
    for key, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise InputError(f"{path} holds NaN or infinite weights ({key}): its training diverged. Train the model "
                             "again with a lower LEARNING_RATE.")


def _read_checked(path: Path) -> tuple[dict, dict]:
    """(validated metadata, state dict memory-mapped and checked against it)."""
    payload = _read_payload(path)
    text = payload.get("metadata_json")
    if not isinstance(text, str) or len(text) > MAX_METADATA_CHARS:
        raise _damaged(path, "its metadata is missing or too large")
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError):
        raise _damaged(path, "its metadata is not valid JSON") from None
    meta = validate_metadata(meta, path)
    state = payload.get("state_dict")
    _check_state(state, meta, path)
    return meta, cast(dict, state)  # _check_state refused anything but a dict of tensors


def read_metadata(path: str | os.PathLike) -> dict:
    """A model file's metadata, validated (schema and the weights' shapes), without reading the weights.

    Raises InputError like load_model for a missing, empty, damaged, foreign or code-carrying file.
    """
    return _read_checked(Path(path))[0]


def load_model(path: str | os.PathLike, expected_bands: int | None = None,
               device: str | torch.device = "cpu") -> tuple[HyperNet, dict]:
    """Read a model file safely; return (HyperNet in eval mode on ``device``, metadata).

    Raises InputError for a missing, empty, damaged or foreign file, a file that carries pickled code, a newer
    format version, metadata outside the schema, weights that do not fit the metadata or are not finite, or a
    band count different from ``expected_bands``. Nothing is allocated before the metadata and the weights'
    shapes are checked; memory stays within the file's size.
    """
    path = Path(path)
    meta, state = _read_checked(path)
    bands = meta["bands"]
    if expected_bands is not None and int(expected_bands) != bands:
        raise InputError(f"The model was trained on {bands} bands but the image has {int(expected_bands)}; train a "
                         "model on this sensor's bands or pick the same band subset.")
    if meta.get("members"):
        raise InputError(f"{path} holds {meta['members']} networks; this version reads single-network model files. "
                         "Update the plugin.")
    _check_finite(state, path)
    model = HyperNet(bands, meta["width"], meta["proj_width"], meta["pred_hidden"])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:
        raise InputError(f"{path} is damaged: its weights do not fit a HyperNet of {bands} bands and width "
                         f"{meta['width']}. Train the model again.") from None
    return model.to(device).eval(), meta
