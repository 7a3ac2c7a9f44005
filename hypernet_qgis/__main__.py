"""``python -m hypernet_qgis``: the command-line interface of the engine."""

import os
import sys

from .core.allocator import preload_environment
from .core.cli import main

if __name__ == "__main__":
    # On Linux, run with tcmalloc when it is installed: whole-image training up to 2x faster (core/allocator.py)
    env = preload_environment(os.environ)
    if env is not None:
        try:
            # the interpreter's own options (-X, -O, ...) too, as this process was started
            argv = sys.orig_argv[1:] if getattr(sys, "orig_argv", None) else ["-m", "hypernet_qgis", *sys.argv[1:]]
            os.execve(sys.executable, [sys.executable, *argv], env)
        except OSError:
            pass  # carry on with the system allocator
    sys.exit(main())
