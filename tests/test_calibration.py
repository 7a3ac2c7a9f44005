"""Per-date BatchNorm statistics for detection: the calibrated copy reproduces training-mode features, and the\ntiled calibration (bounded memory) gives the same statistics as the whole image."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from hypernet_qgis.core.errors import Cancelled
from hypernet_qgis.core.hypernet.calibration import (
    backbone_batchnorms,
    batchnorm_statistics_tiled,
    calibrate_batchnorm,
    features_with_own_statistics,
)
from hypernet_qgis.core.hypernet.detection import change_intensity
from hypernet_qgis.core.hypernet.network import HyperNet
from hypernet_qgis.core.hypernet.tiling import fused_features_tiled, pooled_statistics
from hypernet_qgis.core.progress import NullFeedback


def _model(bands: int = 6, width: int = 16) -> HyperNet:
    torch.manual_seed(0)
    model = HyperNet(bands, width).double()
    for m in model.modules():  # running statistics far from any image's own
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    return model.eval()


def test_calibrated_eval_equals_training_mode_batch_statistics():
    model = _model()
    x = np.random.default_rng(1).normal(2.0, 3.0, (6, 23, 29))
    t = torch.from_numpy(x).unsqueeze(0)
    with torch.no_grad():
        expected = copy.deepcopy(model).train()(t)[0]
        calibrated = calibrate_batchnorm(model, x.astype(np.float64), torch.device("cpu"))
        got = calibrated(t)[0]
        running = model(t)[0]
    assert not calibrated.training and not model.training
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)
    assert (running - expected).abs().max() > 1e-2  # the paper's eval mode is a different thing
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), _model().state_dict().values()))


def test_one_pass_features_equal_the_calibrated_copys():
    """Whole-image detection runs one training-mode pass per date: its output is the calibrated copy's eval
    features, and the model given is not changed."""
    model = _model()
    before = copy.deepcopy(model.state_dict())
    x = np.random.default_rng(3).normal(-1.0, 2.0, (6, 19, 27))
    t = torch.from_numpy(x).unsqueeze(0)
    one_pass = features_with_own_statistics(model, x, torch.device("cpu"))
    with torch.no_grad():
        two_passes = calibrate_batchnorm(model, x, torch.device("cpu"))(t)[0]
    assert one_pass.shape == (2 * model.width, 19, 27)
    torch.testing.assert_close(one_pass, two_passes, rtol=1e-10, atol=1e-10)
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    f32 = features_with_own_statistics(model.float(), x.astype(np.float32), torch.device("cpu"))
    torch.testing.assert_close(f32.double(), two_passes, rtol=1e-4, atol=1e-4)


def test_detection_uses_each_dates_own_statistics():
    model = _model().float()
    rng = np.random.default_rng(2)
    x1 = rng.normal(0, 1, (6, 20, 20)).astype(np.float32)
    x2 = (x1 * 1.0).astype(np.float32)
    valid = np.ones((20, 20), bool)
    same = change_intensity(model, x1, x2, valid, "mse", "cpu")
    assert np.allclose(same, 0)
    per_date = change_intensity(model, x1, x1 + 0.5, valid, "mse", "cpu")
    running = change_intensity(model, x1, x1 + 0.5, valid, "mse", "cpu", batchnorm="running")
    # a global offset of one date is absorbed by that date's own first BatchNorm, not by the running statistics
    assert per_date.mean() < 0.05 * running.mean()


# --- tiled calibration: the same statistics streamed over haloed tiles ------------------------------------------


def _affine_model(bands: int = 6, width: int = 16) -> HyperNet:
    """Float64, eval mode, with BatchNorm affine parameters of both signs (the channel max then matters)."""
    model = _model(bands, width)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d) and m.affine:
                m.weight.uniform_(-1.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return model


@pytest.fixture(scope="module")
def image():
    x = np.random.default_rng(5).normal(1.0, 2.0, (6, 23, 29))
    x[:, 4:9, 17:25] += 4.0  # a bright patch: channel maxima sit somewhere in particular
    return x


@pytest.mark.parametrize("tile", [5, 10, 23])  # smaller than the halo (14), dividing 23 x 29 or not
def test_tiled_calibration_equals_whole_image(image, tile):
    model = _affine_model()
    before = copy.deepcopy(model.state_dict())
    whole = calibrate_batchnorm(model, image, torch.device("cpu"))
    tiled = calibrate_batchnorm(model, image, torch.device("cpu"), tile=tile)
    assert not tiled.training and tiled is not model
    ws, ts = whole.state_dict(), tiled.state_dict()
    assert ws.keys() == ts.keys()
    for key in ws:
        np.testing.assert_allclose(ts[key].numpy(), ws[key].numpy(), rtol=1e-9, atol=1e-12, err_msg=key)
    # every backbone BatchNorm was recalibrated; the training heads' ones are kept; the input model is untouched
    for bn in backbone_batchnorms(tiled):
        assert int(bn.num_batches_tracked) == 1
    for name, value in ts.items():
        if name.startswith(("projector.", "predictor.")):
            assert torch.equal(value, before[name]), name
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_tiled_calibration_gives_training_mode_features(image):
    model = _affine_model()
    with torch.no_grad():
        expected = copy.deepcopy(model).train()(torch.from_numpy(image)[None])[0].numpy()
    calibrated = batchnorm_statistics_tiled(model, image, 12, "cpu")
    np.testing.assert_allclose(fused_features_tiled(calibrated, image, 12), expected, rtol=1e-9, atol=1e-9)


def test_tiled_calibration_can_be_cancelled(image):
    class Cancel(NullFeedback):
        def is_cancelled(self):
            return True

    with pytest.raises(Cancelled):
        batchnorm_statistics_tiled(_affine_model(), image, 8, "cpu", Cancel())


@pytest.mark.parametrize("distance", ["mse", "cosine"])
def test_tiled_detection_with_per_date_statistics_equals_whole_image(distance):
    model = _affine_model().float()
    rng = np.random.default_rng(7)
    x1 = rng.normal(0, 1, (6, 26, 21)).astype(np.float32)
    x2 = (1.3 * x1 + 0.4 + rng.normal(0, 0.2, x1.shape)).astype(np.float32)
    x2[:, 3:10, 4:12] += 2.0
    valid = np.ones((26, 21), bool)
    valid[0, :3] = False
    whole = change_intensity(model, x1, x2, valid, distance, "cpu")
    tiled = change_intensity(model, x1, x2, valid, distance, "cpu", tile=13)
    running = change_intensity(model, x1, x2, valid, distance, "cpu", tile=13, batchnorm="running")
    span = np.nanmax(whole) - np.nanmin(whole)
    assert np.array_equal(np.isnan(tiled), ~valid)
    assert np.nanmax(np.abs(tiled - whole)) <= 1e-4 * span
    assert np.nanmax(np.abs(running - whole)) > 1e-2 * span  # the tiles did use the per-date statistics


def test_pooled_statistics_are_passed_explicitly():
    """Pooled statistics given to the tiled feature pass replace its statistics passes: the right ones give the
    same features as recomputing them; wrong ones (another image's) change the result, so they are used."""
    model = _model()
    x = np.random.default_rng(5).normal(0.5, 2.0, (6, 23, 29))
    pooled = pooled_statistics(model, x, 10)
    recomputed = fused_features_tiled(model, x, 10, "cpu")
    np.testing.assert_allclose(
        fused_features_tiled(model, x, 10, "cpu", pooled=pooled), recomputed, rtol=1e-12, atol=1e-12
    )
    other = pooled_statistics(model, x + 1.0, 10)
    assert np.abs(fused_features_tiled(model, x, 10, "cpu", pooled=other) - recomputed).max() > 1e-6
    assert not hasattr(model, "pooled_statistics_of")  # no hidden cache on the model
