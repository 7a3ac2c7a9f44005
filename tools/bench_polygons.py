"""Change polygons at scale: a 2000x2000 change map with ~111,000 regions polygonised, time and peak memory.

    python tools/bench_polygons.py [--size 2000] [--budget-mb 4096] [--folder DIR]

The map has a 2x2 changed block every 6 pixels (8-connected regions of 4 pixels), a float32 intensity beside it;
the polygonising runs in a fresh subprocess so its peak RSS (ru_maxrss) is its own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = """
import json, resource, sys, time
sys.path.insert(0, {repo!r})
from hypernet_qgis.core.io import polygons
start = time.perf_counter()
r = polygons.polygonize_change({change!r}, {out!r}, intensity={inten!r}, connectivity=8, min_area=300,
                               memory_budget_mb={budget})
print(json.dumps({{"regions": r.regions, "features": r.kept, "seconds": round(time.perf_counter() - start, 1),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
                  "gpkg_mb": round(__import__("os").path.getsize({out!r}) / 2**20, 1)}}))
"""


def write_inputs(folder: Path, size: int) -> tuple[str, str]:
    import numpy as np
    from osgeo import gdal, osr

    yy, xx = np.mgrid[0:size, 0:size]
    change = (((yy % 6) < 2) & ((xx % 6) < 2)).astype(np.uint8)
    inten = np.random.default_rng(0).random((size, size)).astype(np.float32)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    paths = []
    for name, arr, kind in (("change.tif", change, gdal.GDT_Byte), ("intensity.tif", inten, gdal.GDT_Float32)):
        path = str(folder / name)
        ds = gdal.GetDriverByName("GTiff").Create(path, size, size, 1, kind, ["TILED=YES", "COMPRESS=DEFLATE"])
        ds.SetGeoTransform((500000.0, 10.0, 0.0, 4000000.0, 0.0, -10.0))
        ds.SetProjection(srs.ExportToWkt())
        ds.GetRasterBand(1).WriteArray(arr)
        ds = None
        paths.append(path)
    return paths[0], paths[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--budget-mb", type=int, default=4096)
    parser.add_argument("--folder", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        change, inten = write_inputs(Path(tmp), args.size)
        code = CHILD.format(
            repo=str(REPO), change=change, inten=inten, out=str(Path(tmp) / "polygons.gpkg"), budget=args.budget_mb
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        result.update(size=f"{args.size}x{args.size}", budget_mb=args.budget_mb)
        print(json.dumps(result))


if __name__ == "__main__":
    main()
