"""Choosing and describing the torch device, and where the engine that runs comes from."""

from __future__ import annotations

import os
import sys

import torch

from ..errors import InputError
from ..options import DEVICES  # noqa: F401 (one home: core/options.py)


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when torch sees a GPU, else CPU; 'cuda' without a GPU is a clear error."""
    name = (name or "auto").lower()
    if name not in DEVICES and not name.startswith("cuda:"):
        raise InputError(f"Unknown device {name!r}; use one of auto, cpu, cuda.")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise InputError(
            f"DEVICE={name} was asked for, but torch {torch.__version__} ({build}) sees no CUDA GPU. "
            "Use DEVICE=auto or cpu, or install a CUDA build of torch on a machine with an NVIDIA GPU."
        )
    return torch.device(name)


def describe_device(device: torch.device, requested: str = "auto") -> str:
    """A log line such as 'CUDA: NVIDIA H100 80GB HBM3' or 'CPU, 2 threads, tcmalloc (no CUDA device)'."""
    from .allocator import allocator_in_use

    if device.type == "cuda":
        return f"CUDA: {torch.cuda.get_device_name(device)}"
    reason = "asked for" if requested == "cpu" else "no CUDA device"
    threads = torch.get_num_threads()
    return f"CPU, {threads} thread{'s' if threads != 1 else ''}, {allocator_in_use()} allocator ({reason})"


def describe_engine() -> str:
    """A log line: which torch (build, folder), which Python and which C allocator run this job."""
    from .allocator import allocator_in_use

    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only"
    return (
        f"HyperNet engine: torch {torch.__version__} ({build} build) from {os.path.dirname(torch.__file__)}, "
        f"Python {sys.version.split()[0]} ({sys.executable}), {allocator_in_use()} allocator."
    )
