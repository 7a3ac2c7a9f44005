#!/usr/bin/env python3
"""Render an HTML report with headless Chromium to a PNG (docs/report_example.png by default).

    .venv/bin/python tools/screenshot_report.py                     # makes an example detection report first
    .venv/bin/python tools/screenshot_report.py --report my.html --out shot.png

Without --report, an example detection report is made the way the CLI and QGIS make one (core.pipeline.detect_files,
then report.write_detection_report) from the Taizhou pair in ../shared/data/taizhou when it is there, or from a
small synthetic pair; without torch it falls back to CVA (core.pipeline.baseline_files) and the title says so. Chromium runs offline with a throw-away profile
(``apt-get install -y --no-install-recommends chromium`` if it is missing). The screenshot is reduced to a
256-colour PNG when Pillow is available so it stays small enough for the repository.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hypernet_qgis.core.report import report  # noqa: E402

TAIZHOU = REPO.parent / "shared" / "data" / "taizhou"


def _synthetic_pair(folder: Path) -> tuple[str, str]:
    """A small synthetic GeoTIFF pair (used when ../shared is absent)."""
    from osgeo import gdal

    rng = np.random.default_rng(0)
    rows, cols, bands = 160, 200, 12
    yy, xx = np.mgrid[0:rows, 0:cols]
    base = np.stack([np.sin(xx / (20 + 3 * b)) + np.cos(yy / (15 + 2 * b)) for b in range(bands)]).astype(np.float32)
    t2 = base + 0.1 * rng.standard_normal(base.shape).astype(np.float32)
    t2[:, 40:80, 120:170] += 1.5
    paths = []
    for name, cube in (("t1.tif", base + 0.1 * rng.standard_normal(base.shape).astype(np.float32)), ("t2.tif", t2)):
        ds = gdal.GetDriverByName("GTiff").Create(str(folder / name), cols, rows, bands, gdal.GDT_Float32)
        for i in range(bands):
            ds.GetRasterBand(i + 1).WriteArray(cube[i])
        ds = None
        paths.append(str(folder / name))
    return paths[0], paths[1]


def _example_report(path: Path, epochs: int) -> None:
    """Write an example detection report to ``path``: a real HyperNet run through the pipeline (as the CLI and
    QGIS do), or standardised CVA when the engine cannot run here."""
    with tempfile.TemporaryDirectory(prefix="hypernet-example-") as tmp:
        folder = Path(tmp)
        if TAIZHOU.is_dir():
            t1, t2 = str(TAIZHOU / "2000TM"), str(TAIZHOU / "2003TM")
        else:
            t1, t2 = _synthetic_pair(folder)
        from hypernet_qgis.core import pipeline

        try:
            from hypernet_qgis.core.hypernet.training import TrainConfig

            result = pipeline.detect_files(
                t1, t2, str(folder / "change.tif"), config=TrainConfig(epochs=epochs, seed=0, device="cpu")
            )
        except ImportError as exc:  # no torch here: show the report on a classic method
            print(f"HyperNet engine not usable here ({exc}); using CVA.", file=sys.stderr)
            result = pipeline.baseline_files("cva", t1, t2, str(folder / "change.tif"))
        report.write_detection_report(path, result)


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    sys.exit("Chromium is not installed: apt-get install -y --no-install-recommends chromium")


def screenshot(html: Path, png: Path, width: int = 1200, height: int = 2000, max_bytes: int = 400_000) -> None:
    """Render ``html`` with headless Chromium (offline, throw-away profile) to ``png`` (reduced to at most 256
    colours, fewer if needed to stay under ``max_bytes``)."""
    with tempfile.TemporaryDirectory(prefix="hypernet-chromium-") as profile:
        shot = Path(profile) / "shot.png"
        cmd = [
            find_chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--screenshot={shot}",
            f"--window-size={width},{height}",
            html.resolve().as_uri(),
        ]
        subprocess.run(cmd, check=True, timeout=120, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not shot.is_file():
            sys.exit("Chromium did not write a screenshot.")
        try:
            from PIL import Image
        except ImportError:
            shutil.copyfile(shot, png)
            return
        with Image.open(shot) as img:
            rgb = img.convert("RGB")
        for colours in (256, 192, 128, 96, 64):  # fewest bytes at good quality: stop once under the limit
            rgb.quantize(colors=colours, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(
                png, optimize=True
            )
            if png.stat().st_size <= max_bytes:
                break


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report", type=Path, help="an existing HTML report (default: make an example)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "report_example.png")
    parser.add_argument("--keep-html", type=Path, help="also keep the generated example report here")
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=60, help="training epochs of the example run")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hypernet-report-") as tmp:
        html = args.report
        if html is None:
            html = args.keep_html or Path(tmp) / "report.html"
            _example_report(html, args.epochs)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        screenshot(html, args.out, args.width, args.height)
    print(f"{args.out} ({args.out.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
