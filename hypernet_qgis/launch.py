"""The command-line entry points (``hypernet`` and ``python -m hypernet_qgis``): tcmalloc first, then the CLI."""

from __future__ import annotations

import os
import sys

from .core.hypernet.allocator import preload_environment


def restart_argv() -> list[str]:
    """The command line that started this process, with the interpreter's own options (-X, -O, ...) kept."""
    orig = getattr(sys, "orig_argv", None)
    if orig:
        return [sys.executable, *orig[1:]]
    return [sys.executable, "-m", "hypernet_qgis", *sys.argv[1:]]


def restart_with_tcmalloc() -> None:
    """On Linux with tcmalloc installed, replace this process by the same command with tcmalloc preloaded (whole-
    image training up to 2x faster, core/hypernet/allocator.py). Returns only when that is not wanted or not
    possible."""
    env = preload_environment(os.environ)
    if env is None:
        return
    argv = restart_argv()
    try:
        # nosec B606: the program is this very interpreter and the arguments are the ones it was started with
        # (no shell, nothing from outside the process); only LD_PRELOAD changes. Bandit cannot see that.
        os.execve(sys.executable, argv, env)  # nosec B606
    except OSError:
        pass  # carry on with the system allocator


def keep_gdal_error_mode() -> None:
    """Say explicitly that this process keeps GDAL 3's default (no Python exceptions; the engine checks return
    values): GDAL 3.9+ (QGIS 3.40 on Debian 13) otherwise warns on stderr at the first call. CLI only: inside QGIS
    the mode belongs to QGIS."""
    try:
        from osgeo import gdal
    except ImportError:
        return  # the CLI's own message says GDAL is missing when a job needs it
    if hasattr(gdal, "DontUseExceptions") and not gdal.GetUseExceptions():
        gdal.DontUseExceptions()


def main() -> int:
    """Run the CLI (cli.py), under tcmalloc where available."""
    restart_with_tcmalloc()
    keep_gdal_error_mode()
    from .cli import main as cli_main

    return cli_main()
