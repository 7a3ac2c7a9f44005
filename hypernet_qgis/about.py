"""The plugin's own metadata.txt, read at run time: metadata.txt is the one place that sets the project addresses
(tracker, repository, homepage); the help links read them from here. QGIS-free, standard library only."""

from __future__ import annotations

import configparser
from functools import lru_cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


@lru_cache(maxsize=1)
def plugin_metadata() -> dict[str, str]:
    """[general] of metadata.txt: in the assembled plugin beside this file, in a checkout one folder up; {} when
    neither exists (the engine installed from a wheel)."""
    for candidate in (_PACKAGE / "metadata.txt", _PACKAGE.parent / "metadata.txt"):
        if candidate.is_file():
            parser = configparser.ConfigParser(interpolation=None)
            parser.optionxform = str  # type: ignore[assignment,method-assign]
            parser.read(candidate, encoding="utf-8")
            if parser.has_section("general"):
                return dict(parser["general"])
    return {}


def project_url(key: str = "homepage") -> str:
    """``homepage``, ``repository`` or ``tracker`` from metadata.txt ('' when unknown)."""
    return plugin_metadata().get(key, "")
