"""Which C allocator serves torch's CPU tensors, and how the command-line tools get a caching one.

Whole-image training allocates the same large activations at every step. glibc hands each block over 32 MB back
to the kernel when it is freed and maps it afresh the next time, so the kernel faults in and zeroes every page of
every step again: at 600x500x224, 37 of 84 seconds per paper epoch were kernel time on one thread. Keeping the
freed blocks in glibc's heap instead fragments it beyond the machine's memory with two threads (perf.py). tcmalloc
reuses the blocks without that growth: the same epoch took 42 s with the same peak memory (BENCHMARKS.md).

A process cannot change its allocator once it runs, so the command-line entry points (``python -m hypernet_qgis``
and the ``qgis_process`` wrapper) start themselves with tcmalloc preloaded when the library is installed
(Debian/Ubuntu: ``libtcmalloc-minimal4``). ``HYPERNET_ALLOCATOR=system`` keeps the system allocator. QGIS desktop
users can start QGIS the same way (README). Linux only; elsewhere nothing changes.
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Mapping

#: Environment variable: "system" keeps the C library's allocator; anything else (default) prefers tcmalloc.
ENV_CHOICE = "HYPERNET_ALLOCATOR"
#: Set in the re-executed process, so that it never tries again.
ENV_DONE = "HYPERNET_ALLOCATOR_SET"
_LIBRARY_GLOBS = ("libtcmalloc_minimal.so.4*", "libtcmalloc.so.4*")
_LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")


def find_tcmalloc(dirs: tuple[str, ...] = _LIBRARY_DIRS) -> str | None:
    """Path of an installed tcmalloc shared library, or None."""
    if not sys.platform.startswith("linux"):
        return None
    for pattern in _LIBRARY_GLOBS:
        for folder in dirs:
            hits = sorted(glob.glob(os.path.join(folder, pattern)))
            if hits:
                return hits[0]
    return None


def allocator_in_use() -> str:
    """'tcmalloc', 'jemalloc' or 'system': the allocator mapped into this process (Linux; else 'system')."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            text = maps.read()
    except OSError:
        return "system"
    for name in ("tcmalloc", "jemalloc"):
        if name in text:
            return name
    return "system"


def preload_environment(environ: Mapping[str, str]) -> dict[str, str] | None:
    """The environment to re-run this program with tcmalloc preloaded, or None when that is not wanted or possible
    (not Linux, not installed, already loaded, turned off with HYPERNET_ALLOCATOR=system, or tried once)."""
    if environ.get(ENV_CHOICE, "").lower() == "system" or environ.get(ENV_DONE):
        return None
    if allocator_in_use() != "system":
        return None
    library = find_tcmalloc()
    if library is None:
        return None
    env = dict(environ)
    env["LD_PRELOAD"] = library + (":" + env["LD_PRELOAD"] if env.get("LD_PRELOAD") else "")
    env[ENV_DONE] = "1"
    # tcmalloc reports every allocation over 1 GB on stderr by default; whole images make many
    env.setdefault("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD", str(1 << 50))
    return env
