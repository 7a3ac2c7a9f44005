#!/usr/bin/env python3
"""Assemble the QGIS plugin folder and its zip, with the standard library only (no venv, root or network).

    python3 tools/package.py assemble build/hypernet_qgis    # the folder QGIS loads (make plugin)
    python3 tools/package.py zip dist/hypernet_qgis.zip      # the upload for plugins.qgis.org (make zip)

The plugin holds the package, metadata.txt, LICENSE, requirements.txt (for QPIP) and resources/ without the
sample data: the plugin never reads it, and the Salinas-A scene is redistributed for research use only, not under
a GPL-compatible licence as the plugin repository requires (README, "What the zip holds").
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGIN = "hypernet_qgis"
#: Files beside the package that go into the plugin folder.
TOP_FILES = ("metadata.txt", "LICENSE", "requirements.txt")
#: Never shipped: caches, compiled files, the sample data (see the module docstring).
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", "*.so", "*.pyd", "*.dll", "*.aux.xml", ".*")
EXCLUDED_RESOURCES = ("sample",)
#: Fixed time stamp for every zip entry, so two builds of the same sources give the same bytes.
ZIP_TIME = (2020, 1, 1, 0, 0, 0)


def assemble(target: Path, repo: Path = REPO) -> Path:
    """Build the plugin folder at ``target`` (replaced if present) and return it."""
    target = Path(target)
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(repo / PLUGIN, target, ignore=IGNORE)
    shutil.copytree(
        repo / "resources",
        target / "resources",
        ignore=lambda folder, names: (
            set(IGNORE(folder, names))
            | ({n for n in names if n in EXCLUDED_RESOURCES} if Path(folder) == repo / "resources" else set())
        ),
    )
    for name in TOP_FILES:
        shutil.copy2(repo / name, target / name)
    return target


def write_zip(out: Path, repo: Path = REPO) -> Path:
    """The plugin zip: one top folder ``hypernet_qgis/``, entries sorted, fixed time stamps."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hypernet-zip-") as tmp:
        folder = assemble(Path(tmp) / PLUGIN, repo)
        part = out.with_name(out.name + ".part")
        with zipfile.ZipFile(part, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
            for path in sorted(folder.rglob("*")):
                name = path.relative_to(folder.parent).as_posix()
                if path.is_dir():
                    info = zipfile.ZipInfo(name + "/", ZIP_TIME)
                    info.external_attr = 0o40755 << 16
                    archive.writestr(info, b"")
                else:
                    info = zipfile.ZipInfo(name, ZIP_TIME)
                    info.external_attr = 0o100644 << 16
                    info.compress_type = zipfile.ZIP_DEFLATED
                    archive.writestr(info, path.read_bytes())
        os.replace(part, out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("assemble", help="build the plugin folder").add_argument("target", type=Path)
    sub.add_parser("zip", help="build the plugin zip").add_argument("out", type=Path)
    args = parser.parse_args(argv)
    if args.command == "assemble":
        print(assemble(args.target))
    else:
        out = write_zip(args.out)
        print(f"{out} ({out.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
