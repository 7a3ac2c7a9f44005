"""`make mutation`: one-line bugs put into a copy of the engine, each run against the tests that should catch it.

The list holds the deliberate bugs of issue 12 that the suite once missed, and the checks issue 12 added
(path check, writer, model schema, signals, CLI numbers). Each mutant is applied to a fresh copy of the checkout
(the working tree is never touched) and the named test files run with ``pytest -x``; a mutant is *killed* when
they fail. Prints a Markdown table and the kill rate (BENCHMARKS.md records it).

    .venv/bin/python tools/mutation.py [--only SUBSTRING] [--jobs N]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "hypernet_qgis/"
CORE = "hypernet_qgis/core/"


@dataclass
class Mutant:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTANTS = [
    # the deliberate bugs of issue 12 that the suite did not catch
    Mutant(
        "T2 nodata ignored when a pair is loaded",
        CORE + "pair.py",
        "valid = v1 & v2",
        "valid = v1",
        ("tests/test_caught_bugs.py::test_nodata_of_either_date_is_nodata_in_the_map",),
    ),
    Mutant(
        "windowed path writes the change map without nodata 255",
        CORE + "pipeline.py",
        'RasterOutput(change_out, binary, NODATA, "uint8")',
        'RasterOutput(change_out, binary, None, "uint8")',
        ("tests/test_caught_bugs.py::test_windowed_path_writes_nodata_255",),
    ),
    Mutant(
        "temp file not deleted on error",
        CORE + "io/atomic.py",
        "            os.unlink(tmp)\n",
        "            pass\n",
        ("tests/test_caught_bugs.py::test_a_failed_write_keeps_the_old_file_and_leaves_no_temp",),
    ),
    Mutant(
        "model written in place",
        CORE + "hypernet/model_file.py",
        'with atomic_file(path, "the model file", "model.pt") as fh:',
        'with open(path, "wb") as fh:',
        ("tests/test_hostile_cli.py::test_full_disk_while_saving_a_model_or_report",),
    ),
    Mutant(
        "first output of a set not restored when the second fails",
        CORE + "io/atomic.py",
        "                    os.replace(backup, target)",
        "                    pass",
        ("tests/test_caught_bugs.py::test_a_set_of_outputs_is_replaced_together",),
    ),
    Mutant(
        "mask g share 0.5 -> 0.4",
        CORE + "options.py",
        "DEFAULT_TRAINING_FRACTION = 0.5",
        "DEFAULT_TRAINING_FRACTION = 0.4",
        ("tests/test_caught_bugs.py::test_mask_g_is_the_lowest_half",),
    ),
    Mutant(
        "training ignores config.gamma",
        CORE + "hypernet/training.py",
        "training_loss(model, b1, b2, index, config.gamma)",
        "training_loss(model, b1, b2, index, 1.0)",
        ("tests/test_caught_bugs.py::test_gamma_changes_the_training",),
    ),
    Mutant(
        "cosine learning-rate decay removed",
        CORE + "hypernet/training.py",
        "torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)",
        "torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)",
        ("tests/test_caught_bugs.py::test_learning_rate_follows_the_cosine_schedule",),
    ),
    Mutant(
        "no cancel check per epoch",
        CORE + "hypernet/training.py",
        "            check_cancelled(feedback)\n            k = epoch % n_pairs",
        "            k = epoch % n_pairs",
        ("tests/test_caught_bugs.py::test_cancel_is_checked_every_epoch",),
    ),
    Mutant(
        "tiled halo reduced by 1",
        CORE + "hypernet/tiling.py",
        "    halo = model.halo()\n",
        "    halo = model.halo() - 1\n",
        ("tests/test_tiling.py",),
    ),
    # issue 10: the MRF map of the fused intensity
    Mutant(
        "MRF counts changed neighbours only (no pull towards unchanged)",
        CORE + "classic/thresholds.py",
        "llr + beta * (2.0 * around - neighbours) > 0",
        "llr + beta * around > 0",
        ("tests/test_thresholds.py",),
    ),
    Mutant(
        "MRF likelihood ratio not held monotone",
        CORE + "classic/thresholds.py",
        "        ranked[above] = np.maximum.accumulate(ranked[above])\n",
        "",
        ("tests/test_thresholds.py",),
    ),
    # the checks of issue 12
    Mutant(
        "output path check skipped by the CLI",
        PACKAGE + "cli.py",
        "    check_job_paths(outputs, inputs)\n",
        "",
        ("tests/test_hostile_cli.py::test_report_never_overwrites_an_input_or_another_output",),
    ),
    Mutant(
        "samefile not used",
        CORE + "io/paths.py",
        "        return os.path.samefile(a, b)",
        "        return False",
        ("tests/test_hostile_cli.py::test_output_behind_a_vrt_or_a_link_is_refused",),
    ),
    Mutant(
        "VRT sources not expanded",
        CORE + "io/paths.py",
        "_partners(path) | _gdal_files(path)",
        "_partners(path)",
        ("tests/test_hostile_cli.py::test_output_behind_a_vrt_or_a_link_is_refused",),
    ),
    Mutant(
        "read-only output replaced",
        CORE + "io/paths.py",
        "not os.stat(full).st_mode & 0o200",
        "False",
        ("tests/test_hostile_cli.py::test_read_only_output_is_refused_not_replaced",),
    ),
    Mutant(
        "written raster not read back",
        CORE + "io/raster_io.py",
        "        _verify(tmp, arr, out_dtype)\n",
        "",
        ("tests/test_hostile_cli.py::test_full_disk_keeps_the_old_outputs_as_a_set",),
    ),
    Mutant(
        "GDAL errors on close ignored",
        CORE + "io/raster_io.py",
        '        _gdal_check("close")\n',
        "",
        ("tests/test_hostile_cli.py::test_full_disk_keeps_the_old_outputs_as_a_set",),
    ),
    Mutant(
        "outputs renamed one by one",
        CORE + "io/raster_io.py",
        "            replace_together(temps)",
        "            [os.replace(t, p) for t, p in temps]",
        ("tests/test_hostile_cli.py::test_full_disk_keeps_the_old_outputs_as_a_set",),
    ),
    Mutant(
        "stale temp files kept",
        CORE + "io/atomic.py",
        "            if stale:",
        "            if False:",
        ("tests/test_hostile_cli.py::test_leftovers_of_killed_runs_are_removed",),
    ),
    Mutant(
        "SIGTERM not handled",
        PACKAGE + "cli.py",
        "self.previous = signal.signal(signal.SIGTERM, _on_sigterm)",
        "self.previous = None",
        ("tests/test_hostile_cli.py::test_sigterm_during_training_removes_everything",),
    ),
    Mutant(
        "seed range not checked",
        PACKAGE + "cli.py",
        'type=_int_in(0, options.MAX_SEED)',
        "type=int",
        ("tests/test_hostile_cli.py::test_detect_refuses_before_training",),
    ),
    Mutant(
        "non-finite threshold accepted",
        PACKAGE + "cli.py",
        "        _finite(text)\n    except argparse",
        "        float(text)\n    except argparse",
        ("tests/test_hostile_cli.py::test_detect_refuses_before_training",),
    ),
    Mutant(
        "evaluate checks only the size",
        CORE + "classic/evaluation.py",
        '        raster_io.check_same_grid_2d(info_c, info_r, ("The change map", "the reference"))\n',
        "        pass\n",
        ("tests/test_hostile_cli.py::test_evaluate_refuses_a_reference_on_another_grid",),
    ),
    Mutant(
        "model width not bounded",
        CORE + "hypernet/model_metadata.py",
        '    _int_field(meta, "width", 1, MAX_WIDTH, path)\n',
        "",
        ("tests/test_hostile_models.py",),
    ),
    Mutant(
        "band_selection not validated",
        CORE + "hypernet/model_metadata.py",
        "    if selection is not None:\n",
        "    if False:\n",
        ("tests/test_hostile_models.py",),
    ),
    Mutant(
        "weights' shapes not checked before loading",
        CORE + "hypernet/model_metadata.py",
        '    check_shapes(payload.get("state_dict"), meta, path)\n',
        "",
        ("tests/test_hostile_models.py",),
    ),
    Mutant(
        "compressed archive entries accepted",
        CORE + "hypernet/model_metadata.py",
        "        if e.compress_type != zipfile.ZIP_STORED:",
        "        if False:",
        ("tests/test_hostile_models.py",),
    ),
    Mutant(
        "model metadata unpickled with any global",
        CORE + "hypernet/model_metadata.py",
        "            return self.GLOBALS[(module, name)]\n",
        "            return self.GLOBALS.get((module, name)) or super().find_class(module, name)\n",
        ("tests/test_model_metadata.py",),
    ),
    Mutant(
        "NaN weights accepted",
        CORE + "hypernet/model_file.py",
        "    _check_finite(state, path)\n",
        "",
        ("tests/test_hostile_models.py",),
    ),
    Mutant(
        "all-nodata band not named",
        CORE + "io/raster_io.py",
        "    if empty and len(empty) < len(band_list):",
        "    if False:",
        ("tests/test_hostile_cli.py::test_clear_messages",),
    ),
    Mutant(
        "complex input read as real",
        CORE + "io/raster_io.py",
        "    if complex_bands:\n",
        "    if False:\n",
        ("tests/test_hostile_cli.py::test_clear_messages",),
    ),
]


def _copy() -> Path:
    """A fresh copy of the tracked files (and untracked, not ignored ones) of the checkout."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    root = Path(tempfile.mkdtemp(prefix="hypernet-mutant-"))
    for f in files:
        src = REPO / f
        if src.is_file():
            (root / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / f)
    (root / ".venv").symlink_to(REPO / ".venv")
    return root


def run_mutant(m: Mutant, timeout: int) -> tuple[Mutant, str, float]:
    root = _copy()
    try:
        target = root / m.path
        text = target.read_text()
        if text.count(m.old) < 1:
            return m, "NOT APPLIED (text not found)", 0.0
        target.write_text(text.replace(m.old, m.new, 1))
        env = {**os.environ, "PYTHONPATH": str(root), "HYPERNET_ALLOCATOR": "system"}
        start = time.perf_counter()
        try:
            r = subprocess.run(
                [str(REPO / ".venv/bin/python"), "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *m.tests],
                cwd=root,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            verdict = "killed" if r.returncode != 0 else "SURVIVED"
        except subprocess.TimeoutExpired:
            verdict = "killed (timeout)"
        return m, verdict, time.perf_counter() - start
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="run the mutants whose name contains this")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--timeout", type=int, default=600)
    args = ap.parse_args()
    chosen = [m for m in MUTANTS if args.only.lower() in m.name.lower()]
    print("| mutant | file | tests | result | s |\n|---|---|---|---|---|")
    killed = 0
    with cf.ThreadPoolExecutor(args.jobs) as pool:
        for m, verdict, secs in pool.map(lambda m: run_mutant(m, args.timeout), chosen):
            killed += verdict.startswith("killed")
            tests = ", ".join(t.replace("tests/", "") for t in m.tests)
            print(f"| {m.name} | {m.path.replace(CORE, 'core/')} | {tests} | {verdict} | {secs:.0f} |", flush=True)
    print(f"\nkilled {killed} of {len(chosen)} ({100.0 * killed / max(1, len(chosen)):.0f} %)")
    return 0 if killed == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
