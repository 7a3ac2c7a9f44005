"""core/io/layout.py: the blocked copies between band-sequential and pixel-interleaved arrays are exact
transpositions, whatever the shape (partial last block, one pixel, empty, strided input, other dtypes)."""

from __future__ import annotations

import numpy as np
import pytest

from hypernet_qgis.core.io.layout import BLOCK_PIXELS, band_layout, pixel_layout


@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 7, 5), (17, 31, 224), (20, 13, 3), (0, 4, 2)])
def test_band_and_pixel_layouts_are_the_transpositions(shape):
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    got = band_layout(x)
    assert got.flags.c_contiguous and got.dtype == np.float32
    np.testing.assert_array_equal(got, x.transpose(2, 0, 1))
    np.testing.assert_array_equal(band_layout(x[:, :, 1:]), x[:, :, 1:].transpose(2, 0, 1))
    back = pixel_layout(got)
    assert back.flags.c_contiguous and back.dtype == np.float32
    np.testing.assert_array_equal(back, x)
    np.testing.assert_array_equal(pixel_layout(got[1:, :, 1:]), x[:, 1:, 1:])
    y = np.random.default_rng(1).integers(0, 9, size=shape[::-1]).astype(np.float64)
    np.testing.assert_array_equal(pixel_layout(y), y.transpose(1, 2, 0))
    assert pixel_layout(y).dtype == band_layout(y.transpose(1, 2, 0)).dtype == np.float64
    i16 = y.astype(np.int16)
    assert pixel_layout(i16).dtype == band_layout(i16).dtype == np.int16


def test_blocks_cover_every_pixel_once():
    n = 3 * BLOCK_PIXELS + 5  # three whole blocks and a partial one
    x = np.arange(n * 4, dtype=np.float32).reshape(1, n, 4)
    np.testing.assert_array_equal(band_layout(x), x.transpose(2, 0, 1))
    np.testing.assert_array_equal(pixel_layout(x.transpose(2, 0, 1).copy()), x)
