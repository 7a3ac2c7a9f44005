"""Tiled inference equals the whole-image forward pass (eval mode), for any tile size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hypernet_qgis.core.errors import Cancelled, InputError
from hypernet_qgis.core.hypernet.network import HyperNet, Pooling
from hypernet_qgis.core.hypernet.tiling import (
    fused_features_tiled,
    iter_fused_features,
    pooled_statistics,
    tile_for_budget,
    tiles,
)
from hypernet_qgis.core.progress import NullFeedback


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = HyperNet(8, 16).double()
    with torch.no_grad():  # non-trivial BN running statistics and affine parameters
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                if m.affine:
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.3, 0.3)
    model.eval()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 40, 37))
    x[:, 5:12, 20:30] += 3.0  # a "changed" patch so that max pooling is not trivially anywhere
    with torch.no_grad():
        whole = model(torch.from_numpy(x)[None])[0].numpy()
    return model, x, whole


def test_halo_of_published_network():
    model = HyperNet(8, 16)
    assert model.halo() == 14  # 3 x (3x3 conv 1 + 7x7 spatial attention 3) + 5x5 pool 2
    assert [model.halo(k) for k in ("rsab1", "rsab2", "rsab3")] == [1, 5, 9]
    assert [model.halo(k) for k in ("rcab1", "rcab2", "rcab3")] == [0, 0, 0]


@pytest.mark.parametrize("tile", [40, 20, 16, 13, 9, 5, 64])
def test_tiled_equals_whole_image(setup, tile):
    model, x, whole = setup
    got = fused_features_tiled(model, x, tile)
    assert got.shape == whole.shape == (32, 40, 37)
    np.testing.assert_allclose(got, whole, rtol=1e-9, atol=1e-12)


def test_pooled_statistics_equal_whole_image(setup):
    model, x, _ = setup
    pooling = Pooling(record=set(model.attention_modules()), stop_when_recorded=False)
    with torch.no_grad():
        model(torch.from_numpy(x)[None], pooling)
    stats = pooled_statistics(model, x, tile=11)
    assert set(stats) == set(pooling.recorded)
    for key, pre in pooling.recorded.items():
        np.testing.assert_allclose(stats[key][0].numpy(), pre.mean(dim=(2, 3), keepdim=True).numpy(), rtol=1e-12)
        np.testing.assert_allclose(stats[key][1].numpy(), pre.amax(dim=(2, 3), keepdim=True).numpy(), rtol=1e-12)


def test_without_global_statistics_tiles_would_differ(setup):
    """Naive tiling (each tile pooling its own window) is wrong: the statistics passes are needed."""
    model, x, whole = setup
    t = (0, 20, 0, 20)
    with torch.no_grad():
        naive = model(torch.from_numpy(x[:, 0:34, 0:34])[None])[0, :, 0:20, 0:20].numpy()
    assert np.abs(naive - whole[:, 0:20, 0:20]).max() > 1e-3
    assert t == tiles(40, 37, 20)[0]


def test_streaming_callback_and_generator(setup):
    model, x, whole = setup
    got = np.full_like(whole, np.nan)
    seen = []

    def on_tile(r0, c0, f):
        seen.append((r0, c0, f.shape))
        got[:, r0 : r0 + f.shape[1], c0 : c0 + f.shape[2]] = f

    assert fused_features_tiled(model, x, 16, on_tile=on_tile) is None
    assert seen == [
        (0, 0, (32, 16, 16)),
        (0, 16, (32, 16, 16)),
        (0, 32, (32, 16, 5)),
        (16, 0, (32, 16, 16)),
        (16, 16, (32, 16, 16)),
        (16, 32, (32, 16, 5)),
        (32, 0, (32, 8, 16)),
        (32, 16, (32, 8, 16)),
        (32, 32, (32, 8, 5)),
    ]
    np.testing.assert_allclose(got, whole, rtol=1e-9, atol=1e-12)
    first = next(iter_fused_features(model, x, 16))
    assert first[:2] == (0, 0)


def test_float32_model_and_input():
    torch.manual_seed(1)
    model = HyperNet(5, 16).eval()
    x = np.random.default_rng(1).normal(size=(5, 30, 26)).astype(np.float32)
    with torch.no_grad():
        whole = model(torch.from_numpy(x)[None])[0].numpy()
    got = fused_features_tiled(model, x, 12)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, whole, rtol=1e-4, atol=1e-5)


def test_input_checks(setup):
    model, x, _ = setup
    with pytest.raises(InputError, match="trained on 8 bands but the image has 3"):
        fused_features_tiled(model, x[:3], 16)
    with pytest.raises(InputError, match="Tile size"):
        fused_features_tiled(model, x, 0)
    with pytest.raises(InputError, match="shape"):
        fused_features_tiled(model, x[0], 16)


def test_cancel():
    class Cancel(NullFeedback):
        def is_cancelled(self):
            return True

    model = HyperNet(4, 16).eval()
    with pytest.raises(Cancelled):
        fused_features_tiled(model, np.zeros((4, 10, 10), np.float32), 5, feedback=Cancel())


def test_progress_reaches_one():
    class Record(NullFeedback):
        def __init__(self):
            self.values = []

        def set_progress(self, fraction):
            self.values.append(fraction)

    fb = Record()
    fused_features_tiled(HyperNet(4, 16).eval(), np.zeros((4, 10, 10), np.float32), 5, feedback=fb)
    assert fb.values == sorted(fb.values) and fb.values[-1] == pytest.approx(1.0)


def test_tile_for_budget():
    small = tile_for_budget(204, 102, 256)
    large = tile_for_budget(204, 102, 4096)
    assert 32 <= small < large <= 4096
    # the haloed window of the chosen tile fits the budget by the documented estimate
    per_pixel = 4 * (204 + 14 * 102)
    assert (large + 28) ** 2 * per_pixel <= 4096 * 1024 * 1024
    assert tile_for_budget(6, 16, 1) == 32  # clamped to the minimum
