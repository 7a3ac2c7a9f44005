"""The main job on the shipped sample data (``make demo``): Detect Change through ``qgis_process``.

Runs ``hypernet:detectchange`` on resources/sample/salinasA_pair (AVIRIS, 204 bands, implanted change) with the
default settings, then ``hypernet:evaluatechange`` against its reference, and says where the styled result is.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "resources" / "sample" / "salinasA_pair"
OUT = REPO / "demo-output"
QGIS_PROCESS = REPO / ".venv" / "bin" / "qgis_process"


def qgis_process(algorithm: str, **params: str) -> dict:
    """Run one algorithm with the repository's qgis_process wrapper; return its JSON results."""
    args = [str(QGIS_PROCESS), "run", algorithm, "--json", "--"] + [f"{k}={v}" for k, v in params.items()]
    print("$ " + " ".join(args[:3]) + " -- " + " ".join(args[5:]), flush=True)
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"{algorithm} failed (exit {proc.returncode})")
    text = proc.stdout[proc.stdout.index("{") :]
    return json.loads(text)


def main() -> int:
    OUT.mkdir(exist_ok=True)
    change, intensity = OUT / "salinasA_change.tif", OUT / "salinasA_intensity.tif"
    report, evaluation = OUT / "salinasA_detection.html", OUT / "salinasA_evaluation.html"
    start = time.perf_counter()
    result = qgis_process(
        "hypernet:detectchange",
        INPUT_T1=str(SAMPLE / "t1.tif"),
        INPUT_T2=str(SAMPLE / "t2.tif"),
        OUTPUT_CHANGE=str(change),
        OUTPUT_INTENSITY=str(intensity),
        OUTPUT_REPORT=str(report),
        SEED="0",
    )["results"]
    seconds = time.perf_counter() - start
    scores = qgis_process(
        "hypernet:evaluatechange",
        INPUT=str(change),
        REFERENCE=str(SAMPLE / "gt.tif"),
        CHANGED_VALUES="1",
        UNCHANGED_VALUES="0",
        OUTPUT_REPORT=str(evaluation),
    )["results"]
    ranking = qgis_process(
        "hypernet:evaluatechange",
        INPUT=str(intensity),
        REFERENCE=str(SAMPLE / "gt.tif"),
        CHANGED_VALUES="1",
        UNCHANGED_VALUES="0",
    )["results"]
    print()
    print(
        f"Detect Change finished in {seconds:.0f} s: {int(result['CHANGED_PIXELS'])} changed pixels "
        f"({100 * float(result['CHANGED_FRACTION']):.1f}% of the scene)."
    )
    print(
        "Against the reference: "
        + ", ".join(f"{k} {float(scores[k]):.3f}" for k in ("OA", "KAPPA", "F1") if k in scores)
        + f"; AUC of the intensity {float(ranking['AUC']):.3f}"
    )
    print(f"\nStyled change map (open it in QGIS; the .qml beside it styles it): {change}")
    print(f"Change intensity: {intensity}")
    print(f"Reports: {report}\n         {evaluation}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
