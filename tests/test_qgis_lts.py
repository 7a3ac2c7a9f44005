"""QGIS 3.22 to 3.40 LTR and QGIS 4 (Qt6): the code uses only scoped-enum helpers and qgis.PyQt, and the main
jobs run through qgis_process on the sample pair. `make test-qgis-lts` runs this file (with test_qgis_plugin.py and
test_qgis_process.py) inside a Debian 13 chroot with QGIS 3.40, Python 3.13 and numpy 2; `make test` runs it here.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from test_qgis_process import QGIS_PROCESS_BIN, results_of, run, wrapper  # noqa: F401 (fixture)
from test_qgis_support import read

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "resources" / "sample" / "salinasA_pair"
#: Names that Qt6 builds of QGIS (QGIS 4) no longer have; qgis_compat.py maps them.
UNSCOPED = re.compile(
    r"QgsProcessingParameterDefinition\.Flag\w+|QgsProcessingAlgorithm\.Flag\w+|"
    r"QgsProcessingParameterNumber\.(Integer|Double)\b|QgsProcessingParameterFile\.(File|Folder)\b|"
    r"QgsProcessing\.Type\w+"
)


def sources() -> list[Path]:
    return [p for p in (REPO / "hypernet_qgis").rglob("*.py") if p.name != "qgis_compat.py"]


def test_no_unscoped_enums_and_only_qgis_pyqt():
    hits = []
    for path in sources():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if UNSCOPED.search(line) or re.search(r"\b(from|import)\s+PyQt[56]\b", line):
                hits.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not hits, "use hypernet_qgis/qgis_compat.py and qgis.PyQt:\n" + "\n".join(hits)


def test_compat_helpers_match_this_qgis():
    from qgis.core import Qgis, QgsProcessingParameterDefinition, QgsProcessingParameterNumber

    from hypernet_qgis import qgis_compat as compat

    if hasattr(Qgis, "ProcessingParameterFlag"):  # QGIS 3.36+: the scoped enums
        assert compat.FLAG_ADVANCED is Qgis.ProcessingParameterFlag.Advanced
        assert compat.NUMBER_INTEGER is Qgis.ProcessingNumberParameterType.Integer
        assert compat.FILE_BEHAVIOR_FILE is Qgis.ProcessingFileParameterBehavior.File
    if hasattr(QgsProcessingParameterDefinition, "FlagAdvanced"):  # 3.22 and Qt5 builds: the same numbers
        assert int(compat.FLAG_ADVANCED) == int(QgsProcessingParameterDefinition.FlagAdvanced)
        assert int(compat.NUMBER_DOUBLE) == int(QgsProcessingParameterNumber.Double)
    param = QgsProcessingParameterNumber("N", "n", compat.NUMBER_INTEGER, optional=True)
    param.setFlags(param.flags() | compat.FLAG_ADVANCED)
    assert compat.has_flag(param.flags(), compat.FLAG_ADVANCED) and compat.has_flag(param.flags(), compat.FLAG_OPTIONAL)
    assert not compat.has_flag(param.flags(), compat.FLAG_HIDDEN)
    assert int(param.dataType()) == int(compat.NUMBER_INTEGER)


@pytest.mark.skipif(not QGIS_PROCESS_BIN.exists(), reason="qgis_process.bin is not installed")
def test_detect_and_classic_on_the_sample_through_qgis_process(wrapper, tmp_path):  # noqa: F811
    """Detect Change (trains on the pair) and Classic change detection (CVA) on the Salinas-A sample pair, then
    Evaluate change map against its reference: valid, georeferenced, styled maps that find the change."""
    t1, t2, gt = (str(SAMPLE / n) for n in ("t1.tif", "t2.tif", "gt.tif"))
    reference, ref_gt, ref_wkt, _ = read(gt)
    scores = {}
    for alg, extra, name in (
        ("hypernet:detectchange", ("EPOCHS=5", "SEED=0", "DEVICE=cpu"), "hypernet"),
        ("hypernet:classicchange", ("METHOD=cva",), "cva"),
    ):
        out = tmp_path / f"{name}.tif"
        results = results_of(
            run(
                wrapper,
                "--json",
                "run",
                alg,
                "--",
                f"INPUT_T1={t1}",
                f"INPUT_T2={t2}",
                *extra,
                f"OUTPUT_CHANGE={out}",
                timeout=600,
            )
        )
        values, geotransform, wkt, nodata = read(str(out))
        assert values.shape == reference.shape == (83, 86)
        assert values.dtype == np.uint8 and set(np.unique(values)) <= {0, 1} and nodata == 255
        assert geotransform == pytest.approx(ref_gt) and wkt == ref_wkt
        assert results["CHANGED_PIXELS"] == int((values == 1).sum()) > 0
        assert (tmp_path / f"{name}.qml").is_file()
        evaluation = results_of(
            run(wrapper, "--json", "run", "hypernet:evaluatechange", "--", f"INPUT={out}", f"REFERENCE={gt}")
        )
        scores[name] = evaluation["KAPPA"]
    assert scores["cva"] == pytest.approx(0.786, abs=0.01)  # PROVENANCE.md: CVA + Otsu kappa 0.7860
    assert scores["hypernet"] > 0.3, scores  # 5 epochs: a rough but real detection
