"""The engine's file-to-file jobs: training, detection, outputs, determinism, cancel, bad input."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from osgeo import gdal

from hypernet_qgis.core import pipeline
from hypernet_qgis.core.errors import Cancelled, InputError
from hypernet_qgis.core.hypernet.model_file import load_model
from hypernet_qgis.core.hypernet.training import TrainConfig, select_training_pixels, train_hypernet
from hypernet_qgis.core.progress import NullFeedback

FAST = dict(epochs=3, device="cpu")


def digest(*paths: Path) -> list[str]:
    return [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths]


def test_detect_writes_georeferenced_outputs_and_finds_the_change(synthetic_pair, tmp_path):
    before = digest(synthetic_pair["t1"], synthetic_pair["t2"])
    change, inten = tmp_path / "change.tif", tmp_path / "intensity.tif"
    res = pipeline.detect_files(
        str(synthetic_pair["t1"]),
        str(synthetic_pair["t2"]),
        str(change),
        intensity_out=str(inten),
        config=TrainConfig(epochs=15, device="cpu"),
    )
    assert digest(synthetic_pair["t1"], synthetic_pair["t2"]) == before  # inputs untouched
    src, out, out_i = (gdal.Open(str(p)) for p in (synthetic_pair["t1"], change, inten))
    assert out.GetGeoTransform() == src.GetGeoTransform() and out_i.GetGeoTransform() == src.GetGeoTransform()
    assert out.GetProjection() == src.GetProjection()
    band = out.GetRasterBand(1)
    assert band.DataType == gdal.GDT_Byte and band.GetNoDataValue() == 255
    assert out_i.GetRasterBand(1).DataType == gdal.GDT_Float32
    binary = band.ReadAsArray()
    assert set(np.unique(binary)) <= {0, 1, 255}
    assert (binary[:3, :3] == 255).all() and (binary[3:, 3:] != 255).all()  # T1's nodata corner stays nodata
    assert res.changed_pixels == int((binary == 1).sum()) and res.valid_pixels == int((binary != 255).sum())
    metrics = pipeline.evaluate_files(str(change), str(synthetic_pair["gt"]))
    assert metrics["kappa"] > 0.7, metrics
    assert pipeline.evaluate_files(str(inten), str(synthetic_pair["gt"]))["AUC"] > 0.95
    src = out = out_i = None


def test_training_is_deterministic_for_a_seed_on_cpu(synthetic_pair, tmp_path):
    histories, weights = [], []
    for i, seed in enumerate((3, 3, 4)):
        res = pipeline.train_files(
            str(synthetic_pair["t1"]),
            str(synthetic_pair["t2"]),
            str(tmp_path / f"m{i}.pt"),
            config=TrainConfig(seed=seed, **FAST),
        )
        histories.append(res.loss_history)
        weights.append(torch.cat([p.detach().flatten() for p in res.model.parameters()]))
    assert histories[0] == histories[1] and torch.equal(weights[0], weights[1])
    assert histories[0] != histories[2]


def test_model_file_round_trip_gives_the_same_intensity(synthetic_pair, tmp_path):
    t1, t2 = str(synthetic_pair["t1"]), str(synthetic_pair["t2"])
    model = tmp_path / "pair.hypernet"
    res = pipeline.train_files(t1, t2, str(model), config=TrainConfig(**FAST))
    net, meta = load_model(model)
    assert meta["band_count"] == 8 and meta["loss_history"] == res.loss_history
    assert meta["training"]["seed"] == 0 and meta["width"] == 16
    direct = pipeline.detect_files(t1, t2, str(tmp_path / "a.tif"), model=str(model), evidence="hypernet")
    pair = pipeline.load_pair(t1, t2)
    from hypernet_qgis.core.hypernet.detection import change_intensity

    again = change_intensity(res.model, pair.x1s, pair.x2s, pair.valid, "mse", "cpu")
    np.testing.assert_allclose(direct.intensity, again, rtol=1e-6, equal_nan=True)


class CancelAfter(NullFeedback):
    def __init__(self, calls: int) -> None:
        self.calls = calls

    def set_progress(self, fraction: float) -> None:
        self.calls -= 1

    def is_cancelled(self) -> bool:
        return self.calls <= 0


def test_cancel_stops_within_an_epoch_and_writes_nothing(synthetic_pair, tmp_path):
    with pytest.raises(Cancelled):
        pipeline.detect_files(
            str(synthetic_pair["t1"]),
            str(synthetic_pair["t2"]),
            str(tmp_path / "c.tif"),
            intensity_out=str(tmp_path / "i.tif"),
            config=TrainConfig(epochs=50, device="cpu"),
            feedback=CancelAfter(2),
        )
    with pytest.raises(Cancelled):
        pipeline.train_files(
            str(synthetic_pair["t1"]),
            str(synthetic_pair["t2"]),
            str(tmp_path / "m.pt"),
            config=TrainConfig(epochs=50, device="cpu"),
            feedback=CancelAfter(2),
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gt.tif", "t1.tif", "t2.tif"]


def test_user_unchanged_mask_is_mask_g(synthetic_pair, tmp_path):
    pair = pipeline.load_pair(str(synthetic_pair["t1"]), str(synthetic_pair["t2"]))
    user = np.zeros(pair.valid.shape, bool)
    user[20:, 20:] = True
    res = train_hypernet(pair.x1s, pair.x2s, pair.valid, TrainConfig(**FAST), training_mask=user)
    assert np.array_equal(res.training_mask, user & pair.valid)
    auto = select_training_pixels(pair.x1s, pair.x2s, pair.valid, 0.3)
    assert abs(auto.sum() - 0.3 * pair.valid.sum()) <= 2
    gt = gdal.Open(str(synthetic_pair["gt"])).ReadAsArray().astype(bool)
    assert not (auto & gt).any()  # the automatic pre-detection keeps the implanted change out of mask g


def test_bad_inputs_get_clear_messages(synthetic_pair, tmp_path):
    t1, t2 = str(synthetic_pair["t1"]), str(synthetic_pair["t2"])
    with pytest.raises(InputError, match=r"t1\.tif would overwrite the input .*t1\.tif"):
        pipeline.detect_files(t1, t2, t1, config=TrainConfig(**FAST))
    small = tmp_path / "small.tif"
    gdal.Translate(str(small), t2, srcWin=[0, 0, 20, 20])
    with pytest.raises(InputError, match=r"T1 \(t1\.tif\) is 36 x 40 pixels but T2 \(small\.tif\) is 20 x 20"):
        pipeline.detect_files(t1, str(small), str(tmp_path / "c.tif"), config=TrainConfig(**FAST), align=False)
    one, other = tmp_path / "one.tif", tmp_path / "other.tif"
    gdal.Translate(str(one), t1, bandList=[1])
    gdal.Translate(str(other), t2, bandList=[1])
    with pytest.raises(InputError, match="one.tif has 1 band; HyperNet needs at least 2"):
        pipeline.detect_files(str(one), str(other), str(tmp_path / "c.tif"), config=TrainConfig(**FAST))
    with pytest.raises(InputError, match="T1 and T2 are the same image"):  # trained for nothing, found nothing
        pipeline.detect_files(t1, t1, str(tmp_path / "c.tif"), config=TrainConfig(**FAST))
    five = [tmp_path / "f1.tif", tmp_path / "f2.tif"]
    for src, dst in zip((t1, t2), five):
        gdal.Translate(str(dst), src, bandList=[1, 2, 3, 4, 5])
    model = tmp_path / "m.pt"
    pipeline.train_files(*(str(p) for p in five), str(model), config=TrainConfig(**FAST))
    with pytest.raises(InputError, match="trained on 5 bands but the images have 8"):
        pipeline.detect_files(t1, t2, str(tmp_path / "c.tif"), model=str(model))
    with pytest.raises(InputError, match="fixed needs a THRESHOLD"):
        pipeline.detect_files(t1, t2, str(tmp_path / "c.tif"), threshold="fixed", config=TrainConfig(**FAST))
    with pytest.raises(InputError, match="EPOCHS"):
        pipeline.detect_files(t1, t2, str(tmp_path / "c.tif"), config=TrainConfig(epochs=0))
    assert not (tmp_path / "c.tif").exists()


def test_constant_and_all_nodata_inputs_are_refused(tmp_path):
    from osgeo import osr

    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)

    def write(name: str, arr: np.ndarray, nodata: float | None = None) -> str:
        ds = gdal.GetDriverByName("GTiff").Create(
            str(tmp_path / name), arr.shape[2], arr.shape[1], arr.shape[0], gdal.GDT_Float32
        )
        ds.SetGeoTransform((0, 1, 0, 0, 0, -1))
        ds.SetProjection(srs.ExportToWkt())
        for b in range(arr.shape[0]):
            if nodata is not None:
                ds.GetRasterBand(b + 1).SetNoDataValue(nodata)
            ds.GetRasterBand(b + 1).WriteArray(arr[b])
        ds = None
        return str(tmp_path / name)

    const = write("const.tif", np.full((4, 20, 20), 7.0, np.float32))
    const2 = write("const2.tif", np.full((4, 20, 20), 3.0, np.float32))
    with pytest.raises(InputError, match="constant"):
        pipeline.detect_files(const, const2, str(tmp_path / "c.tif"), config=TrainConfig(**FAST))
    empty = write("nodata.tif", np.full((4, 20, 20), -1.0, np.float32), nodata=-1.0)
    empty2 = write("nodata2.tif", np.full((4, 20, 20), -1.0, np.float32), nodata=-1.0)
    with pytest.raises(InputError, match="nodata|valid"):
        pipeline.detect_files(empty, empty2, str(tmp_path / "c.tif"), config=TrainConfig(**FAST))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_forcing_cuda_without_a_gpu_is_a_clear_error(synthetic_pair, tmp_path):
    with pytest.raises(InputError, match="no CUDA GPU"):
        pipeline.train_files(
            str(synthetic_pair["t1"]),
            str(synthetic_pair["t2"]),
            str(tmp_path / "m.pt"),
            config=TrainConfig(epochs=1, device="cuda"),
        )


def test_otsu_on_the_square_root_keeps_long_tailed_change():
    """Squared feature distances of changed pixels are long-tailed; Otsu on the raw values cuts far out in the
    tail, Otsu on their square root separates the two groups (FINDINGS.md 3)."""
    from hypernet_qgis.core.classic.thresholds import otsu_threshold

    rng = np.random.default_rng(0)
    unchanged = rng.gamma(2.0, 0.05, 9000)
    changed = rng.lognormal(0.0, 0.8, 1000)
    intensity = np.concatenate([unchanged, changed]).astype(np.float32).reshape(100, 100)
    truth = np.r_[np.zeros(9000, bool), np.ones(1000, bool)].reshape(100, 100)
    valid = np.ones_like(truth)
    binary, thr = pipeline.threshold_feature_distance(intensity, valid, "otsu")
    assert np.array_equal(binary == 1, intensity > thr)  # the reported threshold is what was applied
    assert thr == pytest.approx(otsu_threshold(np.sqrt(intensity.ravel())) ** 2, rel=1e-6)
    recall, false_alarms = (binary == 1)[truth].mean(), (binary == 1)[~truth].mean()
    assert recall > 0.7 and false_alarms < 1e-3
    raw = intensity > otsu_threshold(intensity.ravel())
    assert raw[truth].mean() < 0.4  # what the paper's Otsu on the raw MSE would have found
    fixed, thr_fixed = pipeline.threshold_feature_distance(intensity, valid, "fixed", 0.5)
    assert thr_fixed == 0.5 and np.array_equal(fixed == 1, intensity > 0.5)


def test_a_pair_larger_than_the_budget_is_detected_by_windows_with_the_same_result(synthetic_pair, tmp_path):
    t1, t2 = str(synthetic_pair["t1"]), str(synthetic_pair["t2"])
    model = tmp_path / "m.hypernet"
    pipeline.train_files(t1, t2, str(model), config=TrainConfig(**FAST))
    # HyperNet's own intensity, by windows and whole (the fused default: test_one_flow)
    whole = pipeline.detect_files(t1, t2, str(tmp_path / "a.tif"), model=str(model), evidence="hypernet")
    small = TrainConfig(device="cpu", memory_budget_mb=0.1)  # the 40x36x8 pair needs ~0.2 MB in memory
    streamed = pipeline.detect_files(
        t1, t2, str(tmp_path / "b.tif"), model=str(model), config=small, evidence="hypernet"
    )
    assert streamed.extra.get("streamed") and not whole.extra.get("streamed")
    span = np.nanmax(whole.intensity) - np.nanmin(whole.intensity)
    assert np.nanmax(np.abs(streamed.intensity - whole.intensity)) <= 1e-4 * span
    assert np.array_equal(np.isnan(streamed.intensity), np.isnan(whole.intensity))
    assert abs(streamed.changed_pixels - whole.changed_pixels) <= 2
    a = gdal.Open(str(tmp_path / "a.tif")).ReadAsArray()
    b = gdal.Open(str(tmp_path / "b.tif")).ReadAsArray()
    assert (a != b).sum() <= 2 and ((a == 255) == (b == 255)).all()


def test_the_mrf_map_can_be_asked_for_on_the_windowed_route(synthetic_pair, tmp_path):
    """HyperNet alone by windows (auto = Otsu on the root): --threshold mrf applies on the root of its intensity,
    with the same map as the whole-image route."""
    from hypernet_qgis.core.classic.thresholds import mrf_change

    t1, t2 = str(synthetic_pair["t1"]), str(synthetic_pair["t2"])
    model = tmp_path / "m.hypernet"
    pipeline.train_files(t1, t2, str(model), config=TrainConfig(**FAST))
    small = TrainConfig(device="cpu", memory_budget_mb=0.1)
    streamed = pipeline.detect_files(
        t1, t2, str(tmp_path / "b.tif"), model=str(model), config=small, threshold="mrf", evidence="hypernet"
    )
    assert streamed.extra.get("streamed") and streamed.extra["evidence"] == "hypernet"
    assert streamed.threshold_method == "mrf"
    expected, root = mrf_change(np.sqrt(np.maximum(streamed.intensity, 0.0)), streamed.pair.valid)
    assert np.array_equal(streamed.binary, expected) and streamed.threshold == pytest.approx(root**2)
    whole = pipeline.detect_files(
        t1, t2, str(tmp_path / "a.tif"), model=str(model), evidence="hypernet", threshold="mrf"
    )
    assert (whole.binary != streamed.binary).sum() <= 2
