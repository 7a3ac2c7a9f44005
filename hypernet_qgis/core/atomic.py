"""Files written whole or not at all: a temporary file in the target's folder, then an atomic rename."""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import IO, Iterator

from .errors import InputError


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, what: str, example: str, binary: bool = True) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on success it replaces ``path``, on any error it is removed.

    ``what`` names the output in messages ("the model file"), ``example`` a file name to suggest ("model.pt").
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InputError(f"Cannot write {what} {path}: the folder {folder} does not exist. Create it or choose "
                         "another output path.")
    if os.path.isdir(path):
        raise InputError(f"Cannot write {what} {path}: it is a folder. Give a file name such as {example}.")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise InputError(f"Cannot write {what} in {folder} ({exc.strerror}). Choose a writable folder.") from None
    try:
        mode = "wb" if binary else "w"
        with os.fdopen(fd, mode, **({} if binary else {"encoding": "utf-8", "newline": "\n"})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
