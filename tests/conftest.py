"""Shared test fixtures: paths, the optional ../shared data, and one real QGIS application per session."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SAMPLE = REPO / "resources" / "sample"

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
if "XDG_RUNTIME_DIR" not in os.environ:
    runtime = Path(tempfile.gettempdir()) / f"hypernet-xdg-{os.getuid()}"
    runtime.mkdir(mode=0o700, exist_ok=True)
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)
for extra in (str(REPO), "/usr/share/qgis/python/plugins"):
    if extra not in sys.path:
        sys.path.insert(0, extra)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the checkout (real data, fixtures); tests using it skip when it is absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared is not present")
    return SHARED


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The sample data shipped in resources/sample."""
    return SAMPLE


@pytest.fixture(scope="session")
def qgis_app():
    """A real headless QgsApplication with Processing initialised (started on first use, once per session)."""
    from qgis.core import QgsApplication

    app = QgsApplication.instance()
    if app is None:
        QgsApplication.setPrefixPath("/usr", True)
        app = QgsApplication([], False)
        app.initQgis()
    from processing.core.Processing import Processing

    Processing.initialize()
    yield app
