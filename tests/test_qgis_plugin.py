"""The plugin as QGIS sees it: metadata, loading, the provider, the algorithms' interface, help and icons."""

from __future__ import annotations

import configparser
import os
from pathlib import Path

import pytest
from test_qgis_support import hypernet_provider  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[1]
KEEP_ALIVE: list = []

#: The algorithm interface (ids and parameter names are used by scripts, models and qgis_process).
INTERFACE = {
    "hypernet:trainhypernet": {
        "params": {
            "INPUT_T1",
            "INPUT_T2",
            "BANDS",
            "UNCHANGED_MASK",
            "EPOCHS",
            "LEARNING_RATE",
            "GAMMA",
            "SEED",
            "DEVICE",
            "OUTPUT_MODEL",
            "SCHEDULE",
            "MEMORY_BUDGET_MB",
            "OUTPUT_REPORT",
        },
        "advanced": {"SCHEDULE", "MEMORY_BUDGET_MB", "OUTPUT_REPORT"},
        "outputs": {"OUTPUT_MODEL", "FINAL_LOSS", "OUTPUT_REPORT"},
    },
    "hypernet:detectchange": {
        "params": {
            "INPUT_T1",
            "INPUT_T2",
            "MODEL",
            "THRESHOLD_METHOD",
            "THRESHOLD",
            "DEVICE",
            "OUTPUT_CHANGE",
            "OUTPUT_INTENSITY",
            "BANDS",
            "UNCHANGED_MASK",
            "EPOCHS",
            "LEARNING_RATE",
            "GAMMA",
            "SEED",
            "SCHEDULE",
            "MEMORY_BUDGET_MB",
            "OUTPUT_REPORT",
        },
        "advanced": {"SCHEDULE", "MEMORY_BUDGET_MB", "OUTPUT_REPORT", "EPOCHS", "LEARNING_RATE", "GAMMA", "SEED"},
        "outputs": {"OUTPUT_CHANGE", "OUTPUT_INTENSITY", "CHANGED_PIXELS", "CHANGED_FRACTION"},
    },
    "hypernet:evaluatechange": {
        "params": {"INPUT", "REFERENCE", "CHANGED_VALUES", "UNCHANGED_VALUES", "IGNORE_VALUES", "OUTPUT_REPORT"},
        "advanced": set(),  # the report is this algorithm's main picture: not hidden under Advanced
        "outputs": {"OA", "KAPPA", "F1", "PRECISION", "RECALL", "AUC"},
    },
    "hypernet:classicchange": {
        "params": {
            "METHOD",
            "INPUT_T1",
            "INPUT_T2",
            "THRESHOLD_METHOD",
            "THRESHOLD",
            "OUTPUT_CHANGE",
            "OUTPUT_INTENSITY",
        },
        "advanced": set(),
        "outputs": {"OUTPUT_CHANGE", "OUTPUT_INTENSITY", "CHANGED_PIXELS", "CHANGED_FRACTION"},
    },
    "hypernet:detectseries": {
        "params": {
            "INPUTS",
            "DATES",
            "METHOD",
            "MODEL",
            "TRAINING",
            "BANDS",
            "THRESHOLD_METHOD",
            "THRESHOLD",
            "DEVICE",
            "POLYGONS",
            "MIN_AREA",
            "CONNECTIVITY",
            "ALIGN",
            "RESAMPLING",
            "OUTPUT_FOLDER",
        },
        "advanced": {"CONNECTIVITY", "EPOCHS", "SCHEDULE", "ALIGN", "RESAMPLING"},
        "outputs": {"FIRST_CHANGE", "CHANGE_COUNT", "OUTPUT_POLYGONS", "OUTPUT_MODEL"},
    },
    "hypernet:inspectmodel": {
        "params": {"INPUT", "OUTPUT_REPORT"},
        "advanced": set(),
        "outputs": {"OUTPUT_REPORT", "BANDS", "EPOCHS", "FINAL_LOSS"},
    },
    "hypernet:setupengine": {
        "params": {"ACTION", "SOURCE", "VARIANT"},
        "advanced": {"VARIANT"},
        "outputs": {"ENGINE_FOLDER", "VERSIONS"},
    },
}


def test_metadata_is_complete():
    parser = configparser.ConfigParser()
    parser.read(REPO / "metadata.txt", encoding="utf-8")
    general = parser["general"]
    assert general["name"] == "HyperNet change detection"
    assert general["qgisMinimumVersion"] == "3.22"
    assert general["version"] == "0.1.0"
    assert general["author"] == "HyperNet for QGIS developers"
    assert general["hasProcessingProvider"] == "yes"
    assert general["experimental"] == "True"
    for key in ("description", "about", "email", "repository", "tracker", "tags", "icon"):
        assert general.get(key, "").strip(), key
    about = general["about"]
    assert "torch" in about and "spectral" in about and "pip install" in about
    assert '"Set up the HyperNet engine"' in about  # the way from inside QGIS comes first
    assert (REPO / "resources" / "icons" / Path(general["icon"]).name).is_file()
    from hypernet_qgis import __version__

    assert __version__ == general["version"]


def test_plugin_registers_and_unregisters_its_provider(qgis_app):
    """classFactory -> initProcessing adds the provider (no GUI needed); unload removes it."""
    from qgis.core import QgsApplication

    import hypernet_qgis

    registry = QgsApplication.processingRegistry()
    existing = registry.providerById("hypernet")
    if existing is not None:  # registered by another test's fixture: take it out for this test
        registry.removeProvider(existing)
    try:
        plugin = hypernet_qgis.classFactory(None)
        plugin.initProcessing()
        plugin.initProcessing()  # twice is harmless
        provider = registry.providerById("hypernet")
        assert provider is not None and provider is plugin.provider
        assert {a.id() for a in provider.algorithms()} == set(INTERFACE) | {SHIPPED_MODEL}
        plugin.initGui()  # without an iface (as in qgis_process) it only makes sure Processing is set up
        plugin.unload()
        assert registry.providerById("hypernet") is None
    finally:
        if registry.providerById("hypernet") is None and existing is not None:
            from hypernet_qgis.provider import HyperNetProvider

            replacement = HyperNetProvider()
            registry.addProvider(replacement)
            KEEP_ALIVE.append(replacement)  # a Python provider must outlive its registration


#: The Processing model of resources/models, offered in the Toolbox under the provider.
SHIPPED_MODEL = "hypernet:Train and detect, then evaluate"


@pytest.mark.parametrize("alg_id", sorted(INTERFACE))
def test_algorithm_interface(hypernet_provider, alg_id):  # noqa: F811
    from qgis.core import QgsApplication

    from hypernet_qgis.qgis_compat import ALG_FLAG_CAN_CANCEL, ALG_FLAG_NO_THREADING, FLAG_ADVANCED, has_flag

    alg = QgsApplication.processingRegistry().algorithmById(alg_id)
    assert alg is not None, alg_id
    names = {p.name() for p in alg.parameterDefinitions()}
    assert INTERFACE[alg_id]["params"] <= names, INTERFACE[alg_id]["params"] - names
    advanced = {p.name() for p in alg.parameterDefinitions() if has_flag(p.flags(), FLAG_ADVANCED)}
    assert INTERFACE[alg_id]["advanced"] <= advanced
    outputs = {o.name() for o in alg.outputDefinitions()}
    assert INTERFACE[alg_id]["outputs"] <= outputs, INTERFACE[alg_id]["outputs"] - outputs
    # Runs in the background (no FlagNoThreading) and can be cancelled.
    assert not has_flag(alg.flags(), ALG_FLAG_NO_THREADING)
    assert has_flag(alg.flags(), ALG_FLAG_CAN_CANCEL)
    # A group, an icon and a help text a newcomer can use (what, inputs, outputs, time).
    assert alg.group() and alg.groupId()
    assert not alg.icon().isNull()
    text = alg.shortHelpString()
    for word in ("Input", "Output", "Time"):
        assert word in text, (alg_id, word)
    assert len(text) > 400
    # Toolbox tooltip, search words, Model Designer icon, help link to the algorithm's README section
    assert len(alg.shortDescription()) > 30 and "change detection" in alg.tags()
    assert alg.svgIconPath().endswith(".svg") and os.path.isfile(alg.svgIconPath())
    assert "#" in alg.helpUrl()


def test_parameter_defaults_match_the_engine(hypernet_provider):  # noqa: F811
    """Defaults shown in QGIS are the engine's (TrainConfig) and the enums use readable static strings."""
    from qgis.core import QgsApplication

    from hypernet_qgis.algorithms.base import MIN_SIDE
    from hypernet_qgis.core import pipeline
    from hypernet_qgis.core.hypernet.training import TrainConfig
    from hypernet_qgis.qgis_compat import FLAG_OPTIONAL, has_flag

    assert MIN_SIDE == pipeline.MIN_SIDE
    cfg = TrainConfig()
    alg = QgsApplication.processingRegistry().algorithmById("hypernet:trainhypernet")
    p = alg.parameterDefinition
    assert p("LEARNING_RATE").defaultValue() == cfg.learning_rate
    assert p("GAMMA").defaultValue() == cfg.gamma
    assert p("SEED").defaultValue() == cfg.seed
    assert p("MEMORY_BUDGET_MB").defaultValue() == cfg.memory_budget_mb
    assert p("SCHEDULE").defaultValue() == cfg.schedule and p("SCHEDULE").options() == ["default", "paper"]
    assert p("DEVICE").defaultValue() == cfg.device and p("DEVICE").options() == ["auto", "cpu", "cuda"]
    assert p("EPOCHS").defaultValue() is None and has_flag(p("EPOCHS").flags(), FLAG_OPTIONAL)
    detect = QgsApplication.processingRegistry().algorithmById("hypernet:detectchange")
    assert detect.parameterDefinition("THRESHOLD_METHOD").options() == [
        "auto",
        "otsu",
        "kmeans",
        "mixture",
        "mrf",
        "fixed",
    ]
    classic = QgsApplication.processingRegistry().algorithmById("hypernet:classicchange")
    assert classic.parameterDefinition("METHOD").options() == ["cva", "sam", "irmad", "pcakmeans"]


def test_band_list_parsing():
    from hypernet_qgis.algorithms.base import parse_band_list
    from hypernet_qgis.core.errors import InputError

    assert parse_band_list("") is None and parse_band_list(None) is None
    assert parse_band_list("1,2, 5-8") == [1, 2, 5, 6, 7, 8]
    assert parse_band_list("3;1") == [3, 1]
    for bad in ("a", "0", "5-2", "1,1", "1-"):
        with pytest.raises(InputError):
            parse_band_list(bad)


def test_resources_are_found_in_the_checkout():
    from hypernet_qgis.resources import resource_path

    for name in ("hypernet.svg", "train.svg", "detect.svg", "evaluate.svg", "classic.svg"):
        assert resource_path("icons", name).is_file()
    for name in ("change.qml", "intensity.qml"):
        assert resource_path("styles", name).is_file()
