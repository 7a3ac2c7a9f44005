"""core.io.atomic in-process: temporary names, leftovers of killed runs, disk-error messages, sets of renames and
atomic_file. (The failure cases issue 12 found are in test_caught_bugs.py; the CLI's in test_hostile_cli.py.)"""

from __future__ import annotations

import errno
import os
import re
import stat
import subprocess
import sys
import time

import pytest

from hypernet_qgis.core.errors import InputError
from hypernet_qgis.core.io import atomic
from hypernet_qgis.core.io.atomic import atomic_file, disk_error, remove_stale_temps, replace_together, temp_path


def _dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    return int(proc.stdout)


def test_temp_path_is_hidden_beside_the_target_with_pid_and_suffix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    t = temp_path("out.tif", ".part.tif")
    assert os.path.dirname(t) == str(tmp_path)
    assert re.fullmatch(rf"\.out\.tif\.{os.getpid()}-[0-9a-f]{{8}}\.part\.tif", os.path.basename(t))
    assert temp_path("out.tif", ".part.tif") != t
    assert atomic._PID_RE.search(t).group(1) == str(os.getpid())


def test_alive_only_asks_and_never_signals():
    assert atomic._alive(os.getpid())
    assert not atomic._alive(_dead_pid())
    # the child hangs up on SIGHUP even when started under nohup (which makes it ignore SIGHUP)
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGHUP, "
            "signal.SIG_DFL); print('ready', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline() == "ready\n"
        assert atomic._alive(child.pid)
        time.sleep(0.2)
        assert child.poll() is None  # signal 0: the process is asked about, not hung up on
    finally:
        child.kill()
        child.wait()


def test_remove_stale_temps_keeps_live_runs_and_other_files(tmp_path):
    target = tmp_path / "out.tif"
    dead, me = _dead_pid(), os.getpid()
    names = {
        f".out.tif.{dead}-ab12cd34.part.tif": True,
        f".out.tif.{dead}-ab12cd34.part.tif.aux.xml": True,
        f".out.tif.{dead}-x.tmp": True,
        f".out.tif.{dead}-x.bak": True,
        f".out.tif.{me}-ab12cd34.part.tif": False,  # a run still writing (this one)
        f".out.tif.{dead}-x.txt": False,  # not one of ours
        f".other.tif.{dead}-x.tmp": False,  # beside another target
        "out.tif": False,
        ".out.tif.old.tmp": True,  # no pid (older versions), older than an hour
        ".out.tif.new.tmp": False,  # no pid, recent
    }
    for name in names:
        (tmp_path / name).write_text("x")
    old = time.time() - atomic._STALE_AGE_S - 60
    os.utime(tmp_path / ".out.tif.old.tmp", (old, old))
    removed = remove_stale_temps(str(target))
    assert sorted(removed) == sorted(str(tmp_path / n) for n, gone in names.items() if gone)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(n for n, gone in names.items() if not gone)
    assert remove_stale_temps(str(target)) == []


def test_an_entry_that_cannot_be_examined_does_not_stop_the_clean_up(tmp_path):
    """A leftover name pointing nowhere (its age cannot be read) is skipped; the other leftovers still go."""
    dead = _dead_pid()
    (tmp_path / ".out.tif.broken.tmp").symlink_to(tmp_path / "nowhere")
    stale = [tmp_path / f".out.tif.{dead}-{i}.tmp" for i in range(8)]
    for p in stale:
        p.write_text("x")
    assert sorted(remove_stale_temps(str(tmp_path / "out.tif"))) == sorted(str(p) for p in stale)
    assert [p.name for p in tmp_path.iterdir()] == [".out.tif.broken.tmp"]


def test_remove_stale_temps_escapes_glob_characters(tmp_path):
    folder = tmp_path / "[a]"
    folder.mkdir()
    leftover = folder / f".o[1].tif.{_dead_pid()}-x.tmp"
    leftover.write_text("x")
    assert remove_stale_temps(str(folder / "o[1].tif")) == [str(leftover)]


def test_disk_error_messages():
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        err = disk_error(OSError(code, os.strerror(code)), "the model file", "/d/m.pt")
        assert isinstance(err, InputError)
        assert str(err) == (
            f"Could not write the model file /d/m.pt: {os.strerror(code)} (nothing was changed). "
            "Free disk space or choose another folder."
        )
    err = disk_error(OSError(errno.EACCES, "Permission denied"), "the report", "/d/r.html")
    assert str(err) == "Could not write the report /d/r.html: Permission denied. Choose another output path."
    assert str(disk_error(OSError("odd"), "the report", "r.html")) == (
        "Could not write the report r.html: odd. Choose another output path."
    )


def test_replace_together_replaces_all_and_leaves_no_backup(tmp_path):
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    a.write_text("old a")
    ta, tb = temp_path(str(a), ".part.tif"), temp_path(str(b), ".part.tif")
    with open(ta, "w") as fh:
        fh.write("new a")
    with open(tb, "w") as fh:
        fh.write("new b")
    replace_together([(ta, str(a)), (tb, str(b))])
    assert a.read_text() == "new a" and b.read_text() == "new b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "b.tif"]


def test_replace_together_restores_the_old_files_and_removes_the_backups(tmp_path):
    a, b, c = tmp_path / "a.tif", tmp_path / "b.tif", tmp_path / "c"
    a.write_text("old a")
    b.write_text("old b")
    c.mkdir()
    (c / "keep").write_text("x")  # a non-empty folder: the third rename fails
    temps = []
    for target in (a, b, c):
        t = temp_path(str(target), ".part.tif")
        with open(t, "w") as fh:
            fh.write("new")
        temps.append((t, str(target)))
    with pytest.raises(OSError):
        replace_together(temps)
    assert a.read_text() == "old a" and b.read_text() == "old b" and (c / "keep").exists()
    # the renamed temps are gone (they were the new targets), the failed one is left to the caller
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a.tif", "b.tif", "c", os.path.basename(temps[2][0])])


def test_replace_together_a_failed_rename_over_an_existing_file(tmp_path):
    """The second rename fails (its temporary file is gone): the first target gets its old content back, the
    error is the rename's own, and no backup is left."""
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    a.write_text("old a")
    b.write_text("old b")
    ta = temp_path(str(a), ".part.tif")
    with open(ta, "w") as fh:
        fh.write("new a")
    with pytest.raises(FileNotFoundError):
        replace_together([(ta, str(a)), (str(tmp_path / ".gone.part.tif"), str(b))])
    assert a.read_text() == "old a" and b.read_text() == "old b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "b.tif"]


def test_atomic_file_writes_whole_and_readable(tmp_path):
    target = tmp_path / "report.txt"
    with atomic_file(target, "the report", "report.html", binary=False) as fh:
        fh.write("line 1\nline 2 ü\n")
        assert not target.exists()
    assert target.read_bytes() == "line 1\nline 2 ü\n".encode()
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    with atomic_file(str(target), "the report", "report.html") as fh:
        fh.write(b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.txt"]


def test_atomic_file_refusals_and_disk_errors(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(InputError) as info:
        with atomic_file(missing / "m.pt", "the model file", "model.pt"):
            pass
    assert str(info.value) == (
        f"Cannot write the model file {missing / 'm.pt'}: the folder {missing} does not "
        "exist. Create it or choose another output path."
    )
    with pytest.raises(InputError) as info:
        with atomic_file(tmp_path, "the model file", "model.pt"):
            pass
    assert str(info.value) == (
        f"Cannot write the model file {tmp_path}: it is a folder. Give a file name such as model.pt."
    )
    target = tmp_path / "m.pt"
    target.write_bytes(b"old")
    with pytest.raises(InputError) as info:
        with atomic_file(target, "the model file", "model.pt"):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert str(info.value) == (
        f"Could not write the model file {target}: No space left on device (nothing was "
        "changed). Free disk space or choose another folder."
    )
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]
    # leftovers of a killed run beside the target are removed when the next write starts
    leftover = tmp_path / f".m.pt.{_dead_pid()}-abc.tmp"
    leftover.write_bytes(b"half")
    with atomic_file(target, "the model file", "model.pt") as fh:
        fh.write(b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


class _Watched(list):
    """The pairs of a set, calling ``at(i)`` as the i-th pair is taken: the folder as it is between two renames."""

    def __init__(self, pairs, at):
        super().__init__(pairs)
        self.at = at

    def __iter__(self):
        for i, item in enumerate(list.__iter__(self)):
            self.at(i)
            yield item


def test_the_backup_during_a_set_is_a_leftover_a_later_run_recognises(tmp_path):
    """Between two renames the old file is kept as `.<name>.<pid>-<random>.bak`: if the run is killed there, the
    next run's clean-up knows it (by the pid) for a leftover."""
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    a.write_text("old a")
    temps = []
    for target in (a, b):
        t = temp_path(str(target), ".part.tif")
        with open(t, "w") as fh:
            fh.write("new")
        temps.append((t, str(target)))
    seen = []
    replace_together(_Watched(temps, lambda i: seen.append({p.name: p.read_text() for p in tmp_path.iterdir()})))
    backups = [n for n in seen[1] if n.endswith(".bak")]
    assert len(backups) == 1 and re.fullmatch(rf"\.a\.tif\.{os.getpid()}-[0-9a-f]{{8}}\.bak", backups[0])
    assert atomic._PID_RE.search(backups[0]).group(1) == str(os.getpid())
    assert seen[1][backups[0]] == "old a" and seen[1]["a.tif"] == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "b.tif"]


def test_a_failed_rollback_does_not_hide_the_error(tmp_path):
    """The backup vanished (removed by someone else) before the second rename failed: the rename's error is
    raised, not the rollback's."""
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    a.write_text("old a")
    b.write_text("old b")
    ta = temp_path(str(a), ".part.tif")
    with open(ta, "w") as fh:
        fh.write("new a")

    def remove_backups(i):
        for p in tmp_path.glob("*.bak"):
            p.unlink()

    with pytest.raises(FileNotFoundError):
        replace_together(_Watched([(ta, str(a)), (str(tmp_path / ".gone.part.tif"), str(b))], remove_backups))
    assert b.read_text() == "old b"
