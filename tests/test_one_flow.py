"""One flow for every scene size: a pair over the memory budget (read, trained and detected by windows) gives the
same outputs, model metadata and report as the same pair in memory (issue 14)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import numpy as np
import pytest
from osgeo import gdal

from hypernet_qgis.core import pipeline
from hypernet_qgis.core.hypernet.model_file import load_model
from hypernet_qgis.core.options import TrainConfig
from hypernet_qgis.core.progress import NullFeedback

#: A budget far below what the 40x36x8 test pair needs in memory (~0.2 MB): everything goes by windows.
TINY_MB = 0.02


def _config(budget: float | None = None) -> TrainConfig:
    kwargs = dict(epochs=3, device="cpu", seed=0, crop_size=24, pixels_per_step=1200)
    if budget is not None:
        kwargs["memory_budget_mb"] = budget
    return TrainConfig(**kwargs)


class _Sections(HTMLParser):
    """The ids of a report's sections and figures."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []

    def handle_starttag(self, tag, attrs):
        ident = dict(attrs).get("id")
        if ident and (tag in ("h2", "figure") or ident.startswith("fig-")):
            self.ids.append(ident)


def _sections(path) -> list[str]:
    parser = _Sections()
    parser.feed(open(path, encoding="utf-8").read())
    return parser.ids


def test_train_by_windows_saves_the_same_model_metadata(synthetic_pair, tmp_path):
    t1, t2 = str(synthetic_pair["t1"]), str(synthetic_pair["t2"])
    whole = pipeline.train_files(t1, t2, str(tmp_path / "whole.hypernet"), bands=[1, 2, 3, 4, 5, 6], config=_config())
    windows = pipeline.train_files(
        t1, t2, str(tmp_path / "windows.hypernet"), bands=[1, 2, 3, 4, 5, 6], config=_config(TINY_MB)
    )
    _, meta_whole = load_model(str(tmp_path / "whole.hypernet"))
    _, meta_windows = load_model(str(tmp_path / "windows.hypernet"))
    for key in ("band_count", "band_selection", "wavelengths_nm", "mask_g", "inputs"):
        assert meta_windows.get(key) == meta_whole.get(key), key
    assert meta_windows["band_selection"] == [1, 2, 3, 4, 5, 6] and meta_windows["band_count"] == 6
    for date in ("t1", "t2"):  # the same per-band statistics, merged strip by strip
        np.testing.assert_allclose(
            meta_windows["scaling"][date]["mean"], meta_whole["scaling"][date]["mean"], rtol=1e-9
        )
        np.testing.assert_allclose(meta_windows["scaling"][date]["std"], meta_whole["scaling"][date]["std"], rtol=1e-9)
    # the same training pixels (mask g) from the CVA computed strip by strip
    assert (windows.training_mask != whole.training_mask).sum() <= 2


def test_detect_by_windows_writes_the_same_map_and_a_report(synthetic_pair, tmp_path, monkeypatch):
    """The report used to fail on every pair over the budget ("carries no images"). HyperNet's own intensity is
    compared here; the default fusion by windows is compared in test_the_fused_default_is_the_same_by_windows.
    Every scratch file (the pair's, and detection's layer maps, deleted in the background) is gone when a job
    returns."""
    import tempfile

    from hypernet_qgis.core.report.report import write_detection_report

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    t1, t2 = str(synthetic_pair["t1"]), str(synthetic_pair["t2"])
    model = str(tmp_path / "m.hypernet")
    pipeline.train_files(t1, t2, model, config=_config())
    runs = {}
    for name, budget in (("whole", None), ("windows", TINY_MB)):
        result = pipeline.detect_files(
            t1,
            t2,
            str(tmp_path / f"{name}.tif"),
            intensity_out=str(tmp_path / f"{name}_i.tif"),
            model=model,
            config=_config(budget),
            evidence="hypernet",
        )
        assert not [p.name for p in scratch.iterdir() if p.name.startswith("hypernet-")], name
        write_detection_report(str(tmp_path / f"{name}.html"), result)
        runs[name] = result
    assert runs["windows"].extra.get("streamed") and not runs["whole"].extra.get("streamed")
    a = gdal.Open(str(tmp_path / "whole.tif")).ReadAsArray()
    b = gdal.Open(str(tmp_path / "windows.tif")).ReadAsArray()
    assert (a != b).sum() <= 2 and ((a == 255) == (b == 255)).all()
    ia = gdal.Open(str(tmp_path / "whole_i.tif")).ReadAsArray()
    ib = gdal.Open(str(tmp_path / "windows_i.tif")).ReadAsArray()
    assert np.abs(ia - ib).max() <= 1e-4 * (ia[ia != -9999].max() - ia[ia != -9999].min())
    assert _sections(tmp_path / "windows.html") == _sections(tmp_path / "whole.html")
    text = open(tmp_path / "windows.html", encoding="utf-8").read()
    assert re.search(r'id="v-changed">[0-9,]+<', text) and "data:image/png;base64," in text


def test_a_job_waits_for_its_layer_maps_deleted_in_the_background(synthetic_pair, tmp_path, monkeypatch):
    """A pair in memory whose detection keeps its layer maps on disk (0.5 MB): they are deleted in a background
    thread, and the job returns only once they are gone, however slow the file system (rmtree slowed down here)."""
    import shutil
    import tempfile
    import time

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    real_rmtree = shutil.rmtree

    def slow_rmtree(*args, **kwargs):
        time.sleep(0.5)
        real_rmtree(*args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", slow_rmtree)
    t1, t2 = str(synthetic_pair["t1"]), str(synthetic_pair["t2"])
    model = str(tmp_path / "m.hypernet")
    pipeline.train_files(t1, t2, model, config=_config())
    messages = []

    class Log(NullFeedback):
        def info(self, text):
            messages.append(text)

    result = pipeline.detect_files(
        t1, t2, str(tmp_path / "c.tif"), model=model, config=_config(0.5), evidence="hypernet", feedback=Log()
    )
    assert not result.extra.get("streamed") and any("disk scratch" in m for m in messages), messages
    assert not [p.name for p in scratch.iterdir() if p.name.startswith("hypernet-")]


def test_the_fused_default_is_the_same_by_windows(synthetic_pair, tmp_path):
    """Over half the budget the pair is read by windows and still gets the default fusion (IR-MAD by strips of
    the scratch files, CVA from the pre-detection score): the same intensity and map as in memory. It used to
    fall back to HyperNet alone there."""
    t1, t2, gt = (str(synthetic_pair[k]) for k in ("t1", "t2", "gt"))
    model = str(tmp_path / "m.hypernet")
    pipeline.train_files(t1, t2, model, config=_config())
    runs = {}
    for name, budget in (("whole", None), ("windows", TINY_MB)):
        runs[name] = pipeline.detect_files(t1, t2, str(tmp_path / f"{name}.tif"), model=model, config=_config(budget))
    whole, windows = runs["whole"], runs["windows"]
    assert windows.extra.get("streamed") and not whole.extra.get("streamed")
    assert windows.extra["evidence"] == whole.extra["evidence"] == "fused"
    assert windows.threshold_method == whole.threshold_method == "mrf"
    valid = whole.pair.valid
    np.testing.assert_allclose(windows.intensity[valid], whole.intensity[valid], rtol=1e-3, atol=1e-4)
    assert (windows.binary != whole.binary).sum() <= 2
    assert pipeline.evaluate_files(str(tmp_path / "windows.tif"), gt)["kappa"] > 0.9


@pytest.mark.parametrize("budget", [None, TINY_MB])
def test_the_same_checks_before_any_work_whatever_the_size(synthetic_pair, tmp_path, budget):
    from hypernet_qgis.core.errors import InputError

    t1 = str(synthetic_pair["t1"])
    with pytest.raises(InputError, match="same image"):
        pipeline.train_files(t1, t1, str(tmp_path / "m.hypernet"), config=_config(budget))
    with pytest.raises(InputError, match="band 99"):
        pipeline.detect_files(
            t1, str(synthetic_pair["t2"]), str(tmp_path / "c.tif"), bands=[1, 99], config=_config(budget)
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gt.tif", "t1.tif", "t2.tif"]  # nothing written
