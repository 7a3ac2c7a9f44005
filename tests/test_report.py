"""HTML reports: every figure is a real, non-blank PNG; tables show the numbers passed in; strings are escaped;
true-colour band choice, downsampling and the error map are right on hand-made cases; QGIS's Qt HTML viewer
resolves the embedded pictures."""

from __future__ import annotations

import base64
import io
import os
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from hypernet_qgis.core.classic import metrics
from hypernet_qgis.core.errors import InputError
from hypernet_qgis.core.report import quicklook as ql
from hypernet_qgis.core.report import report

EVIL = '<script>alert("x")</script> & <b>bold</b>'


class _Doc(HTMLParser):
    """Collects <img> attributes by id, the text inside every element that has an id, and all start tags."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.images: dict[str, dict[str, str]] = {}
        self.text_by_id: dict[str, str] = {}
        self.tags: list[str] = []
        self.text: list[str] = []
        self._open: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.images[a.get("id", f"anon{len(self.images)}")] = a
            return
        if tag in ("br", "meta"):
            return
        self._open.append((tag, a.get("id")))
        if a.get("id"):
            self.text_by_id.setdefault(a["id"], "")

    def handle_endtag(self, tag):
        while self._open:
            t, _ = self._open.pop()
            if t == tag:
                break

    def handle_data(self, data):
        self.text.append(data)
        for _, ident in self._open:
            if ident:
                self.text_by_id[ident] += data


def _parse(path) -> _Doc:
    doc = _Doc()
    doc.feed(open(path, encoding="utf-8").read())
    doc.close()
    return doc


def _png(uri: str) -> np.ndarray:
    """Decode a data URI with Pillow (independent of our encoder) and check it is a plausible, non-blank PNG."""
    from PIL import Image

    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix)
    raw = base64.b64decode(uri[len(prefix) :], validate=True)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(raw)) as img:
        assert img.format == "PNG"
        arr = np.asarray(img.convert("RGB"))
    assert 20 <= arr.shape[0] <= 2000 and 20 <= arr.shape[1] <= 2000, arr.shape
    assert np.unique(arr.reshape(-1, 3), axis=0).shape[0] > 1, "single-colour picture"
    return arr


def _check_figures(doc: _Doc, names) -> dict[str, np.ndarray]:
    out = {}
    for name in names:
        assert name in doc.images, f"missing figure {name}; have {sorted(doc.images)}"
        out[name] = _png(doc.images[name]["src"])
        assert int(doc.images[name]["width"]) > 0 and int(doc.images[name]["height"]) > 0
    return out


def _scene(rows=48, cols=64, bands=8, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols]
    base = np.stack([np.sin(xx / (5 + b)) + np.cos(yy / (4 + b)) for b in range(bands)]).astype(np.float32)
    t1 = base + 0.05 * rng.standard_normal(base.shape).astype(np.float32)
    t2 = base + 0.05 * rng.standard_normal(base.shape).astype(np.float32)
    t2[:, 10:20, 30:45] += 2.0
    t1[:, 0:3, 0:5] = np.nan  # a no-data corner
    intensity = np.sqrt(np.sum((t1 - t2) ** 2, axis=0)).astype(np.float32)
    return t1, t2, intensity


# --------------------------------------------------------------------------------------------- reports


def test_detection_report_figures_numbers_and_escaping(tmp_path):
    t1, t2, intensity = _scene()
    valid = np.isfinite(intensity)
    threshold = 1.234567891
    binary = np.where(valid, (intensity > threshold).astype(np.uint8), 255).astype(np.uint8)
    mask = valid & (intensity < 0.5)
    loss = [1.0, 0.7, 0.5, 0.45, 0.41]
    info = {
        "T1 file": EVIL,
        "device": "cpu <gpu>",
        "seconds": 3.25,
        "settings": {"epochs": 5, "note": EVIL},
        "wavelengths_nm": list(np.linspace(450, 900, 8)),
    }
    out = tmp_path / "detection.html"
    t1_before = t1.copy()
    report.detection_report(
        out,
        t1=t1,
        t2=t2,
        intensity=intensity,
        binary=binary,
        threshold=threshold,
        threshold_method="otsu & <friends>",
        info=info,
        loss_history=loss,
        training_mask=mask,
    )
    doc = _parse(out)
    figs = _check_figures(
        doc, ["fig-t1", "fig-t2", "fig-intensity", "fig-binary", "fig-histogram", "fig-loss", "fig-mask"]
    )
    t = doc.text_by_id
    assert t["v-changed"] == str(int((binary == 1).sum()))
    assert t["v-changed-percent"] == f"{100 * (binary == 1).sum() / (binary != 255).sum():.2f} %"
    assert t["v-threshold"] == "1.23457"
    assert t["v-method"] == "otsu & <friends>"
    assert t["v-valid"] == str(int(valid.sum()))
    # user strings are shown as text, never as markup
    assert "script" not in doc.tags and "friends" not in doc.tags and doc.tags.count("b") == 0
    assert EVIL in "".join(doc.text)
    # the binary quicklook uses the palette: changed pixels appear, no-data corner is black
    b = figs["fig-binary"]
    assert (b == ql.BINARY_PALETTE[1]).all(axis=-1).any()
    assert (b[0, 0] == ql.NO_DATA_RGB).all()
    # the training mask picture shows training pixels in the legend colour
    assert (figs["fig-mask"] == ql.MASK_PALETTE[1]).all(axis=-1).any()
    np.testing.assert_array_equal(t1, t1_before)  # inputs untouched
    assert [p.name for p in tmp_path.iterdir()] == ["detection.html"]  # no temporary left behind


def test_detection_report_without_training_has_no_training_figures(tmp_path):
    t1, t2, intensity = _scene()
    binary = np.where(np.isfinite(intensity), (intensity > 1).astype(np.uint8), 255).astype(np.uint8)
    out = tmp_path / "d.html"
    report.detection_report(
        out, t1=t1, t2=t2, intensity=intensity, binary=binary, threshold=1.0, threshold_method="fixed", info=None
    )
    doc = _parse(out)
    _check_figures(doc, ["fig-t1", "fig-t2", "fig-intensity", "fig-binary", "fig-histogram"])
    assert "fig-loss" not in doc.images and "fig-mask" not in doc.images
    assert "Pixels above the dashed line are mapped as changed." in out.read_text()


def test_detection_report_of_the_mrf_map_does_not_claim_a_pixelwise_threshold(tmp_path):
    """With the MRF map some pixels above the mixture's split are unchanged and some below changed."""
    t1, t2, intensity = _scene()
    binary = np.where(np.isfinite(intensity), (intensity > 1).astype(np.uint8), 255).astype(np.uint8)
    out = tmp_path / "m.html"
    report.detection_report(
        out, t1=t1, t2=t2, intensity=intensity, binary=binary, threshold=1.0, threshold_method="mrf", info=None
    )
    text = out.read_text()
    assert "Pixels above the dashed line are mapped as changed." not in text
    assert "where the MRF map starts" in text


def test_training_report(tmp_path):
    t1, t2, intensity = _scene(bands=3)
    mask = np.isfinite(intensity) & (intensity < 0.4)
    loss = list(np.geomspace(5.0, 0.01, 40))  # spans > 20x: log axis
    out = tmp_path / "training.html"
    report.training_report(
        out,
        t1=t1,
        t2=t2,
        info={"device": "cuda:0 (NVIDIA H100)", "seconds": 12.0},
        loss_history=loss,
        training_mask=mask,
    )
    doc = _parse(out)
    _check_figures(doc, ["fig-t1", "fig-t2", "fig-loss", "fig-mask"])
    assert doc.text_by_id["v-training"] == str(int(mask.sum()))
    assert doc.text_by_id["v-epochs"] == "40"
    assert doc.text_by_id["v-final-loss"] == f"{loss[-1]:.6g}"


def test_evaluation_report_tables_match_metrics(tmp_path):
    rng = np.random.default_rng(3)
    reference = rng.choice(np.array([0, 1, 255], dtype=np.uint8), size=(50, 60), p=[0.6, 0.25, 0.15])
    score = (reference == 1) * 1.0 + rng.normal(0, 0.6, reference.shape)
    pred = (score > 0.5).astype(np.uint8)
    pred[:4, :4] = 255  # no prediction there
    m = metrics.change_metrics(pred, reference, ignore=(255,))
    fpr, tpr, _ = metrics.roc_curve(score, reference, ignore=(255,))
    auc = metrics.roc_auc(score, reference, ignore=(255,))
    out = tmp_path / "eval.html"
    report.evaluation_report(
        out,
        prediction=pred,
        reference=reference,
        metrics=m,
        roc=(fpr, tpr),
        auc=auc,
        ignore=(255,),
        info={"change map": EVIL},
    )
    doc = _parse(out)
    figs = _check_figures(doc, ["fig-errors", "fig-roc", "fig-prediction", "fig-reference"])
    t = doc.text_by_id
    for ident, key in (
        ("m-oa", "OA"),
        ("m-kappa", "kappa"),
        ("m-f1", "F1"),
        ("m-precision", "precision"),
        ("m-recall", "recall"),
        ("m-false-alarm-rate", "false_alarm_rate"),
        ("m-missed-alarm-rate", "missed_alarm_rate"),
    ):
        assert t[ident] == f"{m[key]:.4f}", ident
    assert t["m-auc"] == f"{auc:.4f}"
    for ident, key in (("cm-tn", "TN"), ("cm-fp", "FP"), ("cm-fn", "FN"), ("cm-tp", "TP")):
        assert t[ident] == str(m[key]), ident
    assert t["cm-total"] == str(m["n_labelled"])
    assert t["cm-ref1"] == str(m["n_changed_ref"])
    assert "script" not in doc.tags
    # the error map shows false alarms and misses in their own colours
    e = figs["fig-errors"]
    assert (e == ql.ERROR_PALETTE[ql.ERROR_FALSE_ALARM]).all(axis=-1).any()
    assert (e == ql.ERROR_PALETTE[ql.ERROR_MISS]).all(axis=-1).any()
    assert "script" not in doc.tags


def test_evaluation_report_accepts_an_intensity_prediction(tmp_path):
    rng = np.random.default_rng(4)
    reference = (rng.random((30, 40)) < 0.3).astype(np.uint8)
    score = reference + rng.normal(0, 0.5, reference.shape).astype(np.float32)
    m = metrics.change_metrics((score > 0.5).astype(np.uint8), reference)
    out = tmp_path / "eval.html"
    report.evaluation_report(
        out, prediction=score, reference=reference, metrics=m, auc=metrics.roc_auc(score, reference)
    )
    doc = _parse(out)
    _check_figures(doc, ["fig-prediction", "fig-reference"])
    assert "fig-errors" not in doc.images  # no binary map, no error map


def test_model_report_escapes_metadata_and_plots_loss(tmp_path):
    meta = {
        "bands": 6,
        "widths": [6, 32, 64, 32],
        "loss_history": [0.9, 0.5, 0.3, 0.25],
        "training": {"epochs": 4, "distance": "cosine"},
        "software": {"torch": "2.13.0"},
        "band_mean": list(range(100)),
        EVIL: EVIL,
    }
    out = tmp_path / "model.html"
    report.model_report(out, meta, source="/some/<model>.pt")
    doc = _parse(out)
    _check_figures(doc, ["fig-loss"])
    assert doc.text_by_id["v-bands"] == "6"
    assert doc.text_by_id["v-epochs"] == "4"
    assert doc.text_by_id["v-final-loss"] == "0.25"
    assert "script" not in doc.tags and "model" not in doc.tags
    text = "".join(doc.text)
    assert EVIL in text and "/some/<model>.pt" in text
    assert "100 values: 0, 1, 2, 3, \u2026, 98, 99" in text  # long lists are summarised


def test_model_report_without_history(tmp_path):
    out = tmp_path / "m.html"
    report.model_report(out, {"bands": 3})
    doc = _parse(out)
    assert not doc.images


# --------------------------------------------------------------------------------------------- error map


def test_error_map_hand_computed():
    pred = np.array([[1, 1, 0, 0, 255, 1]], dtype=np.uint8)
    ref = np.array([[1, 0, 1, 0, 1, 1]], dtype=bool)
    lab = np.array([[1, 1, 1, 1, 1, 0]], dtype=bool)
    np.testing.assert_array_equal(report.error_map(pred, ref, lab), [[0, 1, 2, 0, 255, 255]])
    # bool predictions have no "no data"
    np.testing.assert_array_equal(report.error_map(pred == 1, ref, lab), [[0, 1, 2, 0, 2, 255]])
    assert report.error_map(pred, ref, lab).dtype == np.uint8
    with pytest.raises(InputError):
        report.error_map(pred, ref[:, :3], lab)


# --------------------------------------------------------------------------------------------- quicklooks


def test_true_colour_choice():
    tm = [482.5, 565.0, 660.0, 825.0, 1650.0, 2220.0]
    assert ql.choose_rgb_bands(6, tm)[0] == (2, 1, 0)
    assert ql.choose_rgb_bands(6, [w / 1000 for w in tm])[0] == (2, 1, 0)  # micrometres
    aviris = np.linspace(400, 2500, 204)
    r, g, b = ql.choose_rgb_bands(204, aviris)[0]
    assert abs(aviris[r] - 640) < 6 and abs(aviris[g] - 550) < 6 and abs(aviris[b] - 470) < 6
    # no wavelengths, wrong count, or no visible bands: spread bands, red the longest
    assert ql.choose_rgb_bands(204, None)[0] == (170, 102, 34)
    assert ql.choose_rgb_bands(6, tm[:5])[0] == (5, 3, 1)
    assert ql.choose_rgb_bands(4, [800, 900, 1000, 1100])[0] == (3, 2, 0)
    assert ql.choose_rgb_bands(2, None)[0] == (0, 0, 0)
    with pytest.raises(InputError):
        ql.choose_rgb_bands(0, None)


def test_rgb_quicklook_puts_the_red_band_in_red():
    cube = np.zeros((6, 20, 30), dtype=np.float32)
    cube[2, :, :15] = 1.0  # 660 nm bright on the left only
    cube[0, 10:, :] = 1.0  # 482 nm bright at the bottom only
    cube[:, 0, 0] = np.nan
    img, text, factor = ql.rgb_quicklook(cube, [482.5, 565.0, 660.0, 825.0, 1650.0, 2220.0])
    assert factor == 1 and img.shape == (20, 30, 3) and "660" in text
    assert (img[1:, :15, 0] == 255).all() and (img[:, 15:, 0] == 0).all()
    assert (img[10:, 1:, 2] == 255).all() and (img[:10, 1:, 2] == 0).all()
    assert (img[0, 0] == 0).all()  # NaN -> black


def test_stretch_uses_2_and_98_percentiles():
    values = np.arange(101, dtype=np.float32)  # percentiles 2 and 98 are 2 and 98
    assert ql.percentile_limits(values) == (2.0, 98.0)
    s = ql.stretch(np.array([0, 2, 50, 98, 100, np.nan], dtype=np.float32), 2.0, 98.0)
    np.testing.assert_allclose(s[:5], [0, 0, 0.5, 1, 1])
    assert np.isnan(s[5])
    assert (ql.stretch(np.ones(3, dtype=np.float32), 1.0, 1.0) == 0.5).all()  # flat image: mid grey


def test_downsampling_big_scenes():
    assert ql.reduction_factor(2000, 2000) == 3 and ql.reduction_factor(800, 600) == 1
    assert ql.reduction_factor(801, 10) == 2
    codes = np.zeros((2000, 1999), dtype=np.uint8)
    codes[1000, 1000] = 1  # one changed pixel survives the reduction
    codes[:, 1997:] = 255
    small = ql.downsample_classes(codes, 3, ql.BINARY_PRIORITY)
    assert small.shape == (667, 667) and max(small.shape) <= ql.MAX_SIDE
    assert small[333, 333] == 1 and (small == 1).sum() == 1
    assert small[0, 665] == 0  # a block with unchanged and no-data pixels (cols 1995-1997) is unchanged
    assert small[0, 666] == 255  # the edge block (col 1998 + padding) has no data only
    a = np.arange(16, dtype=np.float32).reshape(4, 4)
    a[0, 0] = np.nan
    m = ql.downsample_mean(a, 2)
    np.testing.assert_allclose(
        m, [[(1 + 4 + 5) / 3, (2 + 3 + 6 + 7) / 4], [(8 + 9 + 12 + 13) / 4, (10 + 11 + 14 + 15) / 4]]
    )
    assert np.isnan(ql.downsample_mean(np.full((3, 3), np.nan, dtype=np.float32), 2)).all()


def test_big_scene_report_stays_small(tmp_path):
    rows = cols = 1700
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    cube = np.stack([np.sin(xx / 90 + b) * np.cos(yy / 70) for b in range(3)]).astype(np.float32)
    intensity = np.abs(cube[0] - cube[1])
    binary = (intensity > 0.5).astype(np.uint8)
    out = tmp_path / "big.html"
    report.detection_report(
        out,
        t1=cube,
        t2=cube[::-1],
        intensity=intensity,
        binary=binary,
        threshold=0.5,
        threshold_method="fixed",
        info={},
    )
    doc = _parse(out)
    for name in ("fig-t1", "fig-intensity", "fig-binary"):
        assert max(_png(doc.images[name]["src"]).shape[:2]) <= ql.MAX_SIDE
    assert "1/3 resolution" in "".join(doc.text)
    assert os.path.getsize(out) < 3_000_000


def test_png_encoder_roundtrip():
    from PIL import Image

    rng = np.random.default_rng(1)
    for shape in [(5, 7), (5, 7, 3), (4, 9, 4), (1, 1, 3)]:
        a = rng.integers(0, 256, shape, dtype=np.uint8)
        with Image.open(io.BytesIO(ql.png_bytes(a))) as img:
            np.testing.assert_array_equal(np.asarray(img), a)


# --------------------------------------------------------------------------------------------- bad input, atomic write


def test_bad_input_is_refused_and_old_report_kept(tmp_path):
    t1, t2, intensity = _scene()
    out = tmp_path / "r.html"
    out.write_text("old report")
    binary = np.full(intensity.shape, 7, dtype=np.uint8)  # not 0/1/255
    with pytest.raises(InputError, match="binary change map"):
        report.detection_report(
            out, t1=t1, t2=t2, intensity=intensity, binary=binary, threshold=1.0, threshold_method="otsu", info={}
        )
    with pytest.raises(InputError, match="same grid"):
        report.detection_report(
            out, t1=t1, t2=t2, intensity=intensity[:10], binary=binary, threshold=1.0, threshold_method="otsu", info={}
        )
    with pytest.raises(InputError, match="differ in shape"):
        report.training_report(out, t1=t1, t2=t2[:3], info={}, loss_history=[1.0], training_mask=intensity > 0)
    with pytest.raises(InputError, match="does not exist"):
        report.model_report(tmp_path / "missing" / "m.html", {"bands": 3})
    with pytest.raises(InputError, match="folder"):
        report.model_report(tmp_path, {"bands": 3})
    assert out.read_text() == "old report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]


# --------------------------------------------------------------------------------------------- real data, real Qt


def test_taizhou_true_colour_report(tmp_path, shared_dir):
    gdal = pytest.importorskip("osgeo.gdal")
    folder = shared_dir / "data" / "taizhou"
    t1 = gdal.Open(str(folder / "2000TM")).ReadAsArray().astype(np.float32)
    t2 = gdal.Open(str(folder / "2003TM")).ReadAsArray().astype(np.float32)
    out = tmp_path / "taizhou.html"
    report.training_report(
        out,
        t1=t1,
        t2=t2,
        info={"wavelengths_nm": [482.5, 565, 660, 825, 1650, 2220]},
        loss_history=[1.0, 0.5],
        training_mask=np.zeros(t1.shape[1:], dtype=bool),
    )
    doc = _parse(out)
    figs = _check_figures(doc, ["fig-t1", "fig-t2", "fig-loss"])
    assert figs["fig-t1"].shape == (400, 400, 3)
    assert "true colour: bands 3, 2, 1" in doc.images["fig-t1"]["alt"]


def test_qt_html_viewer_shows_the_pictures(tmp_path, qgis_app):
    """QGIS's rich-text viewer (QTextDocument) decodes every embedded picture at its PNG size."""
    from qgis.PyQt.QtCore import QUrl
    from qgis.PyQt.QtGui import QTextDocument

    t1, t2, intensity = _scene()
    binary = np.where(np.isfinite(intensity), (intensity > 1).astype(np.uint8), 255).astype(np.uint8)
    out = tmp_path / "d.html"
    report.detection_report(
        out,
        t1=t1,
        t2=t2,
        intensity=intensity,
        binary=binary,
        threshold=1.0,
        threshold_method="otsu",
        info={"x": EVIL},
        loss_history=[1.0, 0.5],
        training_mask=np.isfinite(intensity),
    )
    text = out.read_text(encoding="utf-8")
    doc = QTextDocument()
    doc.setHtml(text)
    sources = re.findall(r'src="(data:image/png;base64,[^"]+)"', text)
    assert len(sources) == 7
    for src in sources:
        pixmap = doc.resource(QTextDocument.ImageResource, QUrl(src))
        assert pixmap is not None and not pixmap.isNull()
        assert (pixmap.width(), pixmap.height()) == _png(src).shape[1::-1]
    assert EVIL in doc.toPlainText()


# --------------------------------------------------------------------------------------------- Inspect algorithm


def _model_file(folder) -> str:
    pytest.importorskip("torch")
    from hypernet_qgis.core.hypernet.model_file import save_model
    from hypernet_qgis.core.hypernet.network import HyperNet

    path = str(folder / "tiny.hypernet")
    save_model(
        path,
        HyperNet(5, 8, 16, 8),
        {"loss_history": [0.3, 0.1, -0.05], "device": "cpu <test>", "training": {"epochs": 3, "seed": 7}},
    )
    return path


def test_inspect_model_algorithm(tmp_path, qgis_app):
    import processing
    from qgis.core import QgsProcessingException

    from hypernet_qgis.algorithms.inspect_model import InspectModelAlgorithm

    model = _model_file(tmp_path)
    out = tmp_path / "model.html"
    alg = InspectModelAlgorithm().create()
    assert alg.id().endswith("inspectmodel") and alg.displayName() == "Inspect HyperNet model"
    result = processing.run(alg, {"INPUT": model, "OUTPUT_REPORT": str(out)})
    assert result["OUTPUT_REPORT"] == str(out)
    assert result["BANDS"] == 5 and result["EPOCHS"] == 3 and result["FINAL_LOSS"] == pytest.approx(-0.05)
    assert result["DEVICE_USED"] == "cpu <test>"
    doc = _parse(out)
    _check_figures(doc, ["fig-loss"])
    assert doc.text_by_id["v-bands"] == "5" and doc.text_by_id["v-final-loss"] == "-0.05"
    assert "test" not in doc.tags and "cpu <test>" in "".join(doc.text)
    # a missing model and a report over the model file are refused with a clear message, nothing written
    with pytest.raises(QgsProcessingException, match="does not exist"):
        processing.run(
            InspectModelAlgorithm().create(),
            {"INPUT": str(tmp_path / "nope.hypernet"), "OUTPUT_REPORT": str(tmp_path / "x.html")},
        )
    with pytest.raises(QgsProcessingException, match="overwrite the model"):
        processing.run(InspectModelAlgorithm().create(), {"INPUT": model, "OUTPUT_REPORT": model})
    assert not (tmp_path / "x.html").exists()


def test_glue_from_engine_results(tmp_path):
    """write_*_report from real pipeline results on a tiny GeoTIFF pair (the path the CLI and QGIS take)."""
    pytest.importorskip("torch")
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_qgis_support import make_pair

    from hypernet_qgis.core import pipeline
    from hypernet_qgis.core.hypernet.training import TrainConfig

    p = make_pair(tmp_path / "data", bands=6, size=24)
    cfg = TrainConfig(epochs=2, seed=0, device="cpu")
    det = pipeline.detect_files(
        p["t1"], p["t2"], str(tmp_path / "c.tif"), intensity_out=str(tmp_path / "i.tif"), config=cfg
    )
    report.write_detection_report(tmp_path / "det.html", det)
    doc = _parse(tmp_path / "det.html")
    _check_figures(doc, ["fig-t1", "fig-t2", "fig-intensity", "fig-binary", "fig-histogram", "fig-loss", "fig-mask"])
    assert doc.text_by_id["v-changed"] == str(det.changed_pixels)
    assert doc.text_by_id["v-threshold"] == f"{det.threshold:.6g}"
    report.write_training_report(tmp_path / "train.html", det.train)
    _check_figures(_parse(tmp_path / "train.html"), ["fig-t1", "fig-t2", "fig-loss", "fig-mask"])
    report.write_evaluation_report(tmp_path / "eval.html", str(tmp_path / "c.tif"), p["ref"])
    doc = _parse(tmp_path / "eval.html")
    m = pipeline.evaluate_files(str(tmp_path / "c.tif"), p["ref"])
    _check_figures(doc, ["fig-errors", "fig-roc", "fig-prediction", "fig-reference"])
    assert doc.text_by_id["m-kappa"] == f"{m['kappa']:.4f}" and doc.text_by_id["cm-tp"] == str(m["TP"])
    report.write_evaluation_report(tmp_path / "evali.html", str(tmp_path / "i.tif"), p["ref"])
    doc = _parse(tmp_path / "evali.html")
    assert "fig-errors" not in doc.images
    assert doc.text_by_id["m-auc"] == f"{pipeline.evaluate_files(str(tmp_path / 'i.tif'), p['ref'])['AUC']:.4f}"
