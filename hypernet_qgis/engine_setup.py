"""The HyperNet engine (torch, spectral) in a private, versioned folder of the QGIS profile, for QGIS's own Python.

Not the plugin folder (a plugin update wipes it) and not QGIS's site-packages (pip must never replace QGIS's numpy
or GDAL). ``pip install --target`` fills ``<profile>/hypernet/engine/py3XX-vN.part`` with a constraints file that
pins the numpy and GDAL QGIS already has, and those copies are then removed from the folder; torch (an optimiser
step) and spectral are then checked in a child process (a broken DLL gives a message instead of taking QGIS down),
and only then does the folder replace the previous one. At start the provider puts the folder first on
``sys.path``: torch needs its own sympy etc., and the folder holds no numpy, so QGIS's numpy is the one used. Nothing
here touches the network except the install itself. Standard library only; no QGIS import.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess  # nosec B404: runs only this QGIS's own Python (pip, the import check), never a shell
import sys
import time
from collections.abc import Callable
from pathlib import Path

#: Bump when the folder layout changes; the Python version is part of the name (wheels are per Python).
LAYOUT = 1
PACKAGES = ("torch", "spectral")
#: Packages QGIS brings and pip must keep at QGIS's version (distribution name -> module to ask).
PINNED = {"numpy": "numpy", "GDAL": "osgeo"}
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
STAMP = "hypernet-engine.json"
VARIANTS = ("auto", "cpu", "cuda")


def engine_dir(settings_dir: str | os.PathLike) -> Path:
    """The engine folder for this Python inside a QGIS profile folder (QgsApplication.qgisSettingsDirPath())."""
    return Path(settings_dir) / "hypernet" / "engine" / f"py{sys.version_info[0]}{sys.version_info[1]}-v{LAYOUT}"


def installed(settings_dir: str | os.PathLike) -> dict | None:
    """The stamp of a complete engine folder (torch version, source, ...), or None."""
    stamp = engine_dir(settings_dir) / STAMP
    try:
        return json.loads(stamp.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def activate(settings_dir: str | os.PathLike) -> Path | None:
    """Put a complete engine folder first on sys.path (once). Returns it, or None when there is none. The folder
    holds no numpy or GDAL (drop_pinned), so QGIS's own stay the only ones."""
    folder = engine_dir(settings_dir)
    if installed(settings_dir) is None:
        return None
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))  # before QGIS's site-packages: torch needs its own sympy, ... (not numpy)
        importlib.invalidate_caches()  # a failed `import torch` earlier in this session must not stick
    return folder


def missing_packages(settings_dir: str | os.PathLike | None = None) -> list[str]:
    """The engine's packages (torch, spectral) this Python cannot find, the private engine folder activated first.
    Looks for them (importlib.util.find_spec) without importing them: cheap enough for QGIS's start-up, and a
    broken torch cannot take QGIS down here. No network."""
    import importlib.util

    if settings_dir is not None:
        try:
            activate(settings_dir)
        except OSError:
            pass
    missing = []
    for name in PACKAGES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a finder that refuses the name, a module without a spec
            found = False
        if not found:
            missing.append(name)
    return missing


def interpreter() -> str:
    """The Python executable of this process, for pip and the engine's child process. sys.executable is the QGIS
    binary in several builds, and in desktop QGIS on Linux whatever ``python3`` comes first on PATH (a pyenv shim,
    a conda Python): only a python* inside sys.exec_prefix (a venv's counts) is taken as it is."""
    exe = sys.executable or ""
    if os.path.basename(exe).lower().startswith("python") and _inside(exe, sys.exec_prefix):
        return exe
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if os.name == "nt":  # OSGeo4W and the standalone installer: python.exe beside the Python installation
        candidates = [Path(sys.exec_prefix) / "python.exe", Path(sys.exec_prefix) / "python3.exe"]
    else:  # macOS QGIS.app (Contents/MacOS/bin), Linux distributions (/usr/bin)
        candidates = [
            Path(sys.exec_prefix) / "bin" / f"python{version}",
            Path(sys.exec_prefix) / "bin" / "python3",
            Path(exe).parent / "bin" / "python3",
            Path("/usr/bin") / f"python{version}",
        ]
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    return exe if os.path.basename(exe).lower().startswith("python") else shutil.which("python3") or "python3"


def _inside(path: str, folder: str) -> bool:
    try:
        folder = os.path.abspath(folder)
        return os.path.commonpath([os.path.abspath(path), folder]) == folder
    except (OSError, ValueError):  # different drives on Windows
        return False


def qgis_pins() -> dict[str, str]:
    """Versions of the packages QGIS brings (numpy, GDAL) as this Python sees them."""
    from importlib import metadata

    pins = {}
    for dist, module in PINNED.items():
        try:
            pins[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            mod = sys.modules.get(module)
            version = getattr(mod, "__version__", None) if mod else None
            if version:
                pins[dist] = str(version)
    return pins


def has_nvidia_driver() -> bool:
    """An NVIDIA driver is installed (then the default torch build, with CUDA; else the small CPU build)."""
    if Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi"):
        return True
    system_root = os.environ.get("SystemRoot")
    return bool(system_root and (Path(system_root) / "System32" / "nvcuda.dll").exists())


_VERSION = re.compile(r"^\d+(\.\d+){0,2}(\+[a-z0-9.]+)?$")
_INDEX = re.compile(r"^(https?|file)://[^\s]+$")


def check_torch_version(version: str | None) -> str | None:
    """'' or None (the newest that fits) or a release such as 2.13.0 (2.13.0+cpu); ValueError otherwise."""
    version = (version or "").strip()
    if version and not _VERSION.match(version):
        raise ValueError(
            f"PyTorch version {version!r} is not a release number; write e.g. 2.13.0, or leave it empty "
            "for the newest that fits."
        )
    return version or None


def check_index_url(url: str | None) -> str | None:
    """'' or None (PyPI, with PyTorch's CPU index for the CPU build) or an index address; ValueError otherwise."""
    url = (url or "").strip()
    if url and not _INDEX.match(url):
        raise ValueError(
            f"Package index {url!r} is not an http(s):// or file:// address of a simple index (e.g. "
            "https://pypi.org/simple or your organisation's mirror)."
        )
    return url or None


def pip_command(
    python: str,
    target: Path,
    constraints: Path,
    source: str | None = None,
    variant: str = "auto",
    torch_version: str | None = None,
    index_url: str | None = None,
) -> list[str]:
    """The pip command line: offline from a folder of wheels (``source``), from ``index_url`` (a mirror) alone,
    or from PyPI (with PyTorch's CPU index first for the CPU build). ``torch_version`` pins torch."""
    cmd = [
        python,
        "-m",
        "pip",
        "install",
        "--target",
        str(target),
        "--constraint",
        str(constraints),
        "--no-input",
        "--disable-pip-version-check",
        "--no-warn-script-location",
        "--progress-bar",
        "off",
    ]
    if source:
        cmd += ["--no-index", "--find-links", str(source)]
    elif index_url:
        cmd += ["--index-url", index_url]
    elif variant == "cpu" or (variant == "auto" and not has_nvidia_driver()):
        cmd += ["--index-url", CPU_INDEX, "--extra-index-url", "https://pypi.org/simple"]
    torch = f"torch=={torch_version}" if torch_version else "torch"
    return cmd + [torch, *PACKAGES[1:]]


def drop_pinned(folder: Path) -> None:
    """Remove the copies of QGIS's own packages (numpy, GDAL) that pip --target puts in ``folder`` as torch's
    dependencies: they are the same versions (constraints) and QGIS's must be the only ones on sys.path."""
    for dist, module in PINNED.items():
        for pattern in (module, f"{module}.libs", f"{dist}-*.dist-info", f"{dist.lower()}-*.dist-info"):
            for path in folder.glob(pattern):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink()
    shutil.rmtree(folder / "bin", ignore_errors=True)  # console scripts (f2py, torchrun, ...): not used


def check_import(python: str, folder: Path, timeout: float = 300) -> tuple[bool, str]:
    """Import torch and spectral from ``folder`` in a child process: (ok, torch version or the error's last line)."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import numpy, spectral, torch; from torch import optim; "
        "w = torch.zeros(2, requires_grad=True); "
        "(w * torch.from_numpy(numpy.ones(2, 'float32'))).sum().backward(); "
        "optim.SGD([w], lr=0.1).step(); print(torch.__version__, numpy.__version__)"
    )
    try:
        # nosec B603: the program is QGIS's own Python (interpreter()), the code a constant, no shell
        proc = subprocess.run(
            [python, "-c", code, str(folder)],
            capture_output=True,
            text=True,  # nosec B603
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"could not run {python}: {exc}"
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or [f"exit code {proc.returncode}"]
        return False, lines[-1]
    return True, proc.stdout.strip()


def install(
    settings_dir: str | os.PathLike,
    source: str | None = None,
    variant: str = "auto",
    log: Callable[[str], None] = print,
    cancelled: Callable[[], bool] = lambda: False,
    python: str | None = None,
    torch_version: str | None = None,
    index_url: str | None = None,
) -> dict:
    """Install (or repair) the engine; returns its stamp. Raises RuntimeError with a one-line reason."""
    python = python or interpreter()
    final = engine_dir(settings_dir)
    part = final.with_name(final.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    pins = qgis_pins()
    constraints = final.parent / "constraints.txt"
    constraints.write_text("".join(f"{k}=={v}\n" for k, v in sorted(pins.items())), encoding="utf-8")
    cmd = pip_command(python, part, constraints, source, variant, torch_version, index_url)
    log(
        f"Installing the HyperNet engine into {final} with {python}; keeping QGIS's "
        f"{', '.join(f'{k} {v}' for k, v in sorted(pins.items())) or 'packages'}."
    )
    log(" ".join(cmd))
    started = time.monotonic()
    # nosec B603: QGIS's own Python running pip with a fixed argument list (pip_command), no shell
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # nosec B603
    tail: list[str] = []
    for line in proc.stdout or ():
        line = line.rstrip()
        if line:
            log(line)
            tail = (tail + [line])[-5:]
        if cancelled():
            proc.kill()
            proc.wait()
            shutil.rmtree(part, ignore_errors=True)
            raise RuntimeError("Cancelled; the engine was not changed.")
    if proc.wait() != 0:
        shutil.rmtree(part, ignore_errors=True)
        where = f"the folder {source}" if source else index_url or "the package index"
        last = tail[-1] if tail else "no output"
        raise RuntimeError(
            f"pip could not install torch and spectral from {where} ({last}). Check the network or "
            "the wheel folder, or see README 'When it fails'."
        )
    drop_pinned(part)
    ok, detail = check_import(python, part)
    if not ok:
        shutil.rmtree(part, ignore_errors=True)
        raise RuntimeError(
            f"torch was installed but does not import ({detail}); the previous engine was kept. "
            "See README 'When it fails'."
        )
    stamp = {
        "torch_numpy": detail,
        "python": python,
        "source": source or index_url or "index",
        "variant": variant,
        "pins": pins,
        "seconds": round(time.monotonic() - started, 1),
        "layout": LAYOUT,
    }
    (part / STAMP).write_text(json.dumps(stamp, indent=1), encoding="utf-8")
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    part.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    log(f"HyperNet engine ready in {final} (torch, numpy: {detail}).")
    return stamp


def uninstall(settings_dir: str | os.PathLike) -> bool:
    """Remove the engine folder of this Python; True when there was one."""
    final = engine_dir(settings_dir)
    existed = final.exists()
    for folder in (final, final.with_name(final.name + ".part"), final.with_name(final.name + ".old")):
        shutil.rmtree(folder, ignore_errors=True)
    return existed
