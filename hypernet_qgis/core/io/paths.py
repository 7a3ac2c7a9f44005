"""One check of a job's output paths, before any work starts.

Every output (rasters, model, report) must be a file name in an existing, writable folder, must not be read-only,
must not be any input or any file an input is made of (the sources behind a VRT, an ENVI header and its data
file; compared with ``os.path.samefile``, so links and other spellings of a path are caught), and no two outputs
may be the same file. The CLI calls it for every subcommand, the pipeline jobs and the QGIS algorithms too.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError

#: ENVI data files beside a header ``name.hdr``: ``name``, ``name.img``, ...
ENVI_DATA_SUFFIXES = (
    "",
    ".img",
    ".IMG",
    ".dat",
    ".DAT",
    ".bsq",
    ".BSQ",
    ".bil",
    ".BIL",
    ".bip",
    ".BIP",
    ".raw",
    ".RAW",
    ".bin",
    ".BIN",
)
_MAX_DEPTH = 4  # VRT of VRT of ...


def _absolute(path: str) -> str:
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def _partners(path: str) -> set[str]:
    """The file and its ENVI header/data partners (whether they exist or not)."""
    p = Path(path)
    out = {str(p)}
    if p.suffix.lower() == ".hdr":
        stem = p.with_suffix("")
        out |= {str(stem) + s for s in ENVI_DATA_SUFFIXES}
    else:
        for s in (".hdr", ".HDR", ".Hdr"):
            out.add(str(p) + s)
            out.add(str(p.with_suffix(s)))
    return out


@contextlib.contextmanager
def _gdal_quiet() -> Iterator[Any]:
    try:
        from osgeo import gdal
    except ImportError:  # the model-only jobs run without GDAL
        yield None
        return
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        yield gdal
    finally:
        gdal.PopErrorHandler()


def _gdal_files(path: str, depth: int = 0) -> set[str]:
    """Files GDAL reads for the raster ``path`` (a VRT's sources, recursively); empty when it is no raster."""
    if depth > _MAX_DEPTH or not os.path.isfile(path):
        return set()
    with _gdal_quiet() as gdal:
        if gdal is None:
            return set()
        try:
            ds = gdal.OpenEx(path, gdal.OF_RASTER | gdal.OF_READONLY)
        except RuntimeError:
            ds = None
        if ds is None:
            return set()
        files = [f for f in (ds.GetFileList() or []) if not f.startswith("/vsi")]
        ds = None  # noqa: F841
    out: set[str] = set()
    for f in files:
        f = _absolute(f)
        out.add(f)
        if f != _absolute(path) and f.lower().endswith(".vrt"):
            out |= _gdal_files(f, depth + 1)
    return out


def input_files(inputs: Iterable[str | os.PathLike | None]) -> dict[str, str]:
    """Every file the inputs are made of -> the input it belongs to (as the user gave it)."""
    out: dict[str, str] = {}
    for inp in inputs:
        if inp is None or inp == "":
            continue
        given = os.fspath(inp)
        path = _absolute(given)
        for f in _partners(path) | _gdal_files(path):
            for g in _partners(f):
                out.setdefault(g, given)
                out.setdefault(os.path.realpath(g), given)
    return out


def _same(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_output_file(path: str, label: str, example: str = "change.tif") -> str:
    """The output is a file name in an existing, writable folder and not a read-only file; returns it absolute."""
    if not path:
        raise InputError(f"{label}: no output file was given. Give a file name such as {example}.")
    full = _absolute(path)
    folder = os.path.dirname(full)
    if os.path.isdir(full):
        raise InputError(f"{label} {path} is a folder. Give a file name such as {os.path.join(path, example)}.")
    if not os.path.isdir(folder):
        what = "is a file, not a folder" if os.path.exists(folder) else "does not exist"
        raise InputError(
            f"{label} {path}: the folder {folder} {what}. Create the folder or choose another output path."
        )
    try:  # a real write probe: permission bits and os.access miss read-only mounts, ACLs and Windows folders
        with tempfile.NamedTemporaryFile(prefix=".hypernet-probe-", dir=folder):
            pass
    except OSError as exc:
        raise InputError(
            f"{label} {path}: the folder {folder} is not writable ({exc.strerror or exc}). Choose a "
            "folder you can write to."
        ) from None
    if os.path.exists(full) and (not os.access(full, os.W_OK) or not os.stat(full).st_mode & 0o200):
        raise InputError(
            f"{label} {path} exists and is read-only. Make it writable (chmod u+w) or choose another "
            "file name; read-only files are never replaced."
        )
    return full


def check_job_paths(
    outputs: Mapping[str, str | os.PathLike | None] | Sequence[str | os.PathLike | None],
    inputs: Iterable[str | os.PathLike | None],
) -> None:
    """InputError (one line: which output, which input, what to do) unless every output may be written.

    ``outputs``: label -> path (None/"" = not written), or a plain list of paths. ``inputs``: every file the job
    reads (rasters, masks, model files); a VRT's sources and ENVI partners are included automatically.
    """
    given = list(outputs.items()) if isinstance(outputs, Mapping) else [("The output", o) for o in outputs]
    items = [(label, str(os.fspath(p))) for label, p in given if p is not None and os.fspath(p) != ""]
    taken = input_files(inputs)
    existing_inputs = [f for f in taken if os.path.exists(f)]
    seen: list[tuple[str, str]] = []
    for label, out in items:
        full = check_output_file(out, label)
        hit = taken.get(full) or taken.get(os.path.realpath(full))
        if hit is None and os.path.exists(full):
            hit = next((taken[f] for f in existing_inputs if _same(full, f)), None)
        if hit is not None:
            behind = "" if _same(full, _absolute(hit)) else " (a file that input is made of)"
            raise InputError(
                f"{label} {out} would overwrite the input {hit}{behind}. Choose another output file "
                "name; inputs are never modified."
            )
        for other_label, other in seen:
            if _same(full, other):
                who = "Two outputs" if label == other_label else f"{label} and {other_label.lower()}"
                raise InputError(f"{who} have the same path ({out}). Give each output its own file name.")
        seen.append((label, full))
