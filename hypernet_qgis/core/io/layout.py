"""Band-sequential (bands, rows, cols) <-> pixel-interleaved (rows, cols, bands) copies, by cache-sized blocks.

Training and the in-memory route compute on band-sequential arrays (torch's channels-first); scenes larger than
memory are kept pixel-interleaved in scratch files (a window is then one contiguous run a row). These copies go
between the two: the input windows into the scratch files, a training crop out of them. (The tiled detection
passes take pixel-interleaved windows of scratch files as channels-last tensors, ``hypernet/layerwise.py``: no
copy; an in-memory array's window is one copy to channels-last there, by torch.) One
strided copy of a whole window thrashes the cache when the bands are many: 2.4 s for 1000x1000x224 float32 on
one core, 0.5 s by blocks of BLOCK_PIXELS pixels.
"""

from __future__ import annotations

import numpy as np

#: Pixels per block of the copies (256 pixels x 224 bands x 4 bytes = 224 KB: within a core's L2 cache).
BLOCK_PIXELS = 256


def band_layout(pixels: np.ndarray) -> np.ndarray:
    """(rows, cols, bands) -> C-contiguous (bands, rows, cols)."""
    rows, cols, bands = pixels.shape
    flat = pixels.reshape(rows * cols, bands)
    out = np.empty((bands, rows * cols), dtype=pixels.dtype)
    for i in range(0, rows * cols, BLOCK_PIXELS):
        out[:, i : i + BLOCK_PIXELS] = flat[i : i + BLOCK_PIXELS].T
    return out.reshape(bands, rows, cols)


def pixel_layout(bands_first: np.ndarray) -> np.ndarray:
    """(bands, rows, cols) -> C-contiguous (rows, cols, bands)."""
    bands, rows, cols = bands_first.shape
    flat = bands_first.reshape(bands, rows * cols)
    out = np.empty((rows * cols, bands), dtype=bands_first.dtype)
    for i in range(0, rows * cols, BLOCK_PIXELS):
        out[i : i + BLOCK_PIXELS] = flat[:, i : i + BLOCK_PIXELS].T
    return out.reshape(rows, cols, bands)
