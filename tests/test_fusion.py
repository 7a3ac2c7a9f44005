"""The default change intensity (HyperNet + IR-MAD + CVA, core/fusion.py) and its mixture threshold."""

from __future__ import annotations

import numpy as np
import pytest
from osgeo import gdal

from hypernet_qgis.core import pipeline
from hypernet_qgis.core.classic.thresholds import METHODS, mixture_threshold, mrf_change, otsu_threshold
from hypernet_qgis.core.errors import InputError
from hypernet_qgis.core.fusion import CLASSIC_EVIDENCE, classic_evidence, fuse, ratio_to_median, resolve_threshold
from hypernet_qgis.core.hypernet.training import TrainConfig
from hypernet_qgis.core.options import DEFAULT_EPOCHS


def test_ratio_to_median_is_one_at_the_median_and_nan_outside():
    rng = np.random.default_rng(0)
    score = rng.gamma(2.0, 3.0, (30, 40)).astype(np.float32)
    valid = np.ones(score.shape, bool)
    valid[:5] = False
    score[:5] = 1e9  # invalid pixels do not move the median
    out = ratio_to_median(score, valid)
    assert np.isnan(out[:5]).all()
    assert np.median(out[valid]) == pytest.approx(1.0, rel=1e-5)
    assert np.allclose(out[valid], score[valid] / np.median(score[valid]), rtol=1e-5)
    with pytest.raises(InputError):
        ratio_to_median(score, np.zeros_like(valid))


def test_fuse_is_the_mean_of_the_median_normalised_root_distances():
    rng = np.random.default_rng(1)
    valid = np.ones((20, 25), bool)
    valid[0, 0] = False
    mse = rng.gamma(2.0, 0.1, valid.shape).astype(np.float32)
    classic = {
        "irmad": rng.gamma(5.0, 1.0, valid.shape).astype(np.float32),
        "cva": rng.gamma(3.0, 2.0, valid.shape).astype(np.float32),
    }
    fused = fuse(mse, classic, valid)
    v = valid
    expected = (
        np.sqrt(mse) / np.median(np.sqrt(mse[v]))
        + classic["irmad"] / np.median(classic["irmad"][v])
        + classic["cva"] / np.median(classic["cva"][v])
    ) / 3
    assert np.isnan(fused[0, 0])
    assert np.allclose(fused[v], expected[v], rtol=1e-5)
    assert CLASSIC_EVIDENCE == ("irmad", "cva")
    # the scale of any one detector does not matter (each is divided by its median)
    scaled = fuse(mse * 100.0, {k: c * 7.0 for k, c in classic.items()}, valid)
    assert np.allclose(scaled[v], fused[v], rtol=1e-5)


def test_mixture_threshold_splits_a_long_tailed_change_class_where_otsu_cuts_the_tail():
    """IR-MAD on 204 bands: a narrow unchanged mode near 1 and changed pixels tens to hundreds of times larger.
    Otsu splits inside the changed tail; the two-Gaussian mixture splits between the classes."""
    rng = np.random.default_rng(0)
    unchanged = rng.normal(1.0, 0.08, 9000)
    changed = rng.lognormal(np.log(30.0), 1.2, 1000)
    values = np.concatenate([unchanged, changed])
    truth = np.r_[np.zeros(9000, bool), np.ones(1000, bool)]
    t_mix = mixture_threshold(values)
    assert ((values > t_mix) == truth).mean() > 0.99
    assert (values > otsu_threshold(values))[truth].mean() < 0.5
    assert "mixture" in METHODS
    assert mixture_threshold(np.full(10, 3.0)) == 3.0
    # deterministic, and the same threshold from a subsample of evenly spaced order statistics
    assert mixture_threshold(values) == t_mix


def test_auto_threshold_depends_on_the_evidence():
    assert resolve_threshold("auto", "fused") == "mrf" and resolve_threshold(None, "fused") == "mrf"
    assert resolve_threshold("auto", "hypernet") == "otsu"
    assert resolve_threshold("kmeans", "fused") == "kmeans"
    assert TrainConfig().resolved_epochs() == DEFAULT_EPOCHS["default"] == 20
    assert TrainConfig(schedule="paper").resolved_epochs() == 200


def test_detect_default_is_the_fusion_and_hypernet_alone_stays_an_option(synthetic_pair, tmp_path):
    t1, t2, gt = (str(synthetic_pair[k]) for k in ("t1", "t2", "gt"))
    cfg = dict(epochs=4, device="cpu", seed=2)
    alone = pipeline.detect_files(
        t1,
        t2,
        str(tmp_path / "a.tif"),
        intensity_out=str(tmp_path / "ai.tif"),
        evidence="hypernet",
        config=TrainConfig(**cfg),
    )
    fused = pipeline.detect_files(
        t1, t2, str(tmp_path / "f.tif"), intensity_out=str(tmp_path / "fi.tif"), config=TrainConfig(**cfg)
    )
    assert fused.extra["evidence"] == "fused" and fused.threshold_method == "mrf"
    assert alone.extra["evidence"] == "hypernet" and alone.threshold_method == "otsu"
    pair = fused.pair
    expected = fuse(alone.intensity, classic_evidence(pair), pair.valid)
    assert np.allclose(fused.intensity[pair.valid], expected[pair.valid], rtol=1e-5)
    ds = gdal.Open(str(tmp_path / "fi.tif"))  # keep the dataset alive while its band is read
    written = ds.GetRasterBand(1).ReadAsArray()
    ds = None
    assert np.allclose(written[pair.valid], fused.intensity[pair.valid], rtol=1e-6)
    # the default map is the mixture's, regularised by the 5x5 Potts MRF; it starts at the mixture's threshold
    assert np.array_equal(fused.binary, mrf_change(fused.intensity, pair.valid)[0])
    assert fused.threshold == pytest.approx(mixture_threshold(fused.intensity[pair.valid]))
    assert pipeline.evaluate_files(str(tmp_path / "f.tif"), gt)["kappa"] > 0.9
    with pytest.raises(InputError, match="evidence"):
        pipeline.detect_files(t1, t2, str(tmp_path / "x.tif"), evidence="sam", config=TrainConfig(**cfg))


def test_cli_detect_defaults_and_the_hypernet_alone_switch():
    from hypernet_qgis.cli import build_parser

    args = build_parser().parse_args(["detect", "a.tif", "b.tif", "-o", "c.tif"])
    assert args.evidence == "fused" and args.threshold == "auto"
    args = build_parser().parse_args(
        ["detect", "a.tif", "b.tif", "-o", "c.tif", "--evidence", "hypernet", "--threshold", "mixture"]
    )
    assert args.evidence == "hypernet" and args.threshold == "mixture"
    args = build_parser().parse_args(["detect", "a.tif", "b.tif", "-o", "c.tif", "--threshold", "mrf"])
    assert args.threshold == "mrf"
