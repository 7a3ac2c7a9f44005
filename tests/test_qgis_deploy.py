"""tools/deploy.py: installs the assembled plugin into a QGIS profile, enables it, keeps the rest of the ini."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("deploy", REPO / "tools" / "deploy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build(tmp_path: Path) -> Path:
    """The plugin folder as `make plugin` assembles it."""
    from test_qgis_process import assemble_plugin

    (tmp_path / "build").mkdir()
    return assemble_plugin(tmp_path / "build")


def test_deploy_copies_enables_and_is_repeatable(tmp_path):
    build = _build(tmp_path)
    profiles = tmp_path / "profiles"
    ini = profiles / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True)
    ini.write_text("[qgis]\nlocale=de\n\n[PythonPlugins]\nprocessing=true\nhypernet_qgis=false\n\n[Map]\nx=1\n")
    cmd = [
        sys.executable,
        str(REPO / "tools" / "deploy.py"),
        str(build),
        "--profiles-path",
        str(profiles),
        "--no-check",
    ]
    for _ in range(2):  # a second deploy replaces the first
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
    target = profiles / "profiles" / "default" / "python" / "plugins" / "hypernet_qgis"
    assert (target / "metadata.txt").read_text() == (REPO / "metadata.txt").read_text()
    assert (target / "resources" / "icons" / "hypernet.svg").is_file() and not target.is_symlink()
    text = ini.read_text()
    assert "hypernet_qgis=true" in text and "hypernet_qgis=false" not in text
    assert "locale=de" in text and "processing=true" in text and "[Map]\nx=1" in text
    assert text.count("[PythonPlugins]") == 1


def test_deploy_link_and_fresh_ini(tmp_path):
    tool = _tool()
    build = _build(tmp_path)
    target = tool.deploy(build, tmp_path / "p", profile="work", link=True)
    assert target.is_symlink() and target.resolve() == build.resolve()
    ini = tmp_path / "p" / "profiles" / "work" / "QGIS" / "QGIS3.ini"
    assert ini.read_text() == "[PythonPlugins]\nhypernet_qgis=true\n"


def test_engine_check_names_the_python():
    tool = _tool()
    assert tool.check_engine(sys.executable) is None  # the venv has torch and spectral
    message = tool.check_engine("/nonexistent/python3")
    assert message and "/nonexistent/python3" in message
