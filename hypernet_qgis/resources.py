"""Files under resources/ (icons, styles, models), found in the assembled plugin or in a source checkout.

QGIS-free apart from :func:`icon`, which imports Qt only when called.
"""

from __future__ import annotations

from pathlib import Path

#: The package folder (the plugin folder once assembled by ``make plugin``).
PACKAGE_DIR = Path(__file__).resolve().parent


def resource_path(*parts: str) -> Path:
    """A file under resources/: inside the assembled plugin, or beside the package in a source checkout."""
    for root in (PACKAGE_DIR / "resources", PACKAGE_DIR.parent / "resources"):
        candidate = root.joinpath(*parts)
        if candidate.exists():
            return candidate
    return PACKAGE_DIR.parent.joinpath("resources", *parts)


def icon_path(name: str) -> str:
    """Path of an icon in resources/icons."""
    return str(resource_path("icons", name))


def icon(name: str):
    """A QIcon from resources/icons (an empty icon if the file is missing)."""
    from qgis.PyQt.QtGui import QIcon

    return QIcon(icon_path(name))
