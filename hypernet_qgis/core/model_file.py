"""Safe HyperNet model files: tensors plus JSON metadata, loaded without unpickling any code.

A model file is ``torch.save`` of a plain dict::

    {"format": "hypernet-qgis-model", "format_version": 1, "metadata_json": str, "state_dict": {name: tensor}}

and is read with ``torch.load(weights_only=True)``, which only rebuilds tensors and plain containers and refuses
any other Python object (so a crafted file cannot run code). The metadata records how the model was made
(bands, widths, wavelengths, scaling statistics, training settings, loss history, software versions).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import atomic_file
from .errors import InputError
from .network import HyperNet

FORMAT = "hypernet-qgis-model"
FORMAT_VERSION = 1


def software_versions() -> dict[str, str | None]:
    """Versions of the software that made a model (for reproducibility)."""
    from .. import __version__

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
    with atomic_file(path, "the model file", "model.pt") as fh:
        torch.save(payload, fh)


def _read_payload(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"Model file {path} does not exist. Train a model first (Train HyperNet) or pick an existing "
                         "model file.")
    if path.stat().st_size == 0:
        raise InputError(f"Model file {path} is empty (an interrupted copy?). Train the model again or pick another file.")
    if not zipfile.is_zipfile(path):
        raise InputError(f"{path} is not a HyperNet model file (not a PyTorch archive). Pick a model file written by "
                         "Train HyperNet.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "global" in str(exc).lower():
            raise InputError(f"Refused to load {path}: it contains Python objects or code, not only weights. Model "
                             "files from this plugin never do; only use model files from a trusted source.") from None
        raise InputError(f"{path} is damaged or not a HyperNet model file. Train the model again.") from None
    except Exception:
        raise InputError(f"{path} is damaged or not a HyperNet model file. Train the model again.") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"{path} is a PyTorch file but not a HyperNet model file. Pick a model file written by "
                         "Train HyperNet.")
    return payload


def load_model(path: str | os.PathLike, expected_bands: int | None = None,
               device: str | torch.device = "cpu") -> tuple[HyperNet, dict]:
    """Read a model file safely; return (HyperNet in eval mode on ``device``, metadata).

    Raises InputError for a missing, empty, damaged or foreign file, a file that carries pickled code, a newer
    format version, or a band count different from ``expected_bands``.
    """
    path = Path(path)
    payload = _read_payload(path)
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise InputError(f"{path} has model format version {version!r}; this plugin reads version {FORMAT_VERSION}. "
                         "Update the plugin or train the model again with this version.")
    try:
        meta = json.loads(payload["metadata_json"])
        state = payload["state_dict"]
        bands, width = int(meta["bands"]), int(meta["width"])
        proj_width, pred_hidden = int(meta["proj_width"]), int(meta["pred_hidden"])
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise TypeError("state_dict is not a dict of tensors")
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{path} is damaged (its metadata or weights are incomplete). Train the model again.") from None
    if expected_bands is not None and int(expected_bands) != bands:
        raise InputError(f"The model was trained on {bands} bands but the image has {int(expected_bands)}; train a "
                         "model on this sensor's bands or pick the same band subset.")
    model = HyperNet(bands, width, proj_width, pred_hidden)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:
        raise InputError(f"{path} is damaged: its weights do not fit a HyperNet of {bands} bands and width {width}. "
                         "Train the model again.") from None
    return model.to(device).eval(), meta
