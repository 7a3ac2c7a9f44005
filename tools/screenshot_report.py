#!/usr/bin/env python3
"""Render an HTML report with headless Chromium to a PNG (docs/report_example.png by default).

    .venv/bin/python tools/screenshot_report.py                     # makes an example detection report first
    .venv/bin/python tools/screenshot_report.py --report my.html --out shot.png

Without --report, an example detection report is made from the Taizhou pair in ../shared/data/taizhou when it is
there (a short HyperNet run when the engine is importable, otherwise standardised CVA is used as the intensity and
the report's title says so), or from a small synthetic scene. Chromium runs offline with a throw-away profile
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

from hypernet_qgis.core import report  # noqa: E402

TAIZHOU = REPO.parent / "shared" / "data" / "taizhou"


def _zscore(cube: np.ndarray) -> np.ndarray:
    mean = np.nanmean(cube, axis=(1, 2), keepdims=True)
    std = np.nanstd(cube, axis=(1, 2), keepdims=True)
    return (cube - mean) / np.where(std > 0, std, 1.0)


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    counts, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(counts)
    w1 = w0[-1] - w0
    m0 = np.cumsum(counts * centres)
    with np.errstate(invalid="ignore", divide="ignore"):
        between = w0 * w1 * (m0 / w0 - (m0[-1] - m0) / w1) ** 2
    return float(centres[int(np.nanargmax(between[:-1]))])


def _load_example() -> tuple[np.ndarray, np.ndarray, dict]:
    if TAIZHOU.is_dir():
        from osgeo import gdal

        t1 = gdal.Open(str(TAIZHOU / "2000TM")).ReadAsArray().astype(np.float32)
        t2 = gdal.Open(str(TAIZHOU / "2003TM")).ReadAsArray().astype(np.float32)
        info = {"T1": "taizhou/2000TM", "T2": "taizhou/2003TM",
                "wavelengths_nm": [482.5, 565.0, 660.0, 825.0, 1650.0, 2220.0]}
        return t1, t2, info
    rng = np.random.default_rng(0)
    rows, cols, bands = 240, 320, 12
    yy, xx = np.mgrid[0:rows, 0:cols]
    base = np.stack([np.sin(xx / (20 + 3 * b)) + np.cos(yy / (15 + 2 * b)) for b in range(bands)]).astype(np.float32)
    t1 = base + 0.1 * rng.standard_normal(base.shape, dtype=np.float32)
    t2 = base + 0.1 * rng.standard_normal(base.shape, dtype=np.float32)
    t2[:, 60:120, 200:280] += 1.5
    return t1, t2, {"T1": "synthetic", "T2": "synthetic", "wavelengths_nm": list(np.linspace(400, 1000, bands))}


def _example_report(path: Path) -> None:
    """Write an example detection report to ``path``."""
    t1, t2, info = _load_example()
    valid = np.all(np.isfinite(t1) & np.isfinite(t2), axis=0)
    title = "HyperNet change detection report"
    loss_history = training_mask = None
    try:  # a real (short) HyperNet run when the engine is there
        from hypernet_qgis.core import detection, training

        x1s, x2s = _zscore(t1).astype(np.float32), _zscore(t2).astype(np.float32)
        config = training.TrainConfig(epochs=30, seed=0, device="cpu")
        result = training.train_hypernet(x1s, x2s, valid, config)
        intensity = detection.change_intensity(result.model, x1s, x2s, valid, device="cpu")
        binary, threshold = detection.binary_change(intensity, valid, method="otsu")
        method = "otsu"
        loss_history, training_mask = result.loss_history, result.training_mask
        info.update(device=result.device_name, seconds=result.seconds, epochs=len(result.loss_history))
    except Exception as exc:  # engine missing or changed: show the report on a classic intensity
        print(f"HyperNet engine not usable here ({type(exc).__name__}: {exc}); using CVA as the intensity.",
              file=sys.stderr)
        intensity = np.sqrt(np.sum((_zscore(t1) - _zscore(t2)) ** 2, axis=0)).astype(np.float32)
        intensity[~valid] = np.nan
        threshold, method = _otsu(intensity[valid]), "otsu"
        binary = np.where(valid, (intensity > threshold).astype(np.uint8), 255).astype(np.uint8)
        title = "Change detection report (example: CVA intensity)"
    report.detection_report(path, t1=t1, t2=t2, intensity=intensity, binary=binary, threshold=threshold,
                            threshold_method=method, info=info, loss_history=loss_history,
                            training_mask=training_mask, title=title)


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    sys.exit("Chromium is not installed: apt-get install -y --no-install-recommends chromium")


def screenshot(html: Path, png: Path, width: int = 1200, height: int = 2000) -> None:
    """Render ``html`` with headless Chromium (offline, throw-away profile) to ``png``."""
    with tempfile.TemporaryDirectory(prefix="hypernet-chromium-") as profile:
        shot = Path(profile) / "shot.png"
        cmd = [find_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--hide-scrollbars", f"--user-data-dir={profile}", f"--screenshot={shot}",
               f"--window-size={width},{height}", html.resolve().as_uri()]
        subprocess.run(cmd, check=True, timeout=120, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not shot.is_file():
            sys.exit("Chromium did not write a screenshot.")
        try:
            from PIL import Image

            with Image.open(shot) as img:
                img.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE) \
                    .save(png, optimize=True)
        except ImportError:
            shutil.copyfile(shot, png)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report", type=Path, help="an existing HTML report (default: make an example)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "report_example.png")
    parser.add_argument("--keep-html", type=Path, help="also keep the generated example report here")
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=2000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hypernet-report-") as tmp:
        html = args.report
        if html is None:
            html = args.keep_html or Path(tmp) / "report.html"
            _example_report(html)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        screenshot(html, args.out, args.width, args.height)
    print(f"{args.out} ({args.out.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
