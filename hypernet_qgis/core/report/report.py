"""Self-contained HTML reports: training, detection, evaluation and model files.

Every picture is a PNG embedded as a ``data:`` URI, so a report is one file that a browser or QGIS's own HTML
viewer shows without network access or JavaScript. Plots use matplotlib's Agg canvas directly (``Figure`` +
``FigureCanvasAgg``, imported inside the functions): no pyplot state, no switch of the global backend, so it is
safe in QGIS's Python and in Processing's worker threads. Every string that comes from a user, a file or model
metadata is HTML-escaped. Reports are written atomically (temporary file in the same folder, then renamed).

Number formats (tests and readers rely on them): scores (OA, kappa, F1, precision, recall, AUC) with 4
decimals, pixel counts as plain integers, percentages with 2 decimals, thresholds and losses with 6 significant
digits.
"""

from __future__ import annotations

import datetime as _dt
import html
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import InputError
from ..io.atomic import atomic_file
from . import quicklook as ql

PathLike = str | os.PathLike

FIGURE_DPI = 150
"""Plots are drawn at 1.5x their displayed size so they stay sharp on high-density screens."""

PAIR_WIDTH = 440
"""Displayed width, in CSS pixels, of each of two pictures side by side."""

_CSS = """
body { font-family: "DejaVu Sans", Arial, Helvetica, sans-serif; font-size: 14px; color: #222222;
       background-color: #ffffff; margin: 18px; max-width: 960px; }
h1 { font-size: 22px; margin-bottom: 2px; color: #1b3a57; }
h2 { font-size: 17px; margin-top: 22px; margin-bottom: 6px; color: #1b3a57; border-bottom: 1px solid #c8d3dd; }
h3 { font-size: 14px; margin-top: 10px; margin-bottom: 4px; }
p.sub { color: #666666; font-size: 12px; margin-top: 0px; }
p.note { color: #555555; font-size: 12px; }
table.kv { border-collapse: collapse; margin-top: 4px; margin-bottom: 4px; }
table.kv td, table.kv th { border: 1px solid #d5dde5; padding: 3px 8px; text-align: left; vertical-align: top; }
table.kv td.k { background-color: #f1f5f8; color: #333333; white-space: nowrap; }
table.kv td.n { text-align: right; font-family: "DejaVu Sans Mono", monospace; }
table.kv th { background-color: #e3ebf2; }
table.pics { border-collapse: collapse; }
table.pics td { padding: 4px 10px 10px 0px; vertical-align: top; }
span.cap { font-size: 12px; color: #444444; }
span.swatch { border: 1px solid #888888; }
img.map { image-rendering: pixelated; border: 1px solid #b0b0b0; }
img.plot { border: 0px; }
"""


# --------------------------------------------------------------------------------------------- formatting


def esc(value: Any) -> str:
    """HTML-escaped text of any value (quotes included)."""
    return html.escape(str(value), quote=True)


def fmt_score(value: Any) -> str:
    """A score such as OA or kappa: 4 decimals; 'n/a' when missing or not finite."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return f"{v:.4f}" if math.isfinite(v) else "n/a"


def fmt_count(value: Any) -> str:
    """A pixel count: a plain integer."""
    try:
        return f"{int(value):d}"
    except (TypeError, ValueError):
        return "n/a"


def fmt_percent(part: float, whole: float) -> str:
    """``part`` as a percentage of ``whole`` with 2 decimals."""
    return f"{100.0 * part / whole:.2f} %" if whole else "n/a"


def fmt_number(value: Any) -> str:
    """A threshold, loss or other measurement: 6 significant digits."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return f"{v:.6g}" if math.isfinite(v) else "n/a"


def _fmt_value(value: Any) -> str:
    """Escaped HTML for one value of an info/metadata table (nested mappings become nested tables)."""
    if isinstance(value, Mapping):
        return _kv_table(value) if value else "(empty)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return esc(int(value))
    if isinstance(value, (float, np.floating)):
        return esc(fmt_number(value))
    if value is None:
        return "&mdash;"
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        if not value:
            return "(none)"
        flat = all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in value)
        if flat:
            items = [fmt_number(v) if isinstance(v, (float, np.floating)) else str(int(v)) for v in value]
        else:
            items = [v if isinstance(v, str) else json.dumps(v, default=str) for v in value]
        if len(items) > 12:
            return esc(f"{len(items)} values: {', '.join(items[:4])}, \u2026, {', '.join(items[-2:])}")
        return esc(", ".join(items))
    return esc(value)


def _label(key: Any) -> str:
    return esc(str(key).replace("_", " "))


def _kv_table(
    items: Mapping[str, Any] | Sequence[tuple[str, Any]],
    numeric_ids: Mapping[str, str] | None = None,
    raw: bool = False,
) -> str:
    """A two-column table. ``raw``: the values are HTML already (otherwise they are formatted and escaped)."""
    pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
    rows = []
    for key, value in pairs:
        cell = value if raw else _fmt_value(value)
        rows.append(f'<tr><td class="k">{_label(key)}</td><td>{cell}</td></tr>')
    return '<table class="kv" border="1" cellspacing="0" cellpadding="4">' + "".join(rows) + "</table>"


def _swatch(rgb: Sequence[int]) -> str:
    colour = ql.hex_colour(rgb)
    return f'<span class="swatch" style="background-color: {colour}; color: {colour};">&nbsp;&nbsp;&nbsp;&nbsp;</span>'


def _legend(entries: Sequence[tuple[Sequence[int], str]]) -> str:
    return "&nbsp;&nbsp; ".join(f"{_swatch(rgb)}&nbsp;{esc(text)}" for rgb, text in entries)


# --------------------------------------------------------------------------------------------- page


class _Page:
    """Collects HTML fragments of one report."""

    def __init__(self, title: str, subtitle: str = "") -> None:
        self.title = title
        self.parts: list[str] = [f"<h1>{esc(title)}</h1>"]
        from ... import __version__

        stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        sub = f"Made {stamp} by HyperNet for QGIS {__version__}"
        if subtitle:
            sub = f"{subtitle} &middot; {esc(sub)}"
        else:
            sub = esc(sub)
        self.parts.append(f'<p class="sub">{sub}</p>')

    def h2(self, text: str, anchor: str | None = None) -> None:
        ident = f' id="{esc(anchor)}"' if anchor else ""
        self.parts.append(f"<h2{ident}>{esc(text)}</h2>")

    def add(self, fragment: str) -> None:
        self.parts.append(fragment)

    def note(self, text: str) -> None:
        self.parts.append(f'<p class="note">{esc(text)}</p>')

    def pictures(self, cells: Sequence[str | None]) -> None:
        """One row of pictures (figure fragments from ``_figure``); None entries are skipped."""
        cells = [c for c in cells if c]
        if cells:
            row = "".join(f'<td width="{PAIR_WIDTH + 20}">{c}</td>' for c in cells)
            self.parts.append(f'<table class="pics" border="0" cellspacing="0" cellpadding="4"><tr>{row}</tr></table>')

    def html(self) -> str:
        body = "\n".join(self.parts)
        return (
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{esc(self.title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
        )


def _figure(
    ident: str,
    png: bytes,
    size: tuple[int, int],
    caption: str = "",
    kind: str = "plot",
    width: int = PAIR_WIDTH,
    legend_html: str = "",
) -> str:
    """An <img> with a data URI, displayed ``width`` wide (height from the aspect), then caption and legend."""
    w, h = size
    width = min(width, max(w, 240)) if kind == "map" else width
    height = max(1, round(width * h / w))
    alt = esc(caption or ident)
    out = (
        f'<img id="{esc(ident)}" class="{kind}" src="{ql.data_uri(png)}" width="{width}" height="{height}" alt="{alt}">'
    )
    if caption:
        out += f'<br><span class="cap">{esc(caption)}</span>'
    if legend_html:
        out += f'<br><span class="cap">{legend_html}</span>'
    return out


def _map_figure(
    ident: str, picture: np.ndarray, caption: str, factor: int, legend_html: str = "", width: int = PAIR_WIDTH
) -> str:
    if factor > 1:
        caption = f"{caption} (shown at 1/{factor} resolution)"
    return _figure(
        ident, ql.png_bytes(picture), (picture.shape[1], picture.shape[0]), caption, "map", width, legend_html
    )


def _write_atomic(path: PathLike, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all."""
    with atomic_file(path, "the report", "report.html", binary=False) as fh:
        fh.write(text)


# --------------------------------------------------------------------------------------------- plots


def _new_figure(width_px: int, height_px: int):
    """A matplotlib Figure on an Agg canvas, ``width_px`` x ``height_px`` CSS pixels (no pyplot involved)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_px / 100.0, height_px / 100.0), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=FIGURE_DPI, facecolor="white")
    return buf.getvalue()


def _style_axes(ax) -> None:
    ax.grid(True, color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=8)


def _clean_history(loss_history: Sequence[float] | np.ndarray | None) -> np.ndarray | None:
    if loss_history is None:
        return None
    try:
        values = np.asarray([float(v) for v in loss_history], dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("The loss history must be a list of numbers (one per epoch).") from None
    return values if values.size else None


def loss_figure(loss_history: Sequence[float] | np.ndarray, size: tuple[int, int] = (PAIR_WIDTH, 300)) -> bytes:
    """PNG of the training loss per epoch (log scale when all positive and spanning more than 20x)."""
    values = _clean_history(loss_history)
    if values is None:
        raise InputError("The loss history is empty; nothing to plot.")
    epochs = np.arange(1, values.size + 1)
    fig = _new_figure(*size)
    ax = fig.add_axes([0.15, 0.16, 0.80, 0.72])
    finite = np.isfinite(values)
    ax.plot(epochs, values, color="#1f5f99", linewidth=1.4, marker="o" if values.size <= 30 else None, markersize=3)
    pos = values[finite]
    if pos.size and np.all(pos > 0) and pos.max() / pos.min() > 20:
        ax.set_yscale("log")
    if finite.any():
        last = int(np.flatnonzero(finite)[-1])
        ax.annotate(
            f"{fmt_number(values[last])}",
            (epochs[last], values[last]),
            textcoords="offset points",
            xytext=(-4, 8),
            ha="right",
            fontsize=8,
            color="#1f5f99",
        )
    ax.set_xlabel("epoch", fontsize=9)
    ax.set_ylabel("loss", fontsize=9)
    ax.set_title("Training loss per epoch", fontsize=10)
    if values.size == 1:
        ax.set_xlim(0.5, 1.5)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _style_axes(ax)
    return _figure_png(fig)


def histogram_figure(
    intensity: np.ndarray, threshold: float | None, method: str = "", size: tuple[int, int] = (2 * PAIR_WIDTH, 300)
) -> bytes:
    """PNG histogram of the finite change intensities (log counts) with the threshold marked."""
    values = np.asarray(intensity, dtype=np.float32)
    values = values[np.isfinite(values)]
    fig = _new_figure(*size)
    ax = fig.add_axes([0.08, 0.16, 0.90, 0.72])
    _style_axes(ax)
    ax.set_xlabel("change intensity", fontsize=9)
    ax.set_ylabel("pixels (log scale)", fontsize=9)
    ax.set_title("Histogram of the change intensity", fontsize=10)
    if values.size == 0:
        ax.text(0.5, 0.5, "no valid pixels", transform=ax.transAxes, ha="center")
        return _figure_png(fig)
    thr = float(threshold) if threshold is not None and math.isfinite(float(threshold)) else None
    lo = float(values.min())
    hi = float(np.percentile(values, 99.9))
    if thr is not None:
        hi = max(hi, thr + 0.05 * max(thr - lo, 1e-12))
    if hi <= lo:
        hi = lo + 1.0
    outside = int(np.count_nonzero(values > hi))
    counts, edges = np.histogram(np.clip(values, lo, hi), bins=120, range=(lo, hi))
    if outside:  # the clipped tail is drawn in the last bin; say so
        ax.text(
            0.99,
            0.93,
            f"{outside} pixel{'s' if outside != 1 else ''} above {fmt_number(hi)} counted in the last bar",
            transform=ax.transAxes,
            ha="right",
            fontsize=8,
            color="#555555",
        )
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="#7f9fbf", edgecolor="none", log=True)
    if thr is not None:
        ax.axvspan(thr, hi, color="#d55e00", alpha=0.08, linewidth=0)
        ax.axvline(thr, color="#d55e00", linewidth=1.6, linestyle="--")
        label = f"threshold {fmt_number(thr)}" + (f" ({method})" if method else "")
        changed = int(np.count_nonzero(values > thr))
        ax.text(
            thr,
            0.80,
            f" {label}\n {changed} pixel{'s' if changed != 1 else ''} above",
            transform=ax.get_xaxis_transform(),
            color="#a04000",
            fontsize=8,
            va="top",
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 1.5},
            ha="left" if thr < lo + 0.7 * (hi - lo) else "right",
        )
    ax.set_xlim(lo, hi)
    return _figure_png(fig)


def roc_figure(
    fpr: Sequence[float] | np.ndarray,
    tpr: Sequence[float] | np.ndarray,
    auc: float | None,
    size: tuple[int, int] = (PAIR_WIDTH, PAIR_WIDTH),
) -> bytes:
    """PNG of a ROC curve with the chance diagonal and the AUC in the legend."""
    fpr_a = np.asarray(fpr, dtype=np.float64).ravel()
    tpr_a = np.asarray(tpr, dtype=np.float64).ravel()
    if fpr_a.size != tpr_a.size or fpr_a.size < 2:
        raise InputError("The ROC curve needs matching false- and true-positive-rate arrays of at least 2 points.")
    if fpr_a.size > 4000:  # enough points to draw the curve; keeps the plot fast on millions of pixels
        keep = np.unique(np.linspace(0, fpr_a.size - 1, 4000).round().astype(np.intp))
        fpr_a, tpr_a = fpr_a[keep], tpr_a[keep]
    fig = _new_figure(*size)
    ax = fig.add_axes([0.14, 0.12, 0.80, 0.78])
    _style_axes(ax)
    ax.plot([0, 1], [0, 1], color="#aaaaaa", linewidth=1, linestyle=":", label="chance")
    label = "ROC" if auc is None else f"ROC, AUC = {fmt_score(auc)}"
    ax.plot(fpr_a, tpr_a, color="#1f5f99", linewidth=1.8, label=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate", fontsize=9)
    ax.set_ylabel("true positive rate", fontsize=9)
    ax.set_title("ROC curve of the change intensity", fontsize=10)
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    return _figure_png(fig)


def _plot_figure(ident: str, png: bytes, size: tuple[int, int], caption: str = "") -> str:
    return _figure(ident, png, size, caption, "plot", size[0])


# --------------------------------------------------------------------------------------------- shared parts


def _cube(name: str, a: Any) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    if arr.ndim != 3 or min(arr.shape) < 1:
        raise InputError(f"{name} must be an image of shape (bands, rows, cols); got {np.shape(a)}.")
    if not np.issubdtype(arr.dtype, np.number):
        raise InputError(f"{name} must be numeric; got {arr.dtype}.")
    return arr


def _check_2d(name: str, a: Any, shape: tuple[int, ...] | None) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 2:
        raise InputError(f"{name} must be a 2-D (rows, cols) array; got shape {arr.shape}.")
    if shape is not None and arr.shape != tuple(shape):
        raise InputError(
            f"{name} has {arr.shape[0]} x {arr.shape[1]} pixels but the images have "
            f"{shape[0]} x {shape[1]}; give arrays of the same grid."
        )
    return arr


def _valid_pixels(*cubes: np.ndarray) -> np.ndarray:
    """True where every band of every cube is finite (band by band, no cube-sized temporary)."""
    valid = np.ones(cubes[0].shape[1:], dtype=bool)
    for cube in cubes:
        if np.issubdtype(cube.dtype, np.floating):
            for band in cube:
                valid &= np.isfinite(band)
    return valid


def _wavelengths(info: Mapping[str, Any]) -> Sequence[float] | None:
    for key in ("wavelengths_nm", "wavelengths", "wavelength"):
        value = info.get(key)
        if value is not None and not isinstance(value, (str, bytes)):
            try:
                return [float(v) for v in value]
            except (TypeError, ValueError):
                return None
    return None


def _input_pictures(page: _Page, t1: np.ndarray, t2: np.ndarray, info: Mapping[str, Any]) -> None:
    wavelengths = _wavelengths(info)
    cells = []
    for ident, name, cube in (("fig-t1", "T1", t1), ("fig-t2", "T2", t2)):
        picture, text, factor = ql.rgb_quicklook(cube, wavelengths)
        cells.append(_map_figure(ident, picture, f"{name}: {text}; 2-98 % stretch, black = no data", factor))
    page.pictures(cells)


def _training_section(
    page: _Page,
    loss_history: Sequence[float] | np.ndarray | None,
    training_mask: np.ndarray | None,
    valid: np.ndarray | None,
) -> None:
    history = _clean_history(loss_history)
    if history is None and training_mask is None:
        return
    page.h2("Training", "training")
    cells: list[str | None] = []
    if history is not None:
        size = (PAIR_WIDTH, 300)
        cells.append(
            _plot_figure(
                "fig-loss",
                loss_figure(history, size),
                size,
                f"{history.size} epochs, final loss {fmt_number(history[-1])}",
            )
        )
    if training_mask is not None:
        mask = np.asarray(training_mask, dtype=bool)
        codes = mask.astype(np.uint8)
        if valid is not None:
            codes[~valid] = 255
        picture, factor = ql.class_quicklook(codes, ql.MASK_PALETTE)
        n_train = int(mask.sum())
        n_valid = int(valid.sum()) if valid is not None else mask.size
        legend = _legend(
            [
                (ql.MASK_PALETTE[1], "training pixel"),
                (ql.MASK_PALETTE[0], "other valid pixel"),
                (ql.MASK_PALETTE[255], "no data"),
            ]
        )
        cells.append(
            _map_figure(
                "fig-mask",
                picture,
                f"Training pixels (mask g): {n_train} = {fmt_percent(n_train, n_valid)} of the valid pixels",
                factor,
                legend,
            )
        )
    page.pictures(cells)


def _details(page: _Page, info: Mapping[str, Any], skip: Sequence[str] = ()) -> None:
    items = [(k, v) for k, v in info.items() if k not in skip]
    if items:
        page.h2("Details", "details")
        page.add(_kv_table(items))


def _info_dict(info: Any) -> Mapping[str, Any]:
    if info is None:
        return {}
    if not isinstance(info, Mapping):
        raise InputError(f"The report info must be a dict of names and values; got {type(info).__name__}.")
    return info


def _size_rows(t1: np.ndarray, valid: np.ndarray, band_count: int | None = None) -> list[tuple[str, str]]:
    bands, rows, cols = t1.shape
    bands = band_count or bands
    return [
        ("image size", esc(f"{rows} rows x {cols} columns")),
        ("bands", esc(bands)),
        (
            "valid pixels",
            f'<span id="v-valid">{fmt_count(valid.sum())}</span> of {fmt_count(rows * cols)} '
            f"({fmt_percent(valid.sum(), rows * cols)})",
        ),
    ]


def _run_rows(info: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = []
    if info.get("device") is not None:
        rows.append(("device", esc(info["device"])))
    if info.get("seconds") is not None:
        rows.append(("run time", esc(f"{fmt_number(info['seconds'])} s")))
    return rows


# --------------------------------------------------------------------------------------------- public reports


def training_report(
    path: PathLike,
    *,
    t1: np.ndarray | None,
    t2: np.ndarray | None,
    info: Mapping[str, Any] | None,
    loss_history: Sequence[float],
    training_mask: np.ndarray,
    title: str = "HyperNet training report",
) -> None:
    """Write an HTML report of a training run: inputs, loss per epoch, training pixels (mask g), settings.

    ``t1``/``t2`` may be None (e.g. the images are no longer readable): the report then has no input pictures.
    """
    info = _info_dict(info)
    history = _clean_history(loss_history)
    page = _Page(title)
    page.h2("Summary", "summary")
    if t1 is not None and t2 is not None:
        t1, t2 = _cube("T1", t1), _cube("T2", t2)
        if t1.shape != t2.shape:
            raise InputError(f"T1 {t1.shape} and T2 {t2.shape} differ in shape; give both dates on the same grid.")
        mask = _check_2d("The training mask", training_mask, t1.shape[1:]).astype(bool)
        valid = _valid_pixels(t1, t2)
        summary = _size_rows(t1, valid)
    else:
        mask = _check_2d("The training mask", training_mask, None).astype(bool)
        valid = None
        summary = [("image size", esc(f"{mask.shape[0]} rows x {mask.shape[1]} columns"))]
    n_train = int(mask.sum())
    n_valid = valid.sum() if valid is not None else mask.size
    of_what = "valid pixels" if valid is not None else "pixels"
    summary.append(
        (
            "training pixels (mask g)",
            f'<span id="v-training">{fmt_count(n_train)}</span> ({fmt_percent(n_train, n_valid)} of the {of_what})',
        )
    )
    if history is not None:
        summary.append(("epochs", f'<span id="v-epochs">{fmt_count(history.size)}</span>'))
        summary.append(("final loss", f'<span id="v-final-loss">{fmt_number(history[-1])}</span>'))
    summary += _run_rows(info)
    page.add(_kv_table(summary, raw=True))
    if t1 is not None and t2 is not None:
        page.h2("Input images", "inputs")
        _input_pictures(page, t1, t2, info)
    _training_section(page, history, mask, valid)
    _details(page, info)
    _write_atomic(path, page.html())


def detection_report(
    path: PathLike,
    *,
    t1: np.ndarray,
    t2: np.ndarray,
    intensity: np.ndarray,
    binary: np.ndarray,
    threshold: float,
    threshold_method: str,
    info: Mapping[str, Any] | None,
    loss_history: Sequence[float] | None = None,
    training_mask: np.ndarray | None = None,
    title: str = "HyperNet change detection report",
    valid: np.ndarray | None = None,
    band_count: int | None = None,
) -> None:
    """Write an HTML report of a detection: inputs, intensity and binary maps, histogram with the threshold,
    and the training (loss per epoch, mask g) when given. ``valid`` and ``band_count`` describe the pair when
    ``t1``/``t2`` hold only the bands the pictures show (pairs read by windows)."""
    info = _info_dict(info)
    t1, t2 = _cube("T1", t1), _cube("T2", t2)
    if t1.shape != t2.shape:
        raise InputError(f"T1 {t1.shape} and T2 {t2.shape} differ in shape; give both dates on the same grid.")
    grid = t1.shape[1:]
    intensity = _check_2d("The change intensity", intensity, grid).astype(np.float32, copy=False)
    binary = _check_2d("The binary change map", binary, grid)
    bad = ~np.isin(binary, (0, 1, 255))
    if bad.any():
        raise InputError(
            "The binary change map may only hold 1 (changed), 0 (unchanged) and 255 (no data); found "
            f"{np.unique(np.asarray(binary)[bad])[:5].tolist()}."
        )
    binary = binary.astype(np.uint8)
    mask = None if training_mask is None else _check_2d("The training mask", training_mask, grid).astype(bool)
    valid = _valid_pixels(t1, t2) if valid is None else _check_2d("The valid mask", valid, grid).astype(bool)
    n_changed = int(np.count_nonzero(binary == 1))
    n_scored = int(np.count_nonzero(binary != 255))
    method = str(threshold_method or "")

    page = _Page(title)
    page.h2("Summary", "summary")
    summary = _size_rows(t1, valid, band_count)
    summary += [
        (
            "changed pixels",
            f'<span id="v-changed">{fmt_count(n_changed)}</span> '
            f'(<span id="v-changed-percent">{fmt_percent(n_changed, n_scored)}</span> of '
            f"{fmt_count(n_scored)} mapped pixels)",
        ),
        (
            "threshold",
            f'<span id="v-threshold">{fmt_number(threshold)}</span> (method: <span id="v-method">{esc(method)}</span>)',
        ),
    ]
    summary += _run_rows(info)
    page.add(_kv_table(summary, raw=True))

    page.h2("Input images", "inputs")
    _input_pictures(page, t1, t2, info)

    page.h2("Change maps", "maps")
    picture, lo, hi, factor = ql.intensity_quicklook(intensity)
    intensity_cell = _map_figure(
        "fig-intensity",
        picture,
        f"Change intensity: dark blue {fmt_number(lo)} to yellow {fmt_number(hi)} (2-98 %), black = no data",
        factor,
    )
    picture, factor = ql.class_quicklook(binary, ql.BINARY_PALETTE, ql.BINARY_PRIORITY)
    legend = _legend(
        [(ql.BINARY_PALETTE[1], "changed"), (ql.BINARY_PALETTE[0], "unchanged"), (ql.BINARY_PALETTE[255], "no data")]
    )
    binary_cell = _map_figure("fig-binary", picture, f"Binary change map ({method or 'threshold'})", factor, legend)
    page.pictures([intensity_cell, binary_cell])
    size = (2 * PAIR_WIDTH + 10, 300)
    caption = (
        "The dashed line is the two-Gaussian mixture's split, where the MRF map starts; the map then weighs "
        "each pixel's evidence with its 5x5 neighbours' labels, so uncertain pixels near the line take the "
        "label their neighbours agree on."
        if method == "mrf"
        else "Pixels above the dashed line are mapped as changed."
    )
    page.pictures([_plot_figure("fig-histogram", histogram_figure(intensity, threshold, method, size), size, caption)])

    _training_section(page, loss_history, mask, valid)
    _details(page, info)
    _write_atomic(path, page.html())


def error_map(pred: np.ndarray, reference_changed: np.ndarray, labelled: np.ndarray) -> np.ndarray:
    """uint8 map of agreement with a reference: 0 correct, 1 false alarm, 2 miss, 255 not scored.

    ``pred``: bool (True = changed), or a binary map 1/0 with any other value (255) meaning no prediction;
    ``reference_changed``, ``labelled``: bool. A pixel is scored where it is labelled and predicted.
    """
    pred = np.asarray(pred)
    ref = np.asarray(reference_changed)
    lab = np.asarray(labelled)
    if pred.ndim != 2 or ref.shape != pred.shape or lab.shape != pred.shape:
        raise InputError(
            f"The prediction {pred.shape}, the reference {ref.shape} and the labelled mask "
            f"{lab.shape} must be 2-D arrays of the same size."
        )
    if pred.dtype == bool:
        changed, predicted = pred, np.ones(pred.shape, dtype=bool)
    else:
        changed, predicted = pred == 1, (pred == 0) | (pred == 1)
    ref = ref.astype(bool)
    scored = lab.astype(bool) & predicted
    out = np.full(pred.shape, ql.ERROR_UNSCORED, dtype=np.uint8)
    out[scored & (changed == ref)] = ql.ERROR_CORRECT
    out[scored & changed & ~ref] = ql.ERROR_FALSE_ALARM
    out[scored & ~changed & ref] = ql.ERROR_MISS
    return out


_compute_error_map = error_map  # evaluation_report's keyword ``error_map`` hides the function there

_METRIC_ROWS = (  # (label shown, id suffix, accepted keys, lower case)
    ("OA", "oa", ("oa", "overall_accuracy", "accuracy")),
    ("kappa", "kappa", ("kappa", "cohen_kappa")),
    ("F1", "f1", ("f1", "f1_score", "f_score")),
    ("precision", "precision", ("precision",)),
    ("recall", "recall", ("recall",)),
    ("false alarm rate", "false-alarm-rate", ("false_alarm_rate",)),
    ("missed alarm rate", "missed-alarm-rate", ("missed_alarm_rate",)),
)


def _lookup(metrics: Mapping[str, Any], names: Sequence[str]) -> tuple[str | None, Any]:
    lowered = {str(k).lower(): k for k in metrics}
    for name in names:
        if name in lowered:
            key = lowered[name]
            return key, metrics[key]
    return None, None


def _confusion_of(metrics: Mapping[str, Any]) -> tuple[np.ndarray | None, set]:
    """2x2 [[TN, FP], [FN, TP]] from 'confusion' or from tn/fp/fn/tp entries; and the keys used."""
    key, value = _lookup(metrics, ("confusion", "confusion_matrix", "cm"))
    if value is not None:
        cm = np.asarray(value)
        if cm.shape != (2, 2):
            raise InputError(f"The confusion matrix must be 2x2 [[TN, FP], [FN, TP]]; got shape {cm.shape}.")
        return cm, {key}
    keys, cells = set(), []
    for names in (("tn",), ("fp",), ("fn",), ("tp",)):
        k, v = _lookup(metrics, names)
        if v is None:
            return None, set()
        keys.add(k)
        cells.append(v)
    return np.asarray(cells).reshape(2, 2), keys


def _confusion_table(cm: np.ndarray) -> str:
    tn, fp, fn, tp = (int(v) for v in np.asarray(cm).ravel())
    total = tn + fp + fn + tp

    def cell(ident: str, value: int) -> str:
        return f'<td class="n" id="{ident}">{fmt_count(value)}</td>'

    return (
        '<table class="kv" border="1" cellspacing="0" cellpadding="4">'
        "<tr><th></th><th>predicted unchanged</th><th>predicted changed</th><th>total</th></tr>"
        f'<tr><td class="k">reference unchanged</td>{cell("cm-tn", tn)}{cell("cm-fp", fp)}'
        f'{cell("cm-ref0", tn + fp)}</tr>'
        f'<tr><td class="k">reference changed</td>{cell("cm-fn", fn)}{cell("cm-tp", tp)}'
        f'{cell("cm-ref1", fn + tp)}</tr>'
        f'<tr><td class="k">total</td>{cell("cm-pred0", tn + fn)}{cell("cm-pred1", fp + tp)}'
        f'{cell("cm-total", total)}</tr>'
        "</table>"
    )


def evaluation_report(
    path: PathLike,
    *,
    prediction: np.ndarray,
    reference: np.ndarray,
    metrics: Mapping[str, Any],
    roc: Sequence[Sequence[float] | np.ndarray] | None = None,
    auc: float | None = None,
    error_map: np.ndarray | None = None,
    changed: Sequence[float] = (1,),
    unchanged: Sequence[float] = (0,),
    ignore: Sequence[float] = (),
    info: Mapping[str, Any] | None = None,
    title: str = "HyperNet accuracy report",
) -> None:
    """Write an HTML accuracy report: OA, kappa, F1, precision, recall (and AUC), the confusion matrix, the ROC
    curve, the error map (false alarms and misses), the prediction and the reference.

    ``prediction``: binary map (1/0/255) or change intensity (float). ``reference``: label raster read with
    :func:`metrics.reference_labels` (``changed``/``unchanged`` codes scored; ``ignore``, 255, NaN unlabelled).
    ``roc``: (fpr, tpr[, thresholds]). ``error_map``: as from :func:`error_map`; computed here when omitted and the
    prediction is binary.
    """
    info = _info_dict(info)
    if not isinstance(metrics, Mapping):
        raise InputError("The metrics must be a dict such as the one change_metrics() returns.")
    pred = _check_2d("The prediction", prediction, None)
    ref = _check_2d("The reference", reference, pred.shape)
    from ..classic.metrics import reference_labels

    ref_changed, labelled = reference_labels(ref, changed, unchanged, ignore)
    is_binary = pred.dtype == bool or (np.issubdtype(pred.dtype, np.integer) and bool(np.isin(pred, (0, 1, 255)).all()))
    if error_map is None and is_binary:
        error_map = _compute_error_map(pred, ref_changed, labelled)
    if error_map is not None:
        error_map = _check_2d("The error map", error_map, pred.shape).astype(np.uint8)

    page = _Page(title)
    page.h2("Accuracy", "accuracy")
    used: set = set()
    rows = []
    for label, ident, names in _METRIC_ROWS:
        key, value = _lookup(metrics, names)
        if key is not None:
            used.add(key)
            rows.append((label, f'<span id="m-{ident}">{fmt_score(value)}</span>'))
    auc_key, auc_value = _lookup(metrics, ("auc", "roc_auc"))
    if auc is None and auc_value is not None:
        auc = auc_value
    if auc_key is not None:
        used.add(auc_key)
    if auc is not None:
        rows.append(("AUC (area under the ROC curve)", f'<span id="m-auc">{fmt_score(auc)}</span>'))
    rows.append(
        (
            "labelled pixels in the reference",
            f'<span id="m-labelled">{fmt_count(labelled.sum())}</span> '
            f"({fmt_count(ref_changed.sum())} changed, "
            f"{fmt_count(labelled.sum() - ref_changed.sum())} unchanged)",
        )
    )
    page.add(_kv_table(rows, raw=True))
    cm, cm_keys = _confusion_of(metrics)
    used |= cm_keys
    if cm is not None:
        page.add("<h3>Confusion matrix (pixels)</h3>")
        page.add(_confusion_table(cm))
    others = [(k, v) for k, v in metrics.items() if k not in used]
    if others:
        page.add("<h3>Other values</h3>")
        page.add(_kv_table(others))

    page.h2("Where the map is right and wrong", "errors")
    cells: list[str | None] = []
    if error_map is not None:
        display = error_map.copy()
        display[(error_map == ql.ERROR_CORRECT) & ref_changed] = ql.ERROR_TRUE_CHANGE
        picture, factor = ql.class_quicklook(display, ql.ERROR_PALETTE, ql.ERROR_PRIORITY)
        n_fa = int(np.count_nonzero(error_map == ql.ERROR_FALSE_ALARM))
        n_miss = int(np.count_nonzero(error_map == ql.ERROR_MISS))
        legend = _legend(
            [
                (ql.ERROR_PALETTE[ql.ERROR_FALSE_ALARM], f"false alarm ({n_fa})"),
                (ql.ERROR_PALETTE[ql.ERROR_MISS], f"miss ({n_miss})"),
                (ql.ERROR_PALETTE[ql.ERROR_TRUE_CHANGE], "change found"),
                (ql.ERROR_PALETTE[ql.ERROR_CORRECT], "unchanged, correct"),
                (ql.ERROR_PALETTE[ql.ERROR_UNSCORED], "not scored"),
            ]
        )
        cells.append(_map_figure("fig-errors", picture, "Error map", factor, legend))
    if roc is not None:
        try:
            fpr, tpr = roc[0], roc[1]
        except (TypeError, IndexError, KeyError):
            raise InputError("The ROC curve must be given as (fpr, tpr) or (fpr, tpr, thresholds).") from None
        size = (PAIR_WIDTH, PAIR_WIDTH)
        cells.append(_plot_figure("fig-roc", roc_figure(fpr, tpr, auc, size), size))
    page.pictures(cells)

    page.h2("Prediction and reference", "inputs")
    if is_binary:
        codes = pred.astype(np.uint8)
        picture, factor = ql.class_quicklook(codes, ql.BINARY_PALETTE, ql.BINARY_PRIORITY)
        legend = _legend(
            [
                (ql.BINARY_PALETTE[1], "changed"),
                (ql.BINARY_PALETTE[0], "unchanged"),
                (ql.BINARY_PALETTE[255], "no data"),
            ]
        )
        pred_cell = _map_figure("fig-prediction", picture, "Predicted change map", factor, legend)
    else:
        picture, lo, hi, factor = ql.intensity_quicklook(pred.astype(np.float32))
        pred_cell = _map_figure(
            "fig-prediction",
            picture,
            f"Change intensity: dark blue {fmt_number(lo)} to yellow {fmt_number(hi)} (2-98 %)",
            factor,
        )
    ref_codes = np.full(pred.shape, 255, dtype=np.uint8)
    ref_codes[labelled] = 0
    ref_codes[ref_changed] = 1
    picture, factor = ql.class_quicklook(ref_codes, ql.REFERENCE_PALETTE, ql.REFERENCE_PRIORITY)
    legend = _legend(
        [
            (ql.REFERENCE_PALETTE[1], "changed"),
            (ql.REFERENCE_PALETTE[0], "unchanged"),
            (ql.REFERENCE_PALETTE[255], "unlabelled"),
        ]
    )
    page.pictures([pred_cell, _map_figure("fig-reference", picture, "Reference", factor, legend)])
    _details(page, info)
    _write_atomic(path, page.html())


def _find_history(metadata: Mapping[str, Any]) -> Any:
    if "loss_history" in metadata:
        return metadata["loss_history"]
    for value in metadata.values():
        if isinstance(value, Mapping) and "loss_history" in value:
            return value["loss_history"]
    return None


def model_report(
    path: PathLike, metadata: Mapping[str, Any], *, source: str | None = None, title: str = "HyperNet model"
) -> None:
    """Write an HTML page describing a model file from its JSON metadata: loss curve, settings, versions."""
    if not isinstance(metadata, Mapping):
        raise InputError("The model metadata must be a dict (the JSON stored in the model file).")
    page = _Page(title, subtitle=esc(source) if source else "")
    page.h2("Summary", "summary")
    summary = []
    for key, label in (
        ("bands", "bands"),
        ("widths", "widths (bands, branch, projector, predictor)"),
        ("training_pixels", "training pixels (mask g)"),
        ("device", "trained on"),
        ("seconds", "training time (s)"),
        ("saved_utc", "saved (UTC)"),
    ):
        if key in metadata:
            summary.append((label, f'<span id="v-{esc(key)}">{_fmt_value(metadata[key])}</span>'))
    history = None
    raw_history = _find_history(metadata)
    if raw_history is not None:
        try:
            history = _clean_history(raw_history)
        except InputError:
            history = None
    if history is not None:
        summary.append(("epochs", f'<span id="v-epochs">{fmt_count(history.size)}</span>'))
        summary.append(("final loss", f'<span id="v-final-loss">{fmt_number(history[-1])}</span>'))
    if summary:
        page.add(_kv_table(summary, raw=True))
    else:
        page.note("The metadata holds none of the usual summary entries.")
    if history is not None:
        page.h2("Training", "training")
        size = (2 * PAIR_WIDTH + 10, 320)
        page.pictures([_plot_figure("fig-loss", loss_figure(history, size), size)])
    page.h2("Metadata", "details")
    page.add(_kv_table(metadata))
    _write_atomic(path, page.html())


# --------------------------------------------------------------------------------------------- from engine results
# Glue for the CLI and the Processing algorithms: engine results (duck-typed, so small changes there do not break
# reports) -> the report functions above.


def _train_info(train: Any) -> dict[str, Any]:
    """Info entries of a core.training.TrainResult."""
    from dataclasses import asdict, is_dataclass

    extra = dict(getattr(train, "extra", {}) or {})
    info: dict[str, Any] = {}
    inputs = extra.get("inputs")
    if isinstance(inputs, Mapping):
        info.update({"T1": inputs.get("t1"), "T2": inputs.get("t2")})
    info["device"] = getattr(train, "device_name", None)
    info["seconds"] = getattr(train, "seconds", None)
    if extra.get("band_selection") is not None:
        info["band selection"] = extra["band_selection"]
    if extra.get("mask_g"):
        info["training pixels (mask g)"] = extra["mask_g"]
    if getattr(train, "widths", None) is not None:
        info["widths (branch, projector, predictor)"] = list(train.widths)
    config = getattr(train, "config", None)
    if config is not None:
        info["settings"] = (
            asdict(config) if is_dataclass(config) and not isinstance(config, type) else dict(vars(config))
        )
    scaling = extra.get("scaling")
    if isinstance(scaling, Mapping) and scaling.get("method"):
        info["scaling"] = scaling["method"]
    if extra.get("wavelengths_nm"):
        info["wavelengths_nm"] = extra["wavelengths_nm"]
    if isinstance(extra.get("software"), Mapping):
        info["software"] = extra["software"]
    return info


def training_pictures(
    result: Any, t1_path: str | None = None, t2_path: str | None = None
) -> tuple[np.ndarray, np.ndarray, list[float] | None]:
    """The bands a training report shows (true colour or three spread bands) of both dates, read from
    ``t1_path``/``t2_path`` (default: the inputs the TrainResult records), with their wavelengths."""
    from ..io import raster_io
    from .quicklook import choose_rgb_bands

    extra = getattr(result, "extra", {}) or {}
    inputs = extra.get("inputs") or {}
    selection = extra.get("band_selection") or list(range(1, int(extra["band_count"]) + 1))
    (r, g, b), _ = choose_rgb_bands(len(selection), extra.get("wavelengths_nm"))
    picks = sorted({r, g, b})  # only the bands the pictures show: bounded memory for any scene
    t1 = raster_io.read_raster(t1_path or inputs["t1"], [selection[i] for i in picks])[0]
    t2 = raster_io.read_raster(t2_path or inputs["t2"], [selection[i] for i in picks])[0]
    wavelengths = [extra["wavelengths_nm"][i] for i in picks] if extra.get("wavelengths_nm") else None
    return t1, t2, wavelengths


def write_training_report(
    path: PathLike, result: Any, t1: np.ndarray | None = None, t2: np.ndarray | None = None
) -> None:
    """Training report from a TrainResult; the images are re-read from the inputs it records when not given."""
    info = _train_info(result)
    if t1 is None or t2 is None:
        kept = getattr(result, "report_images", None)  # read while an aligned pair's warped files existed
        try:
            t1, t2, wavelengths = kept if kept is not None else training_pictures(result)
            if wavelengths:
                info["wavelengths_nm"] = wavelengths
        except Exception:  # the report still tells the training story without pictures of the inputs
            t1 = t2 = None
    training_report(path, t1=t1, t2=t2, info=info, loss_history=result.loss_history, training_mask=result.training_mask)


def write_detection_report(path: PathLike, result: Any) -> None:
    """Detection report from a core.pipeline.DetectResult (HyperNet or a classic method)."""
    pair = getattr(result, "pair", None)
    if pair is None:
        raise InputError("This detection result carries no images; a report needs the input pair.")
    train = getattr(result, "train", None)
    extra = dict(getattr(result, "extra", {}) or {})
    info: dict[str, Any] = {
        "T1": getattr(pair.info1, "path", None),
        "T2": getattr(pair.info2, "path", None),
        "change map": getattr(result, "change_path", None),
    }
    if getattr(result, "intensity_path", None):
        info["change intensity"] = result.intensity_path
    method = extra.get("method")
    if method:
        info["method"] = method
        title = f"Change detection report ({method})"
    else:
        info["method"] = "HyperNet, trained on this pair" if train is not None else "HyperNet, model from a file"
        title = "HyperNet change detection report"
    if extra.get("distance"):
        info["distance"] = extra["distance"]
    if extra.get("evidence") == "fused" and not extra.get("streamed"):
        info["intensity"] = "mean of HyperNet, IR-MAD and CVA, each divided by its median (core/fusion.py)"
    info["seconds"] = getattr(result, "seconds", None)
    area = extra.get("area")
    if area:
        ha = area.get("changed_hectares")
        info["changed area"] = (
            f"{ha:.4g} ha" if ha is not None else f"{area['changed_area']:.6g} map units²"
        ) + f", {100.0 * area['changed_share']:.2f}% of the valid area"
    if extra.get("polygons"):
        info["change polygons"] = extra["polygons"]
    if extra.get("align"):
        info["grids"] = extra["align"]
    if getattr(pair, "bands", None) is not None:
        info["band selection"] = pair.bands
    t1, t2, wavelengths = pair.report_dates()
    if wavelengths:
        info["wavelengths_nm"] = list(wavelengths)
    band_count = getattr(pair, "band_count", None)
    if train is not None:
        info["device"] = getattr(train, "device_name", None)
        info["training"] = {
            k: v for k, v in _train_info(train).items() if k not in ("T1", "T2", "wavelengths_nm", "software")
        }
    detection_report(
        path,
        t1=t1,
        t2=t2,
        intensity=result.intensity,
        binary=result.binary,
        threshold=result.threshold,
        threshold_method=str(result.threshold_method),
        info=info,
        loss_history=getattr(train, "loss_history", None),
        training_mask=getattr(train, "training_mask", None),
        title=title,
        valid=pair.valid,
        band_count=band_count,
    )


def write_evaluation_report(
    path: PathLike,
    change: str,
    reference: str,
    changed: Sequence[float] = (1,),
    unchanged: Sequence[float] = (0,),
    ignore: Sequence[float] = (),
) -> None:
    """Evaluation report of a change map (or intensity) file against a reference raster file."""
    from ..classic import metrics as m
    from ..classic.evaluation import read_evaluation_inputs

    inputs = read_evaluation_inputs(change, reference)
    is_binary, prediction, score, ref_codes = inputs.is_binary, inputs.prediction, inputs.score, inputs.reference
    kw = {"changed": changed, "unchanged": unchanged, "ignore": ignore}
    scores = m.change_metrics(prediction, ref_codes, **kw) if is_binary else {}
    fpr, tpr, _ = m.roc_curve(score, ref_codes, **kw)
    auc = m.roc_auc(score, ref_codes, **kw)
    info = {
        "change map": change,
        "reference": reference,
        "changed codes": list(changed),
        "unchanged codes": list(unchanged),
        "ignored codes": list(ignore),
    }
    if not is_binary:
        info["note"] = "The input is a change intensity, not a 1/0 map: only the AUC and ROC curve apply."
    evaluation_report(
        path,
        prediction=prediction,
        reference=ref_codes,
        metrics=scores,
        roc=(fpr, tpr),
        auc=auc,
        changed=changed,
        unchanged=unchanged,
        ignore=ignore,
        info=info,
    )
