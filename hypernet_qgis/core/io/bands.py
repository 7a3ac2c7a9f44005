"""Bad bands and wavelengths: which bands of a pair to use.

Hyperspectral files mark their unusable bands: ENVI's bad band list (``bbl = {1, 0, ...}``, 0 = bad) in the
header, which GDAL exposes in the ``ENVI`` metadata domain, or a ``bbl`` item in GDAL's dataset or band metadata
(0 = bad). Those bands are left out by default (of either date). Optionally the water-absorption regions (around
1350-1450 nm and 1800-1950 nm, and beyond 2450 nm) are left out too, which needs the band wavelengths. Every choice
is logged; torch-free.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from osgeo import gdal

from ..errors import InputError
from ..progress import Feedback, NullFeedback
from . import raster_io

#: Water-absorption regions (nm): the atmosphere absorbs there, the bands are mostly noise.
WATER_ABSORPTION_NM = ((1350.0, 1450.0), (1800.0, 1950.0), (2450.0, math.inf))
#: Largest difference (nm) between the two dates' wavelengths of one band before the log warns.
WAVELENGTH_TOLERANCE_NM = 10.0


def _flags(text: str | None, count: int) -> list[bool] | None:
    """'{1, 0, 1}' -> [True, False, True] (True = good); None when not a list of ``count`` 0/1 values."""
    if not text:
        return None
    parts = [p for p in re.split(r"[\s,{}]+", str(text).strip()) if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        return None
    if len(values) != count:
        return None
    return [v != 0.0 for v in values]


def bad_bands(path: str) -> tuple[list[int], str] | None:
    """1-based bands the file marks bad, and where it says so; None when it marks none (no bad band list)."""
    resolved = raster_io.resolve_raster_path(path)
    with raster_io.quiet_gdal():
        try:
            ds = gdal.Open(resolved)
        except RuntimeError:  # when some other code turned GDAL exceptions on
            ds = None
    if ds is None:
        return None
    n = ds.RasterCount
    # GetMetadataItem finds a key whatever its case (bbl, BBL, Bbl); GDAL's ENVI driver puts every header
    # field in the ENVI domain, so no second parse of the header is needed
    for domain, source in (("ENVI", "the ENVI header's bbl"), ("", "the bbl metadata")):
        good = _flags(ds.GetMetadataItem("bbl", domain), n)
        if good is not None:
            return [i + 1 for i, ok in enumerate(good) if not ok], source
    per_band = [ds.GetRasterBand(i).GetMetadataItem("bbl") for i in range(1, n + 1)]
    if any(v is not None for v in per_band):
        return [i + 1 for i, v in enumerate(per_band) if _flags(v, 1) == [False]], "the bands' bbl metadata"
    return None


def water_bands(wavelengths_nm: Sequence[float]) -> list[int]:
    """1-based bands whose centre wavelength lies in a water-absorption region."""
    return [i + 1 for i, w in enumerate(wavelengths_nm) if any(lo <= w <= hi for lo, hi in WATER_ABSORPTION_NM)]


def ranges(bands: Sequence[int]) -> str:
    """[1, 2, 3, 7, 9, 10] -> '1-3, 7, 9-10'."""
    out, values = [], sorted(bands)
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        out.append(str(values[i]) if i == j else f"{values[i]}-{values[j]}")
        i = j + 1
    return ", ".join(out)


def choose_bands(
    t1: str,
    t2: str,
    bands: Sequence[int] | None,
    *,
    drop_bad: bool = True,
    drop_water: bool = False,
    feedback: Feedback | None = None,
) -> list[int] | None:
    """The band list to read: ``bands`` (None = all) without the bands either date marks bad (``drop_bad``) and,
    with ``drop_water``, without the water-absorption bands. None when nothing is left out of "all bands".

    InputError when ``drop_water`` is asked for but the wavelengths are unknown, or when no band is left.
    """
    feedback = feedback or NullFeedback()
    info1, info2 = raster_io.raster_info(t1), raster_io.raster_info(t2)
    n = info1.bands
    selected = list(bands) if bands else list(range(1, n + 1))
    left_out: set[int] = set()
    if drop_bad:
        for what, path, info in (("T1", t1, info1), ("T2", t2, info2)):
            found = bad_bands(path)
            if found is None or info.bands != n:  # another band count: the grid check reports it
                continue
            bad, source = found
            hit = [b for b in bad if b in selected]
            if hit:
                feedback.info(
                    f"Leaving out {len(hit)} band{'s' if len(hit) != 1 else ''} that {what} "
                    f"({info.name}) marks bad in {source}: {ranges(hit)}."
                )
            left_out.update(hit)
    w1, w2 = info1.wavelengths_nm, info2.wavelengths_nm
    if w1 and w2 and len(w1) == len(w2):
        worst = max(abs(a - b) for a, b in zip(w1, w2))
        if worst > WAVELENGTH_TOLERANCE_NM:
            feedback.info(
                f"Warning: the wavelengths of T1 and T2 differ by up to {worst:.1f} nm; the bands are "
                "compared by number. Check that both images come from the same sensor and band set."
            )
    if drop_water:
        wavelengths = w1 or w2
        if not wavelengths:
            raise InputError(
                f"Leaving out the water-absorption bands needs the band wavelengths, but neither {info1.name} nor "
                f"{info2.name} gives them (no 'wavelength' in the metadata or ENVI header). Give the bands to use "
                "in BANDS instead, or add the wavelengths to the files."
            )
        water = [b for b in water_bands(wavelengths) if b in selected and b not in left_out]
        if water:
            feedback.info(
                f"Leaving out {len(water)} water-absorption band{'s' if len(water) != 1 else ''} "
                f"(1350-1450 nm, 1800-1950 nm, beyond 2450 nm): {ranges(water)}."
            )
        else:
            feedback.info("No band lies in the water-absorption regions (1350-1450 nm, 1800-1950 nm, beyond 2450 nm).")
        left_out.update(water)
    if not left_out:
        return list(bands) if bands else None
    kept = [b for b in selected if b not in left_out]
    if not kept:
        raise InputError(
            f"No band is left: all {len(selected)} selected bands are marked bad or lie in the "
            "water-absorption regions. Choose other bands in BANDS."
        )
    return kept


def bands_for_model(
    t1: str, metadata: dict, feedback: Feedback | None = None, tolerance_nm: float = 5.0
) -> list[int] | None:
    """T1's bands at the wavelengths a model was trained on (1-based), so that a model applies to another scene
    of the same sensor with a different band subset. None when the model or the image gives no wavelengths (the
    model's band selection is then taken by number). InputError naming the wavelengths T1 lacks."""
    feedback = feedback or NullFeedback()
    wanted = metadata.get("wavelengths_nm")
    info = raster_io.raster_info(t1)
    have = info.wavelengths_nm
    if not wanted or not have:
        if wanted and not have:
            feedback.info(f"{info.name} gives no wavelengths: the model's bands are taken by number.")
        return None
    chosen: list[int] = []
    missing: list[float] = []
    for w in wanted:
        i = min(range(len(have)), key=lambda k: abs(have[k] - float(w)))
        if abs(have[i] - float(w)) > tolerance_nm or (i + 1) in chosen:
            missing.append(float(w))
        else:
            chosen.append(i + 1)
    if missing:
        shown = ", ".join(f"{w:.1f}" for w in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise InputError(
            f"The model was trained on {len(wanted)} bands, {len(missing)} of them at wavelengths {info.name} does "
            f"not have (within {tolerance_nm:g} nm): {shown} nm. Use images of the same sensor, or train a new "
            "model on these images."
        )
    selection = metadata.get("band_selection")
    if selection and list(selection) != chosen:
        feedback.info(
            f"Bands chosen by wavelength to match the model: {ranges(chosen)} (the model's own numbers "
            f"were {ranges(selection)})."
        )
    return chosen
