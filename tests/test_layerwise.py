"""Linear passes (core/hypernet/layerwise.py): features by tiles, each layer once per date, equal the whole-image pass."""

from __future__ import annotations

import copy
from collections import Counter

import numpy as np
import pytest
import torch
from torch import nn

from hypernet_qgis.core.errors import Cancelled
from hypernet_qgis.core.hypernet.detection import change_intensity
from hypernet_qgis.core.hypernet.layerwise import ChannelStats, Scratch, backbone_batchnorms, date_features
from hypernet_qgis.core.hypernet.network import HyperNet
from hypernet_qgis.core.hypernet.tiling import tiles
from hypernet_qgis.core.io.streaming import finish_removals
from hypernet_qgis.core.progress import NullFeedback


def _model(bands: int = 6, width: int = 16, seed: int = 0) -> HyperNet:
    """Float64, eval mode, running statistics far from any image's own, BatchNorm scales of both signs (so the
    channel attention's max comes from the min of its conv where the scale is negative)."""
    torch.manual_seed(seed)
    model = HyperNet(bands, width).double()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                if m.affine:
                    m.weight.uniform_(-1.5, 1.5)
                    m.bias.uniform_(-0.3, 0.3)
    return model.eval()


@pytest.fixture(scope="module")
def image():
    x = np.random.default_rng(5).normal(1.0, 2.0, (6, 31, 27))
    x[:, 4:9, 17:25] += 4.0  # a bright patch: channel maxima sit somewhere in particular
    return x


def _all_features(date, rows, cols, tile):
    out = np.empty((2 * date.model.width, rows, cols))
    for t in tiles(rows, cols, tile):
        out[:, t[0] : t[1], t[2] : t[3]] = date.features(t).numpy()
    return out


@pytest.mark.parametrize("in_memory", [True, False])
@pytest.mark.parametrize("tile", [4, 9, 16, 40])  # under every halo, dividing the image or not, one tile
def test_per_date_features_equal_training_mode_whole_image(image, tile, in_memory, tmp_path):
    model = _model()
    with torch.no_grad():
        expected = copy.deepcopy(model).train()(torch.from_numpy(image)[None])[0].numpy()
    rows, cols = image.shape[1:]
    with Scratch(rows, cols, np.float64, in_memory, str(tmp_path)) as scratch:
        date = date_features(model, image, tile, "cpu", scratch, "a_", per_date=True)
        np.testing.assert_allclose(_all_features(date, rows, cols, tile), expected, rtol=1e-9, atol=1e-9)
        assert set(scratch.maps) == {"a_fs", "a_fq"}  # only the fuse maps are in use
        if in_memory:  # the arrays kept for reuse are freed with the date's passes (files are kept)
            assert not scratch._kept
        if not in_memory:  # a dropped map's file was overwritten by a later map: no more files than the most
            # maps in use at once (q1 and the second spatial pass's inputs and outputs)
            assert len(list(tmp_path.glob("hypernet-layers-*/*.bin"))) <= 5
    finish_removals()  # (deleted in the background; a pair's close waits the same way)
    assert not list(tmp_path.iterdir())  # scratch files removed


@pytest.mark.parametrize("tile", [7, 16])
def test_running_statistics_features_equal_eval_mode_whole_image(image, tile):
    model = _model(seed=1)
    with torch.no_grad():
        expected = model(torch.from_numpy(image)[None])[0].numpy()
    rows, cols = image.shape[1:]
    with Scratch(rows, cols, np.float64, True) as scratch:
        date = date_features(model, image, tile, "cpu", scratch, per_date=False)
        np.testing.assert_allclose(_all_features(date, rows, cols, tile), expected, rtol=1e-9, atol=1e-9)
        # the statistics found on the way are the model's running ones and the whole image's pooled ones
        assert all(date.norms[bn][0] is bn.running_mean for bn in backbone_batchnorms(model))
        assert set(date.pooled) == set(model.attention_modules())


def test_identity_shortcut_and_residual_first_blocks(image):
    """With as many bands as the branch width, the first RSAB's shortcut is the identity and the first RCAB is
    residual: those paths too equal the whole image."""
    model = _model(bands=16, width=16, seed=2)
    x = np.random.default_rng(2).normal(size=(16, 20, 22))
    assert isinstance(model.rsab1.shortcut, nn.Identity) and model.rcab1.residual
    with torch.no_grad():
        expected = copy.deepcopy(model).train()(torch.from_numpy(x)[None])[0].numpy()
    with Scratch(20, 22, np.float64, True) as scratch:
        date = date_features(model, x, 8, "cpu", scratch)
        np.testing.assert_allclose(_all_features(date, 20, 22, 8), expected, rtol=1e-9, atol=1e-9)


def test_each_conv_runs_once_per_date_on_each_tile():
    """The linear passes: every backbone conv is called once per tile and date (the channel attention's MLP once
    per date), on a window no larger than the tile plus its halo; the old calibration ran layer k k times."""
    torch.manual_seed(0)
    model = HyperNet(6, 16).eval()
    rng = np.random.default_rng(0)
    rows, cols, tile = 45, 38, 16
    x1 = rng.normal(size=(6, rows, cols)).astype(np.float32)
    x2 = (x1 + rng.normal(scale=0.5, size=x1.shape)).astype(np.float32)
    calls: Counter = Counter()
    pixels: Counter = Counter()

    def count(module, args, output):
        calls[module] += 1
        pixels[module] += output.shape[-2] * output.shape[-1]

    convs = [
        m
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and not name.startswith(("projector", "predictor"))
    ]
    handles = [m.register_forward_hook(count) for m in convs]
    try:
        change_intensity(model, x1, x2, np.ones((rows, cols), bool), "mse", "cpu", tile=tile)
    finally:
        for h in handles:
            h.remove()
    n = len(tiles(rows, cols, tile))
    mlp = {id(m) for ca in model.attention_modules().values() for m in (ca.fc1, ca.fc2)}
    for m in convs:
        if id(m) in mlp:
            assert calls[m] == 2 * 2, m  # avg and max, once per date
        else:
            assert calls[m] == 2 * n, m  # once per tile and date
            assert rows * cols * 2 <= pixels[m] <= 2 * (rows * cols + n * (4 * 5 * tile + 4 * 25)), m


def test_tiled_detection_equals_whole_image_on_disk_scratch(tmp_path):
    """A budget too small for in-memory scratch puts the maps on disk (in ``scratch_dir`` while detection runs,
    deleted after); the intensity is the same."""
    model = _model().float()
    rng = np.random.default_rng(7)
    x1 = rng.normal(0, 1, (6, 60, 50)).astype(np.float32)
    x2 = (1.3 * x1 + 0.4 + rng.normal(0, 0.2, x1.shape)).astype(np.float32)
    x2[:, 3:10, 4:12] += 2.0
    valid = np.ones((60, 50), bool)
    whole = change_intensity(model, x1, x2, valid, "cosine", "cpu")
    messages, files = [], []

    class Record(NullFeedback):
        def info(self, text):
            messages.append(text)

        def set_progress(self, fraction):
            files.append(len(list(tmp_path.glob("hypernet-layers-*/*.bin"))))

    tiled = change_intensity(
        model, x1, x2, valid, "cosine", "cpu", memory_budget_mb=0.5, feedback=Record(), scratch_dir=str(tmp_path)
    )
    assert any("disk scratch" in m for m in messages), messages
    finish_removals()
    assert max(files) >= 4 and not list(tmp_path.iterdir())
    assert np.nanmax(np.abs(tiled - whole)) <= 1e-4 * (np.nanmax(whole) - np.nanmin(whole))


@pytest.mark.parametrize(
    "way",
    ["numpy", "numpy in chunks of 7 pixels", "numpy in chunks of 12 pixels, lanes of 4", "torch (the CUDA path)"],
)
def test_channel_stats_merge_equals_whole(way, monkeypatch):
    """Tiles of a channels-last map, one of a single pixel and an empty one: the whole map's moments (chunks
    reduced across lanes and the pixels left over, see ``_chunk_moments``)."""
    from hypernet_qgis.core.hypernet import layerwise

    if "chunks of 7" in way:
        monkeypatch.setattr(layerwise, "STATS_CHUNK_PIXELS", 7)
    if "lanes" in way:
        monkeypatch.setattr(layerwise, "STATS_CHUNK_PIXELS", 12)
        monkeypatch.setattr(layerwise, "STATS_LANES", 4)
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.normal(3.0, 2.0, (1, 4, 30, 20))).contiguous(memory_format=torch.channels_last)
    stats = ChannelStats()
    add = stats.add_by_torch if way.startswith("torch") else stats.add
    for r0 in range(0, 29, 7):
        add(a[:, :, r0 : min(29, r0 + 7)])
    add(a[:, :, 29:, :19])
    add(a[:, :, 29:, 19:])  # one pixel
    add(a[:, :, :0])
    mean, var = stats.norm(torch.float64)
    torch.testing.assert_close(mean, a.mean(dim=(0, 2, 3)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(var, a.var(dim=(0, 2, 3), unbiased=False), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(stats.max, a.amax(dim=(0, 2, 3)))
    torch.testing.assert_close(stats.min, a.amin(dim=(0, 2, 3)))


def test_cancelled(image):
    class Cancel(NullFeedback):
        def is_cancelled(self):
            return True

    with Scratch(31, 27, np.float64, True) as scratch, pytest.raises(Cancelled):
        date_features(_model(), image, 8, "cpu", scratch, feedback=Cancel())


@pytest.mark.parametrize("in_memory", [True, False])
def test_scratch_reuses_a_dropped_map_of_the_same_size(in_memory, tmp_path):
    """A dropped map serves the next map of as many channels (same file or array, overwritten); a map of another
    size frees the kept ones first; close deletes every file. Windows come back as written, pixel-interleaved."""
    a = np.arange(2 * 5 * 7 * 3, dtype=np.float32).reshape(1, 3, 10, 7)
    with Scratch(10, 7, np.float32, in_memory, str(tmp_path)) as scratch:
        scratch.new("a", 3)
        scratch.write("a", (0, 10, 0, 7), torch.from_numpy(a))
        np.testing.assert_array_equal(scratch.read("a", (2, 6, 1, 5)), a[0, :, 2:6, 1:5].transpose(1, 2, 0))
        first = scratch.maps["a"]
        scratch.drop("a")
        scratch.new("b", 3)
        assert scratch.maps["b"] is first
        scratch.write("b", (0, 10, 0, 7), torch.from_numpy(-a).contiguous(memory_format=torch.channels_last))
        np.testing.assert_array_equal(scratch.read("b", (0, 10, 0, 7)), -a[0].transpose(1, 2, 0))
        scratch.drop("b")
        scratch.new("c", 4)
        assert scratch.maps["c"] is not first
        if not in_memory:
            assert len(list(tmp_path.glob("hypernet-layers-*/*.bin"))) == 1  # b's file went with it
    finish_removals()
    assert not list(tmp_path.iterdir())


def test_tiled_passes_over_a_window_reader_equal_the_array(tmp_path):
    """A scratch-file date (streaming.WindowReader, read pixel-interleaved) and a read-only array give the features
    of the same array."""
    from hypernet_qgis.core.io.streaming import WindowReader

    model = _model().float()
    x = np.random.default_rng(3).normal(size=(6, 23, 19)).astype(np.float32)
    path = tmp_path / "x.f32"
    path.write_bytes(np.ascontiguousarray(x.transpose(1, 2, 0)).tobytes())
    reader = WindowReader(str(path), x.shape)
    read_only = x.copy()
    read_only.setflags(write=False)
    out = []
    for source in (x, reader, read_only):
        with Scratch(23, 19, np.float32, True) as scratch:
            date = date_features(model, source, 8, "cpu", scratch)
            out.append(np.stack([_all_features(date, 23, 19, 8)]))
    reader.close()
    np.testing.assert_array_equal(out[0], out[1])
    np.testing.assert_array_equal(out[0], out[2])


def test_windows_become_channels_last_tensors_without_a_copy():
    """A pixel-interleaved window is a channels-last tensor over the same memory, with the strides of a
    channels-last batch: oneDNN then keeps the format, so a conv's output goes back to scratch as a view (a batch
    stride torch did not expect made the convs channels-first again: slower, and a copy a row on every write)."""
    from hypernet_qgis.core.hypernet.layerwise import as_pixels, as_tensor

    pixels = np.random.default_rng(0).normal(size=(9, 11, 6)).astype(np.float32)
    t = as_tensor(pixels)
    assert t.shape == (1, 6, 9, 11) and t.is_contiguous(memory_format=torch.channels_last)
    assert t.data_ptr() == pixels.ctypes.data and t.stride() == (9 * 11 * 6, 1, 11 * 6, 6)
    out = nn.functional.conv2d(t[..., 1:8, 2:10], torch.randn(4, 6, 3, 3), padding=1)
    assert out.is_contiguous(memory_format=torch.channels_last)
    back = as_pixels(out)
    assert back.shape == (7, 8, 4) and back.flags.c_contiguous  # a view: rows go to pwrite as they are
    np.testing.assert_array_equal(as_pixels(t), pixels)
