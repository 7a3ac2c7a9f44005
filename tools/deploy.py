#!/usr/bin/env python3
"""Install the assembled plugin (build/hypernet_qgis) into a QGIS profile and enable it.

    .venv/bin/python tools/deploy.py build/hypernet_qgis                 # copy into the default profile
    .venv/bin/python tools/deploy.py build/hypernet_qgis --link          # symlink (development)
    .venv/bin/python tools/deploy.py build/hypernet_qgis --profile work --profiles-path /some/dir

Afterwards it checks whether the Python that QGIS uses can import torch and spectral and says how to install
them if not (the plugin loads without them; its algorithms then explain the same).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

PLUGIN = "hypernet_qgis"


def default_profiles_path() -> Path:
    """Where QGIS 3 keeps its profiles on this OS (QGIS_CUSTOM_CONFIG_PATH wins, as in QGIS)."""
    custom = os.environ.get("QGIS_CUSTOM_CONFIG_PATH")
    if custom:
        return Path(custom)
    system = platform.system()
    if system == "Windows":
        return Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming")) / "QGIS" / "QGIS3"
    if system == "Darwin":
        return Path.home() / "Library" / "Application Support" / "QGIS" / "QGIS3"
    return Path.home() / ".local" / "share" / "QGIS" / "QGIS3"


def enable_in_ini(ini: Path, name: str = PLUGIN) -> None:
    """Set ``[PythonPlugins] name=true`` in a QGIS3.ini, keeping every other line as it is."""
    ini.parent.mkdir(parents=True, exist_ok=True)
    lines = ini.read_text(encoding="utf-8").splitlines() if ini.exists() else []
    out, section, done = [], None, False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            if section == "PythonPlugins" and not done:
                out.append(f"{name}=true")
                done = True
            section = stripped[1:-1]
        elif section == "PythonPlugins" and stripped.split("=", 1)[0].strip() == name:
            if not done:
                out.append(f"{name}=true")
                done = True
            continue
        out.append(line)
    if not done:
        if section != "PythonPlugins":
            if out and out[-1].strip():
                out.append("")
            out.append("[PythonPlugins]")
        out.append(f"{name}=true")
    tmp = ini.with_suffix(".ini.part")
    tmp.write_text("\n".join(out) + "\n", encoding="utf-8")
    os.replace(tmp, ini)


def deploy(build: Path, profiles: Path, profile: str = "default", link: bool = False) -> Path:
    """Copy (or link) ``build`` to <profiles>/profiles/<profile>/python/plugins/hypernet_qgis and enable it."""
    build = build.resolve()
    if not (build / "metadata.txt").is_file() or not (build / "__init__.py").is_file():
        raise SystemExit(f"error: {build} is not an assembled plugin (no metadata.txt/__init__.py); run 'make plugin'.")
    root = profiles / "profiles" / profile
    target = root / "python" / "plugins" / PLUGIN
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.exists():
        shutil.rmtree(target)
    if link:
        target.symlink_to(build, target_is_directory=True)
    else:
        shutil.copytree(build, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    enable_in_ini(root / "QGIS" / "QGIS3.ini")
    return target


def qgis_python() -> str:
    """The Python interpreter the desktop QGIS embeds (best guess per OS)."""
    if platform.system() == "Linux" and Path("/usr/bin/python3").exists():
        return "/usr/bin/python3"
    return sys.executable


def check_engine(python: str) -> str | None:
    """None when ``python`` imports torch and spectral, else a message on how to install them."""
    try:
        proc = subprocess.run([python, "-c", "import torch, spectral"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"could not run {python}: {exc}"
    if proc.returncode == 0:
        return None
    last = (proc.stderr.strip().splitlines() or ["import failed"])[-1]
    return (
        f"QGIS's Python ({python}) cannot import torch/spectral ({last}). Install them into it, e.g.\n"
        f"  {python} -m pip install --user torch spectral   (Debian 12: add --break-system-packages)\n"
        "or start QGIS with PYTHONPATH pointing at a virtual environment's site-packages that has them."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("build", type=Path, help="the assembled plugin folder (make plugin -> build/hypernet_qgis)")
    parser.add_argument("--profiles-path", type=Path, default=None, help="QGIS profiles folder (default: per OS)")
    parser.add_argument("--profile", default="default", help="QGIS profile name (default: default)")
    parser.add_argument("--link", action="store_true", help="symlink instead of copying (for development)")
    parser.add_argument("--no-check", action="store_true", help="do not check torch/spectral for QGIS's Python")
    args = parser.parse_args(argv)
    target = deploy(args.build, args.profiles_path or default_profiles_path(), args.profile, args.link)
    print(f"Installed {PLUGIN} {'(link) ' if args.link else ''}at {target} and enabled it; restart QGIS.")
    if not args.no_check:
        problem = check_engine(qgis_python())
        print(f"warning: {problem}" if problem else f"{qgis_python()} imports torch and spectral: ready.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
