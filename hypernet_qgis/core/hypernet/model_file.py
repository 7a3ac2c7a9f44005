"""Safe HyperNet model files: tensors plus JSON metadata, loaded without unpickling any code.

A model file is ``torch.save`` of a plain dict::

    {"format": "hypernet-qgis-model", "format_version": 1, "metadata_json": str, "state_dict": {name: tensor}}

The archive, the format, the metadata and the weights' shapes are checked first without torch
(``model_metadata.py``: a restricted unpickler that refuses every global but the tensor format's, so a crafted
file cannot run code; the QGIS side reads metadata with it alone). The weights are then read with
``torch.load(weights_only=True)``, which only rebuilds tensors and plain containers, and checked against the
network itself. The metadata records how the model was made (bands, widths, wavelengths, scaling statistics,
training settings, loss history, software versions).
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from ..errors import InputError
from ..io.atomic import atomic_file

# the torch-free checks and their names live in model_metadata; re-exported here for the engine's callers
from .model_metadata import (  # noqa: F401
    FORMAT,
    FORMAT_VERSION,
    TensorInfo,
    _code,
    check_shapes,
    read_metadata,
    validate_metadata,
)
from .network import HyperNet


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
        bands=model.bands,
        width=model.width,
        proj_width=model.proj_width,
        pred_hidden=model.pred_hidden,
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


def _tensor_info(value: Any) -> TensorInfo | None:
    """A loaded tensor as model_metadata's TensorInfo (shape, dtype as torch prints it), for check_shapes."""
    return TensorInfo(tuple(value.shape), str(value.dtype)) if isinstance(value, torch.Tensor) else None


def _check_finite(state: dict, path: Path) -> None:
    for key, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise InputError(
                f"{path} holds NaN or infinite weights ({key}): its training diverged. Train the model "
                "again with a lower LEARNING_RATE."
            )


def _read_checked(path: Path) -> tuple[dict, dict]:
    """(validated metadata, state dict memory-mapped and checked against it). The file passes the torch-free
    checks (model_metadata.read_metadata: archive, no code, format, metadata, shapes) before torch reads it."""
    meta = read_metadata(path)
    try:
        with warnings.catch_warnings():  # a crafted pickle makes torch warn on stderr; the message says enough
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001  (any failure of a foreign file is "damaged")
        # torch raises pickle's UnpicklingError for globals it refuses (matched by name: no pickle import here)
        if type(exc).__name__ == "UnpicklingError" and "global" in str(exc).lower():
            raise _code(path) from None
        raise InputError(f"{path} is damaged or not a HyperNet model file. Train the model again.") from None
    state = payload.get("state_dict") if isinstance(payload, dict) else None
    check_shapes(state, meta, path, describe=_tensor_info)  # the loaded weights, as the torch-free check saw them
    return meta, cast(dict, state)  # check_shapes refused anything but a dict of tensors


def load_model(
    path: str | os.PathLike, expected_bands: int | None = None, device: str | torch.device = "cpu"
) -> tuple[HyperNet, dict]:
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
        raise InputError(
            f"The model was trained on {bands} bands but the image has {int(expected_bands)}; train a "
            "model on this sensor's bands or pick the same band subset."
        )
    if meta.get("members"):
        raise InputError(
            f"{path} holds {meta['members']} networks; this version reads single-network model files. "
            "Update the plugin."
        )
    _check_finite(state, path)
    model = HyperNet(bands, meta["width"], meta["proj_width"], meta["pred_hidden"])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:
        raise InputError(
            f"{path} is damaged: its weights do not fit a HyperNet of {bands} bands and width "
            f"{meta['width']}. Train the model again."
        ) from None
    return model.to(device).eval(), meta
