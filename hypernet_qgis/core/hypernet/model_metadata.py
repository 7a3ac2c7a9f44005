"""A HyperNet model file's metadata, read and checked without torch (the QGIS side checks model files with it).

A model file is ``torch.save`` of a plain dict (``model_file.py``)::

    {"format": "hypernet-qgis-model", "format_version": 1, "metadata_json": str, "state_dict": {name: tensor}}

that is, a zip archive whose ``<name>/data.pkl`` entry pickles that dict, each tensor as a call of
``torch._utils._rebuild_tensor_v2`` on a storage named by a persistent id (the bytes are in other entries). This
module reads only ``data.pkl``, with an unpickler that knows exactly those globals (plus ``OrderedDict``) and
maps each to a stand-in that records a tensor's shape and dtype and builds nothing; any other global is refused,
so a crafted file cannot run code, and no weight is read. Then the format, the version, the metadata (a schema
of types and bounds) and the weights' shapes are checked. ``model_file.load_model`` runs the same checks before
it loads the weights with torch. Every refusal is one InputError naming the problem and the fix.
"""

from __future__ import annotations

import collections
import io
import json
import os
import pickle  # nosec B403: only a restricted unpickler (find_class allows the tensor format's names, no code)
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import InputError

FORMAT = "hypernet-qgis-model"
FORMAT_VERSION = 1

#: Bounds of what a model file may claim (far above any real sensor or network; checked before allocating).
MAX_BANDS = 10_000
MAX_WIDTH = 4_096
MAX_MEMBERS = 64
#: Bounds of the archive itself: entries, the pickled structure, the JSON metadata.
MAX_ENTRIES = 10_000
MAX_PICKLE_BYTES = 64 << 20
MAX_METADATA_CHARS = 16 << 20

#: The channel-attention reduction ratio of network.py (REDUCTION; torch-free copy, tests/test_model_metadata.py
#: checks the layout below against the network itself).
_REDUCTION = 16


def _damaged(path: Path, why: str) -> InputError:
    return InputError(
        f"{path} is damaged or not a HyperNet model file ({why}). Train the model again or pick a "
        "model file written by Train HyperNet."
    )


def _code(path: Path) -> InputError:
    return InputError(
        f"Refused to load {path}: it contains Python objects or code, not only weights. Model "
        "files from this plugin never do; only use model files from a trusted source."
    )


# ------------------------------------------------------------------------------------------ the archive


def _check_archive(path: Path, entries: list[zipfile.ZipInfo]) -> None:
    """Refuse archives that could expand in memory: compressed entries (zip bombs), sizes beyond the file's."""
    size = path.stat().st_size
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


def _read_structure(path: Path) -> bytes:
    """The archive's ``data.pkl`` (the pickled dict), after the checks of a missing, empty or foreign file and of
    the archive's directory. Found as torch finds it: in the folder of the archive's first entry."""
    if not path.is_file():
        raise InputError(
            f"Model file {path} does not exist. Train a model first (Train HyperNet) or pick an existing model file."
        )
    if path.stat().st_size == 0:
        raise InputError(
            f"Model file {path} is empty (an interrupted copy?). Train the model again or pick another file."
        )
    if not zipfile.is_zipfile(path):
        raise InputError(
            f"{path} is not a HyperNet model file (not a PyTorch archive). Pick a model file written by Train HyperNet."
        )
    try:
        with zipfile.ZipFile(path) as zf:
            entries = zf.infolist()
            _check_archive(path, entries)
            if not entries:
                raise _damaged(path, "an empty archive")
            name = entries[0].filename.split("/", 1)[0] + "/data.pkl"
            try:
                info = zf.getinfo(name)
            except KeyError:
                raise _damaged(path, "no data.pkl in the archive") from None
            return zf.read(info)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001  (zipfile raises many kinds on crafted directories)
        raise _damaged(path, f"unreadable archive: {type(exc).__name__}") from None


# --------------------------------------------------------------------------- the restricted unpickler


class TensorInfo(NamedTuple):
    """What ``data.pkl`` says of one tensor, without its values: shape and dtype (as torch prints it)."""

    shape: tuple[int, ...]
    dtype: str


# The stand-ins are named tuples: a crafted pickle cannot change them (BUILD finds no __dict__ and no setter).
class _StorageType(NamedTuple):
    """The stand-in for ``torch.FloatStorage`` and its kin: names the dtype of a storage."""

    dtype: str


class _Storage(NamedTuple):
    """The stand-in for a storage (a persistent id): its dtype; its bytes are never read."""

    dtype: str


#: ``torch.<Name>Storage`` -> the dtype torch prints (tests/test_model_metadata.py checks them against torch).
STORAGE_DTYPES = {
    "DoubleStorage": "torch.float64",
    "FloatStorage": "torch.float32",
    "HalfStorage": "torch.float16",
    "BFloat16Storage": "torch.bfloat16",
    "LongStorage": "torch.int64",
    "IntStorage": "torch.int32",
    "ShortStorage": "torch.int16",
    "CharStorage": "torch.int8",
    "ByteStorage": "torch.uint8",
    "BoolStorage": "torch.bool",
    "ComplexDoubleStorage": "torch.complex128",
    "ComplexFloatStorage": "torch.complex64",
}


def _rebuild_tensor(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> TensorInfo:
    """The stand-in for ``torch._utils._rebuild_tensor_v2``: a TensorInfo from checked arguments."""
    if (
        not isinstance(storage, _Storage)
        or not isinstance(size, tuple)
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in size)
    ):
        raise pickle.UnpicklingError("a tensor without a storage or a shape")
    return TensorInfo(size, storage.dtype)


class _RefusedGlobal(pickle.UnpicklingError):
    """data.pkl names a global outside the tensor format: Python objects or code."""


class _WeightsOnlyUnpickler(pickle._Unpickler):
    """Unpickles the structure of a torch zip archive: dicts, lists, numbers, strings, OrderedDict and tensors
    (as TensorInfo). Every other global is refused before anything is looked up or called.

    The pure-Python unpickler (as torch's weights-only one): its memo is a dict. The C unpickler's memo is an
    array sized by the largest index a PUT names, so five crafted bytes (LONG_BINPUT 2**27) cost it 2 GB.
    """

    GLOBALS: dict[tuple[str, str], Any] = {
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("collections", "OrderedDict"): collections.OrderedDict,
        **{("torch", name): _StorageType(dtype) for name, dtype in STORAGE_DTYPES.items()},
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.GLOBALS[(module, name)]
        except KeyError:
            raise _RefusedGlobal(f"global {module}.{name} is not allowed") from None

    def persistent_load(self, pid: Any) -> Any:
        # ("storage", storage type, key, location, element count): the storage, never its bytes
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError("an unknown persistent id")
        return _Storage(pid[1].dtype)


def _unpickle(data: bytes, path: Path) -> Any:
    try:
        return _WeightsOnlyUnpickler(io.BytesIO(data), encoding="utf-8").load()
    except _RefusedGlobal:
        raise _code(path) from None
    except Exception:  # noqa: BLE001  (a crafted pickle fails in many ways; all of them are "damaged")
        raise InputError(f"{path} is damaged or not a HyperNet model file. Train the model again.") from None


# ---------------------------------------------------------------------------------------- the metadata


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
    if not isinstance(value, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
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
        if not isinstance(selection, list) or not all(
            isinstance(b, int) and not isinstance(b, bool) and 1 <= b <= 100_000 for b in selection
        ):
            raise _damaged(path, "metadata band_selection is not a list of band numbers from 1")
        if len(selection) != bands or len(set(selection)) != len(selection):
            raise _damaged(
                path, f"metadata band_selection lists {len(selection)} bands (or a band twice) for a network of {bands}"
            )
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


def check_format(payload: Any, path: Path) -> dict:
    """The payload is a HyperNet model dict of this format version; its metadata, parsed and validated."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(
            f"{path} is a PyTorch file but not a HyperNet model file. Pick a model file written by Train HyperNet."
        )
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise InputError(
            f"{path} has model format version {version!r}; this plugin reads version "
            f"{FORMAT_VERSION}. Update the plugin or train the model again with this version."
        )
    text = payload.get("metadata_json")
    if not isinstance(text, str) or len(text) > MAX_METADATA_CHARS:
        raise _damaged(path, "its metadata is missing or too large")
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError):
        raise _damaged(path, "its metadata is not valid JSON") from None
    return validate_metadata(meta, path)


# ------------------------------------------------------------------------------------ the weights' shapes


def _conv(key: str, out: int, inp: int, kernel: int, bias: bool = False) -> Iterator[tuple[str, tuple[int, ...]]]:
    yield f"{key}.weight", (out, inp, kernel, kernel)
    if bias:
        yield f"{key}.bias", (out,)


def _batchnorm(key: str, n: int, affine: bool = True) -> Iterator[tuple[str, tuple[int, ...]]]:
    if affine:
        yield from ((f"{key}.weight", (n,)), (f"{key}.bias", (n,)))
    yield from ((f"{key}.running_mean", (n,)), (f"{key}.running_var", (n,)), (f"{key}.num_batches_tracked", ()))


def _attention(key: str, channels: int) -> Iterator[tuple[str, tuple[int, ...]]]:
    hidden = max(1, channels // _REDUCTION)
    yield from _conv(f"{key}.fc1", hidden, channels, 1)
    yield from _conv(f"{key}.fc2", channels, hidden, 1)


def _layout(bands: int, width: int, proj: int, pred: int) -> Iterator[tuple[str, tuple[int, ...]]]:
    """Key and shape of every tensor of ``HyperNet(bands, width, proj, pred).state_dict()``, in order."""
    for i, inp in enumerate((bands, width, width), 1):
        yield from _conv(f"rsab{i}.conv", width, inp, 3)
        yield from _batchnorm(f"rsab{i}.bn", width)
        yield from _attention(f"rsab{i}.ca", width)
        yield from _conv(f"rsab{i}.sa.conv", 1, 2, 7)
        if inp != width:
            yield from _conv(f"rsab{i}.shortcut.0", width, inp, 1)
            yield from _batchnorm(f"rsab{i}.shortcut.1", width)
    for i, inp in enumerate((bands, width, width), 1):
        yield from _conv(f"rcab{i}.conv", width, inp, 1)
        yield from _batchnorm(f"rcab{i}.bn", width)
        yield from _attention(f"rcab{i}.ca", width)
    for name, kernel in (("fuse_spatial", 1), ("fuse_spectral", 3)):
        yield from _conv(f"{name}.0", width, width, kernel)
        yield from _batchnorm(f"{name}.1", width)
    yield from _conv("projector.0", proj, 2 * width, 1)
    yield from _batchnorm("projector.1", proj)
    yield from _conv("projector.3", proj, proj, 1)
    yield from _batchnorm("projector.4", proj)
    yield from _conv("projector.6", proj, proj, 1, bias=True)
    yield from _batchnorm("projector.7", proj, affine=False)
    yield from _conv("predictor.0", pred, proj, 1)
    yield from _batchnorm("predictor.1", pred)
    yield from _conv("predictor.3", proj, pred, 1)


def expected_shapes(meta: dict) -> dict[str, tuple[tuple[int, ...], str]]:
    """Key -> (shape, dtype) of the state dict the metadata implies, without torch (``model_file.expected_state``
    is the same from the network itself). A file with ``members: K`` holds K networks under ``members.<i>.``."""
    single = {
        k: (shape, "torch.int64" if k.endswith("num_batches_tracked") else "torch.float32")
        for k, shape in _layout(meta["bands"], meta["width"], meta["proj_width"], meta["pred_hidden"])
    }
    members = meta.get("members")
    if not members:
        return single
    return {f"members.{i}.{k}": v for i in range(members) for k, v in single.items()}


def _as_tensor_info(value: Any) -> TensorInfo | None:
    return value if isinstance(value, TensorInfo) else None


def check_shapes(
    state: Any, meta: dict, path: Path, describe: Callable[[Any], TensorInfo | None] = _as_tensor_info
) -> None:
    """The state dict holds exactly the tensors the metadata implies: keys, shapes, dtypes.

    ``describe`` gives a value's TensorInfo, or None when it is not a tensor: by default the unpickled stand-ins;
    ``model_file`` passes one for torch's tensors, so that the loaded weights get the same check and messages.
    """
    described = {k: describe(v) for k, v in state.items()} if isinstance(state, dict) else {}
    if not isinstance(state, dict) or not all(isinstance(k, str) and t is not None for k, t in described.items()):
        raise _damaged(path, "its weights are not a dict of tensors")
    infos = {k: t for k, t in described.items() if t is not None}
    expected = expected_shapes(meta)
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise InputError(
            f"{path} is damaged: its weights do not fit a HyperNet of {meta['bands']} bands and width "
            f"{meta['width']} ({'missing ' + missing[0] if missing else 'unexpected ' + extra[0]}). "
            "Train the model again."
        )
    for key, (shape, dtype) in expected.items():
        t = infos[key]
        if t.shape != shape or t.dtype != dtype:
            raise InputError(
                f"{path} is damaged: its weights do not fit a HyperNet of {meta['bands']} bands and "
                f"width {meta['width']} ({key} is {t.shape} {t.dtype}, expected {shape} "
                f"{dtype}). Train the model again."
            )


# ------------------------------------------------------------------------------------------------ entry


def read_metadata(path: str | os.PathLike) -> dict:
    """A model file's metadata, validated (schema and the weights' shapes), without torch and without reading
    the weights.

    Raises InputError for a missing, empty, damaged or foreign file, a file that carries pickled code, a newer
    format version, metadata outside the schema or weights whose shapes do not fit it.
    """
    path = Path(path)
    payload = _unpickle(_read_structure(path), path)
    meta = check_format(payload, path)
    check_shapes(payload.get("state_dict"), meta, path)
    return meta
