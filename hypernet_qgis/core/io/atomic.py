"""Files written whole or not at all: a temporary file in the target's folder, then an atomic rename.

Temporary names carry the writing process's id (``.<name>.<pid>-<random>.<suffix>``), so a later run removes
the leftovers of a run that was killed (kill -9, power loss) without touching those of a run still writing.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import re
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import IO

from ..errors import InputError

#: Leftovers without a process id in their name (older versions) are removed once they are this old (seconds).
_STALE_AGE_S = 3600.0
_PID_RE = re.compile(r"\.(\d+)-[A-Za-z0-9_]+(\.part\.tif(\.aux\.xml)?|\.tmp|\.bak)$")


def temp_path(path: str, suffix: str) -> str:
    """A fresh temporary name beside ``path``: ``.<name>.<pid>-<random><suffix>``."""
    folder = os.path.dirname(os.path.abspath(path))
    return os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_stale_temps(path: str) -> list[str]:
    """Remove temporary files that killed runs left beside ``path``; return what was removed."""
    folder = os.path.dirname(os.path.abspath(path))
    base = glob.escape(os.path.basename(path))
    removed = []
    for candidate in glob.glob(os.path.join(glob.escape(folder), f".{base}.*")):
        if not candidate.endswith((".part.tif", ".part.tif.aux.xml", ".tmp", ".bak")):
            continue
        m = _PID_RE.search(candidate)
        try:
            stale = (not _alive(int(m.group(1)))) if m else time.time() - os.path.getmtime(candidate) > _STALE_AGE_S
            if stale:
                os.remove(candidate)
                removed.append(candidate)
        except OSError:
            continue
    return removed


def disk_error(exc: OSError, what: str, path: str) -> InputError:
    """One-line InputError for an OSError while writing ``path`` (full disk, quota, file too large, ...)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return InputError(
            f"Could not write {what} {path}: {exc.strerror} (nothing was changed). Free disk space or "
            "choose another folder."
        )
    return InputError(f"Could not write {what} {path}: {exc.strerror or exc}. Choose another output path.")


def replace_together(pairs: Sequence[tuple[str, str]]) -> None:
    """Rename each ``(temp, target)``; all targets become new, or (on failure) all keep their old content.

    Existing targets are first hard-linked to a backup name, which is renamed back if a later rename fails.
    """
    done: list[tuple[str, str | None]] = []  # (target, backup or None when the target did not exist)
    try:
        for tmp, target in pairs:
            backup = None
            if os.path.lexists(target):
                backup = temp_path(target, ".bak")
                try:
                    os.link(target, backup)
                except OSError:  # no hard links here: no way back for this one
                    backup = None
            try:
                os.replace(tmp, target)
            except BaseException:
                if backup:
                    with contextlib.suppress(OSError):
                        os.remove(backup)
                raise
            done.append((target, backup))
    except BaseException:
        for target, backup in reversed(done):
            with contextlib.suppress(OSError):
                if backup:
                    os.replace(backup, target)
                else:
                    os.remove(target)
        raise
    finally:
        for _, backup in done:
            if backup and os.path.lexists(backup):
                with contextlib.suppress(OSError):
                    os.remove(backup)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, what: str, example: str, binary: bool = True) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on success it replaces ``path``, on any error it is removed.

    ``what`` names the output in messages ("the model file"), ``example`` a file name to suggest ("model.pt").
    A full disk (or any other OSError while writing) becomes a one-line InputError; the old file is kept.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InputError(
            f"Cannot write {what} {path}: the folder {folder} does not exist. Create it or choose another output path."
        )
    if os.path.isdir(path):
        raise InputError(f"Cannot write {what} {path}: it is a folder. Give a file name such as {example}.")
    remove_stale_temps(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.{os.getpid()}-", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise InputError(f"Cannot write {what} in {folder} ({exc.strerror}). Choose a writable folder.") from None
    try:
        try:
            with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except OSError as exc:
            raise disk_error(exc, what, path) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
