"""Packaging: the plugin zip as plugins.qgis.org checks it (metadata, contents, size, Bandit, detect-secrets), and
the engine's wheel installed into a fresh venv running `hypernet detect` on the sample pair.

The zip is built with the system Python in isolated mode without site-packages (``python3 -I -S``), which shows that
`make zip` needs neither the venv nor anything outside the standard library.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "resources" / "sample" / "salinasA_pair"
PLUGIN = "hypernet_qgis"
#: plugins.qgis.org: mandatory fields of metadata.txt and the upload limit.
MANDATORY = (
    "name",
    "qgisMinimumVersion",
    "description",
    "about",
    "version",
    "author",
    "email",
    "tracker",
    "repository",
)
MAX_BYTES = 25 * 1024 * 1024
BINARY_SUFFIXES = (".pyc", ".pyo", ".so", ".pyd", ".dll", ".dylib", ".exe", ".bin", ".whl", ".egg")
BINARY_MAGIC = (b"\x7fELF", b"MZ", b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe")
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin") or "python3"


def tool(name: str) -> list[str]:
    """A console tool of the venv running the tests (installed by `make install`)."""
    exe = Path(sys.executable).parent / name
    if not exe.exists():
        pytest.fail(f"{name} is not installed in {sys.prefix}; run `make install` (it installs the test tools).")
    return [str(exe)]


@pytest.fixture(scope="module")
def plugin_zip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("zip") / f"{PLUGIN}.zip"
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}  # no venv, no PYTHONPATH
    proc = subprocess.run(
        [SYSTEM_PYTHON, "-I", "-S", str(REPO / "tools" / "package.py"), "zip", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def unpacked(plugin_zip, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("unzipped")
    with zipfile.ZipFile(plugin_zip) as archive:
        archive.extractall(folder)
    return folder / PLUGIN


def test_zip_layout_and_contents(plugin_zip):
    assert plugin_zip.stat().st_size < MAX_BYTES
    with zipfile.ZipFile(plugin_zip) as archive:
        assert archive.testzip() is None
        names = archive.namelist()
        infos = archive.infolist()
    assert {n.split("/")[0] for n in names} == {PLUGIN}  # one top folder, named like the package
    assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", PLUGIN)
    for required in (
        "__init__.py",
        "metadata.txt",
        "LICENSE",
        "requirements.txt",
        "resources/icons/hypernet.svg",
        "resources/styles/change.qml",
        "launch.py",
        "algorithms/base.py",
    ):
        assert f"{PLUGIN}/{required}" in names, required
    for name in names:
        assert not name.startswith("/") and ".." not in name.split("/"), name
        assert "__pycache__" not in name and "__MACOSX" not in name and "/." not in name, name
        assert not name.lower().endswith(BINARY_SUFFIXES), name
        assert "/resources/sample/" not in name, name  # not in the zip (README: "What the zip holds")
    with zipfile.ZipFile(plugin_zip) as archive:
        for info in infos:
            if not info.is_dir():
                head = archive.read(info)[:4]
                assert not head.startswith(BINARY_MAGIC), f"{info.filename} is an executable binary"
    assert "classFactory" in zipfile.ZipFile(plugin_zip).read(f"{PLUGIN}/__init__.py").decode()


def test_zip_is_reproducible(plugin_zip, tmp_path):
    again = tmp_path / "again.zip"
    subprocess.run(
        [SYSTEM_PYTHON, "-I", "-S", str(REPO / "tools" / "package.py"), "zip", str(again)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert again.read_bytes() == plugin_zip.read_bytes()


def test_metadata_as_the_repository_reads_it(unpacked):
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keys are case-sensitive (qgisMinimumVersion)
    parser.read(unpacked / "metadata.txt", encoding="utf-8")
    meta = dict(parser["general"])
    for key in MANDATORY:
        assert meta.get(key, "").strip(), f"metadata.txt: mandatory field {key} is missing"
    from hypernet_qgis import __version__

    assert meta["version"] == __version__ and re.fullmatch(r"\d+\.\d+\.\d+", meta["version"])
    assert meta["qgisMinimumVersion"] == "3.22" and meta["qgisMaximumVersion"] == "4.99"
    assert meta.get("supportsQt6", "").lower() == "true"
    for key in ("tracker", "repository", "homepage"):
        assert re.fullmatch(r"https://[\w.-]+/\S+", meta[key]), key
    assert (unpacked / meta["icon"]).is_file()
    tags = [t.strip().lower() for t in meta["tags"].split(",")]
    assert tags and not {"processing", "raster", "python", "plugin"} & set(tags), "tags must say what it is about"
    assert meta.get("experimental", "").lower() in ("true", "false")
    assert "plugin_dependencies" not in meta  # needs no other QGIS plugin (QPIP is optional: requirements.txt)
    assert len(meta["description"]) < 300 and len(meta["about"]) > 100
    assert "GNU GENERAL PUBLIC LICENSE" in (unpacked / "LICENSE").read_text()


def test_project_addresses_are_set_in_one_place():
    """metadata.txt holds the tracker/repository/homepage; no other shipped file repeats them."""
    meta = (REPO / "metadata.txt").read_text()
    home = re.search(r"^homepage=(\S+)", meta, re.M).group(1)
    host_path = home.split("://", 1)[1]
    hits = [
        str(p.relative_to(REPO)) for p in (REPO / PLUGIN).rglob("*.py") if host_path in p.read_text(encoding="utf-8")
    ]
    hits += [name for name in ("pyproject.toml", "requirements.txt") if host_path in (REPO / name).read_text()]
    assert not hits, f"{hits} repeat the project address; read it from metadata.txt (hypernet_qgis/about.py)"
    from hypernet_qgis.about import project_url

    assert project_url("homepage") == home


def test_requirements_for_qpip():
    lines = [ln.split("#")[0].strip() for ln in (REPO / "requirements.txt").read_text().splitlines()]
    names = {re.split(r"[<>=!~ ;\[]", ln)[0].lower() for ln in lines if ln}
    assert names == {"torch", "spectral"}  # never numpy or GDAL: they belong to QGIS


def test_bandit_finds_nothing_in_the_zip(unpacked):
    proc = subprocess.run(
        [*tool("bandit"), "-r", "-f", "json", "-q", str(unpacked)], capture_output=True, text=True, timeout=300
    )
    report = json.loads(proc.stdout)
    issues = [f"{r['test_id']} {r['filename']}:{r['line_number']} {r['issue_text']}" for r in report["results"]]
    assert not issues, "\n".join(issues)
    assert proc.returncode == 0


def test_detect_secrets_finds_nothing_in_the_zip(unpacked):
    proc = subprocess.run(
        [*tool("detect-secrets"), "scan", "--all-files", "."], cwd=unpacked, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["results"] == {}


def test_detect_secrets_repository_matches_the_audited_baseline():
    """The whole checkout: every finding is in .secrets.baseline and audited as not a secret (the checksums in the
    sample's provenance)."""
    baseline = json.loads((REPO / ".secrets.baseline").read_text())
    audited = {
        (f, s["hashed_secret"])
        for f, items in baseline["results"].items()
        for s in items
        if s.get("is_secret") is False
    }
    files = [
        f
        for f in subprocess.run(
            ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.split()
        if f != ".secrets.baseline"
    ]
    proc = subprocess.run(
        [*tool("detect-secrets"), "scan", *files], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    found = {(f, s["hashed_secret"]) for f, items in json.loads(proc.stdout)["results"].items() for s in items}
    assert found <= audited, f"new findings not in .secrets.baseline: {sorted(found - audited)}"


# ------------------------------------------------------------------------------------------------- the wheel


def test_wheel_gives_the_hypernet_command_in_a_fresh_venv(tmp_path):
    """Build the wheel offline from a copy of the sources, install it into a fresh venv that sees this venv's
    torch (a .pth file, no download), and run `hypernet detect` on the sample pair from another folder."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / PLUGIN, src / PLUGIN, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    wheels = tmp_path / "wheels"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(wheels),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = wheels.glob("hypernet_qgis-*-py3-none-any.whl")
    from hypernet_qgis import __version__

    assert wheel.name.startswith(f"hypernet_qgis-{__version__}-")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = archive.read(f"hypernet_qgis-{__version__}.dist-info/entry_points.txt").decode()
        requires = archive.read(f"hypernet_qgis-{__version__}.dist-info/METADATA").decode()
    assert "hypernet_qgis/core/pipeline.py" in names and not any(n.endswith(".pyc") for n in names)
    assert "hypernet = hypernet_qgis.launch:main" in entry_points
    assert re.search(r"^Requires-Dist: torch<2\.14,>=2\.1$", requires, re.M), requires[:1500]
    assert "Provides-Extra: test" in requires

    venv = tmp_path / "fresh"
    # without its own pip/setuptools: they would shadow the newer setuptools that torch's metadata asks for
    subprocess.run(
        [SYSTEM_PYTHON, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True, timeout=300
    )
    site = next((venv / "lib").glob("python3*/site-packages"))
    ours = next(p for p in map(Path, sys.path) if p.name == "site-packages" and (p / "torch").is_dir())
    (site / "engine.pth").write_text(f"{ours}\n")  # torch, spectral, numpy<2 of the test venv, nothing else
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}:/usr/bin:/bin"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--no-index",
            "-q",
            str(wheel),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr  # the dependencies were found, nothing downloaded
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import hypernet_qgis; print(hypernet_qgis.__file__)"],
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert where.stdout.strip().startswith(str(venv)), where.stdout + where.stderr

    hypernet = str(venv / "bin" / "hypernet")
    helps = [
        subprocess.run(cmd, env=env, cwd=work, capture_output=True, text=True, timeout=120).stdout
        for cmd in ([hypernet, "--help"], [str(venv / "bin" / "python"), "-m", "hypernet_qgis", "--help"])
    ]
    commands = [set(re.findall(r"^    (\w+)\s", text, re.M)) for text in helps]
    assert commands[0] == commands[1] and {"detect", "train", "baseline", "evaluate", "inspect"} <= commands[0]

    out = work / "change.tif"
    proc = subprocess.run(
        [
            hypernet,
            "detect",
            str(SAMPLE / "t1.tif"),
            str(SAMPLE / "t2.tif"),
            "--output",
            str(out),
            "--epochs",
            "3",
            "--seed",
            "0",
            "--device",
            "cpu",
            "--quiet",
        ],
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    summary = json.loads(proc.stdout[proc.stdout.find("{") :])
    from osgeo import gdal

    ds = gdal.Open(str(out))
    values = ds.GetRasterBand(1).ReadAsArray()
    reference = gdal.Open(str(SAMPLE / "gt.tif"))
    assert (ds.RasterXSize, ds.RasterYSize) == (reference.RasterXSize, reference.RasterYSize) == (86, 83)
    assert values.dtype == np.uint8 and set(np.unique(values)) <= {0, 1, 255}
    assert ds.GetGeoTransform() == reference.GetGeoTransform()
    changed = int((values == 1).sum())
    assert 0 < changed < values.size and summary["changed_pixels"] == changed
