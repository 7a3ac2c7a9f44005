"""Quicklook pictures of rasters for the HTML reports.

Band choice (true colour from wavelengths when known), 2-98 percentile stretch, downsampling of big scenes to at
most ``MAX_SIDE`` pixels a side, palettes for class maps, and a small PNG encoder (numpy + zlib) so a quicklook
needs neither Pillow nor matplotlib (matplotlib is only asked for a colour map, lazily).
"""

from __future__ import annotations

import base64
import math
import struct
import zlib
from collections.abc import Sequence

import numpy as np

from ..errors import InputError

MAX_SIDE = 800
"""Longest side of a quicklook, in pixels; bigger rasters are reduced by a whole factor."""

TRUE_COLOUR_NM = (640.0, 550.0, 470.0)
"""Red, green and blue targets for a true-colour composite."""

TRUE_COLOUR_TOLERANCE_NM = 50.0
"""A band farther than this from a target does not count as that colour."""

STRETCH_PERCENT = (2.0, 98.0)

NO_DATA_RGB = (0, 0, 0)
"""Colour of invalid (NaN / nodata) pixels in image and intensity quicklooks."""

# Palettes: code -> RGB. Shared by the report legends so picture and legend cannot disagree.
BINARY_PALETTE: dict[int, tuple[int, int, int]] = {
    0: (217, 217, 217),  # unchanged: light grey
    1: (213, 94, 0),  # changed: vermillion
    255: NO_DATA_RGB,  # no data
}
BINARY_PRIORITY = (1, 0, 255)
"""When a block of pixels becomes one quicklook pixel, the first code present wins (small changes stay visible)."""

ERROR_CORRECT, ERROR_FALSE_ALARM, ERROR_MISS, ERROR_UNSCORED = 0, 1, 2, 255
ERROR_TRUE_CHANGE = 3
"""Display-only code: a correct pixel that is changed in the reference (error maps themselves use 0/1/2/255)."""
ERROR_PALETTE: dict[int, tuple[int, int, int]] = {
    ERROR_CORRECT: (217, 217, 217),  # correct, unchanged: light grey
    ERROR_TRUE_CHANGE: (77, 77, 77),  # correct, changed: dark grey
    ERROR_FALSE_ALARM: (213, 94, 0),  # false alarm: vermillion
    ERROR_MISS: (0, 114, 178),  # miss: blue
    ERROR_UNSCORED: (255, 255, 255),  # not scored (unlabelled or no prediction): white
}
ERROR_PRIORITY = (ERROR_FALSE_ALARM, ERROR_MISS, ERROR_TRUE_CHANGE, ERROR_CORRECT, ERROR_UNSCORED)

REFERENCE_PALETTE: dict[int, tuple[int, int, int]] = {
    0: (217, 217, 217),  # unchanged
    1: (213, 94, 0),  # changed
    255: (255, 255, 255),  # unlabelled
}
REFERENCE_PRIORITY = (1, 0, 255)

MASK_PALETTE: dict[int, tuple[int, int, int]] = {
    0: (217, 217, 217),  # not used for training
    1: (0, 158, 115),  # training pixel (mask g): green
    255: NO_DATA_RGB,  # invalid
}


def hex_colour(rgb: Sequence[int]) -> str:
    """``#rrggbb`` for an RGB triple (for HTML legends)."""
    return "#{:02x}{:02x}{:02x}".format(*(int(v) for v in rgb[:3]))


# --------------------------------------------------------------------------------------------- band choice


def _as_nm(wavelengths: Sequence[float] | None, bands: int) -> np.ndarray | None:
    """Wavelengths as a float array in nm, or None when unknown/unusable (wrong count, not finite)."""
    if wavelengths is None:
        return None
    try:
        w = np.asarray([float(v) for v in wavelengths], dtype=float)
    except (TypeError, ValueError):
        return None
    if w.size != bands or not np.all(np.isfinite(w)) or np.any(w <= 0):
        return None
    if w.max() < 30.0:  # micrometres slipped through: 0.4-2.5 um
        w = w * 1000.0
    return w


def choose_rgb_bands(bands: int, wavelengths_nm: Sequence[float] | None = None) -> tuple[tuple[int, int, int], str]:
    """Zero-based (red, green, blue) band indices and a description of the choice.

    True colour (bands nearest 640/550/470 nm, each within 50 nm) when the wavelengths allow it; otherwise three
    bands spread over the cube (5/6, 1/2 and 1/6 of the band count, red being the longest); one band for a grey
    picture when there are fewer than three.
    """
    if bands < 1:
        raise InputError("The image has no bands; give a raster with at least one band.")
    w = _as_nm(wavelengths_nm, bands)
    if w is not None and bands >= 3:
        picks = [int(np.argmin(np.abs(w - target))) for target in TRUE_COLOUR_NM]
        close = all(abs(w[i] - t) <= TRUE_COLOUR_TOLERANCE_NM for i, t in zip(picks, TRUE_COLOUR_NM))
        if close and len(set(picks)) == 3:
            r, g, b = picks
            text = f"true colour: bands {r + 1}, {g + 1}, {b + 1} ({w[r]:.0f}, {w[g]:.0f}, {w[b]:.0f} nm)"
            return (r, g, b), text
    if bands < 3:
        return (0, 0, 0), "band 1 in grey"
    r, g, b = (min(bands - 1, (bands * k) // 6) for k in (5, 3, 1))
    why = "no wavelengths" if w is None else "wavelengths do not cover red, green and blue"
    return (r, g, b), f"bands {r + 1}, {g + 1}, {b + 1} as red, green, blue ({why})"


# --------------------------------------------------------------------------------------------- downsampling


def reduction_factor(rows: int, cols: int, max_side: int = MAX_SIDE) -> int:
    """The whole factor that brings the longest side to at most ``max_side`` pixels."""
    return max(1, math.ceil(max(rows, cols) / max(1, max_side)))


def _blocks(a: np.ndarray, factor: int, fill) -> np.ndarray:
    """(rows, cols) -> (ceil(rows/f), ceil(cols/f), f*f) blocks, the edge padded with ``fill``."""
    rows, cols = a.shape
    out_r, out_c = -(-rows // factor), -(-cols // factor)
    padded = np.full((out_r * factor, out_c * factor), fill, dtype=a.dtype)
    padded[:rows, :cols] = a
    return padded.reshape(out_r, factor, out_c, factor).transpose(0, 2, 1, 3).reshape(out_r, out_c, factor * factor)


def downsample_mean(a: np.ndarray, factor: int) -> np.ndarray:
    """Block mean of a float image ignoring NaN (a block of NaN only stays NaN)."""
    a = np.asarray(a, dtype=np.float32)
    if factor <= 1:
        return a
    blocks = _blocks(a, factor, np.nan)
    finite = np.isfinite(blocks)
    count = finite.sum(axis=2)
    total = np.where(finite, blocks, 0.0).sum(axis=2, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (total / count).astype(np.float32)
    out[count == 0] = np.nan
    return out


def downsample_classes(codes: np.ndarray, factor: int, priority: Sequence[int]) -> np.ndarray:
    """Reduce a uint8 class map: each block takes the first code of ``priority`` present in it.

    Codes missing from ``priority`` count as the last one.
    """
    codes = np.asarray(codes, dtype=np.uint8)
    if factor <= 1:
        return codes
    rank = np.full(256, len(priority) - 1, dtype=np.uint8)
    for i, code in enumerate(priority):
        rank[code] = i
    last = priority[-1]
    ranks = rank[_blocks(codes, factor, last)].min(axis=2)
    return np.asarray(priority, dtype=np.uint8)[ranks]


def downsample_nearest(a: np.ndarray, factor: int) -> np.ndarray:
    """Every ``factor``-th pixel."""
    return a if factor <= 1 else a[::factor, ::factor]


# --------------------------------------------------------------------------------------------- stretch & colour


def percentile_limits(values: np.ndarray, percent: tuple[float, float] = STRETCH_PERCENT) -> tuple[float, float]:
    """The low and high percentiles of the finite values; (nan, nan) when there are none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan
    lo, hi = np.percentile(v, percent)
    return float(lo), float(hi)


def stretch(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Linear stretch of ``[lo, hi]`` onto 0..1, clipped; NaN stays NaN; a flat range maps to 0.5."""
    v = np.asarray(values, dtype=np.float32)
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return np.where(np.isfinite(v), np.float32(0.5), np.float32(np.nan))
    with np.errstate(invalid="ignore"):
        return np.clip((v - lo) / (hi - lo), 0.0, 1.0)


def rgb_quicklook(
    cube: np.ndarray,
    wavelengths_nm: Sequence[float] | None = None,
    max_side: int = MAX_SIDE,
) -> tuple[np.ndarray, str, int]:
    """A (rows', cols', 3) uint8 picture of a (bands, rows, cols) cube.

    Returns (picture, description of the band choice, reduction factor). Each channel is stretched between its
    own 2nd and 98th percentile; pixels invalid in any chosen band are black.
    """
    cube = np.asarray(cube)
    if cube.ndim == 2:
        cube = cube[np.newaxis]
    if cube.ndim != 3 or min(cube.shape) < 1:
        raise InputError(f"An image must have shape (bands, rows, cols); got {cube.shape}.")
    (r, g, b), text = choose_rgb_bands(cube.shape[0], wavelengths_nm)
    factor = reduction_factor(cube.shape[1], cube.shape[2], max_side)
    channels = []
    for band in (r, g, b):
        small = downsample_mean(cube[band], factor)
        channels.append(stretch(small, *percentile_limits(small)))
    rgb = np.stack(channels, axis=-1)
    invalid = ~np.all(np.isfinite(rgb), axis=-1)
    out = np.round(np.nan_to_num(rgb, nan=0.0) * 255.0).astype(np.uint8)
    out[invalid] = NO_DATA_RGB
    return out, text, factor


def colour_map_lut(name: str = "viridis", n: int = 256) -> np.ndarray:
    """(n, 3) uint8 colours of a matplotlib colour map (matplotlib imported here, not at module import)."""
    import matplotlib

    try:
        cmap = matplotlib.colormaps[name]
    except AttributeError:  # matplotlib < 3.5
        from matplotlib import cm

        cmap = cm.get_cmap(name)
    return np.round(cmap(np.linspace(0.0, 1.0, n))[:, :3] * 255.0).astype(np.uint8)


def intensity_quicklook(
    intensity: np.ndarray, max_side: int = MAX_SIDE, cmap: str = "viridis"
) -> tuple[np.ndarray, float, float, int]:
    """Colour picture of a (rows, cols) change intensity (NaN = black).

    Returns (picture, low, high, factor): the colour scale runs from the 2nd to the 98th percentile of the
    finite values of the full-resolution intensity.
    """
    a = np.asarray(intensity, dtype=np.float32)
    if a.ndim != 2:
        raise InputError(f"The change intensity must be a 2-D array; got shape {a.shape}.")
    lo, hi = percentile_limits(a)
    factor = reduction_factor(a.shape[0], a.shape[1], max_side)
    small = downsample_mean(a, factor)
    s = stretch(small, lo, hi)
    lut = colour_map_lut(cmap)
    finite = np.isfinite(s)
    idx = np.round(np.nan_to_num(s, nan=0.0) * (len(lut) - 1)).astype(np.intp)
    out = lut[idx]
    out[~finite] = NO_DATA_RGB
    return out, lo, hi, factor


def class_quicklook(
    codes: np.ndarray,
    palette: dict[int, tuple[int, int, int]],
    priority: Sequence[int] | None = None,
    max_side: int = MAX_SIDE,
) -> tuple[np.ndarray, int]:
    """Colour picture of a uint8 class map; (picture, factor). Without ``priority`` big maps are sampled."""
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise InputError(f"A class map must be a 2-D array; got shape {codes.shape}.")
    codes = codes.astype(np.uint8, copy=False)
    factor = reduction_factor(codes.shape[0], codes.shape[1], max_side)
    small = downsample_classes(codes, factor, priority) if priority else downsample_nearest(codes, factor)
    lut = np.zeros((256, 3), dtype=np.uint8)
    for code, rgb in palette.items():
        lut[code] = rgb
    return lut[small], factor


# --------------------------------------------------------------------------------------------- PNG


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _filter_rows(img: np.ndarray, kind: int, bpp: int) -> np.ndarray:
    """PNG filter ``kind`` (0 none, 1 sub, 2 up) of (h, w*bpp) uint8 rows, with the filter byte in front."""
    a = img.astype(np.int16)
    if kind == 1:
        prev = np.zeros_like(a)
        prev[:, bpp:] = a[:, :-bpp]
        a = a - prev
    elif kind == 2:
        prev = np.zeros_like(a)
        prev[1:] = a[:-1]
        a = a - prev
    rows = (a & 0xFF).astype(np.uint8)
    return np.concatenate([np.full((rows.shape[0], 1), kind, dtype=np.uint8), rows], axis=1)


def png_bytes(image: np.ndarray) -> bytes:
    """Encode a (h, w) grey, (h, w, 3) RGB or (h, w, 4) RGBA uint8 array as PNG (tries 3 filters, keeps the
    smallest)."""
    img = np.ascontiguousarray(image)
    if img.dtype != np.uint8:
        raise InputError("A picture for PNG must be uint8.")
    if img.ndim == 2:
        channels, colour_type = 1, 0
    elif img.ndim == 3 and img.shape[2] in (3, 4):
        channels, colour_type = img.shape[2], (2 if img.shape[2] == 3 else 6)
    else:
        raise InputError(f"A picture must be (h, w), (h, w, 3) or (h, w, 4); got {img.shape}.")
    h, w = img.shape[:2]
    if h < 1 or w < 1:
        raise InputError("A picture must have at least one pixel.")
    rows = img.reshape(h, w * channels)
    best = b""
    for kind in (0, 1, 2):
        packed = zlib.compress(_filter_rows(rows, kind, channels).tobytes(), 6)
        if not best or len(packed) < len(best):
            best = packed
    header = struct.pack(">IIBBBBB", w, h, 8, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", best) + _png_chunk(b"IEND", b"")


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for embedding in HTML."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
