"""Figures in the style of paper 1 (Figures 2-7): one panel per manipulation size, accuracy against the
discovery rate, one line per method (mean over seeds) with its 95% confidence interval as a band, the original
model as a dashed line.
And RUM's study: a metric (ToW) per memorization level of the forget set (:func:`plot_levels`).

The figures take already aggregated curves (see :mod:`.build`), so they hold no selection or averaging logic.
"""
from __future__ import annotations

import textwrap
import zlib
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: never needs a display, safe on headless machines and in threads
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..methods import METHODS  # noqa: E402
from ..runner.spec import ORIGINAL  # noqa: E402

DPI = 120
PANEL_WIDTH = 4.2  # inches

ORIGINAL_STYLE = ("black", "")
_MARKERS = "osD^v<>pPX*h"


@dataclass(frozen=True)
class Curve:
    """A metric over discovery rates (fractions): mean over seeds and its band, the 95% confidence interval of the
    mean (NaN where one seed: no band); ``seeds``: how many seeds each point holds."""
    rates: np.ndarray
    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    seeds: np.ndarray | None = None


def method_style(method: str) -> dict:
    """Deterministic color and marker for a method: the fixed style it declares on its registration (``style=``),
    so every figure of every run reads the same, else one hashed into tab20 (crc32, not hash(): stable across
    processes)."""
    declared = METHODS.get(method).style if method in METHODS else None
    if method == ORIGINAL:
        color, marker = ORIGINAL_STYLE
    elif declared is not None:
        color, marker = declared
    else:
        key = zlib.crc32(method.encode())
        color, marker = plt.get_cmap("tab20")(key % 20), _MARKERS[key % len(_MARKERS)]
    return {"color": color, "marker": marker}


def _draw_original(ax, curve: Curve) -> None:
    style = method_style(ORIGINAL)
    ax.axhline(curve.mean[0], color=style["color"], linestyle="--", linewidth=1.2, label=ORIGINAL)
    if curve.hi[0] > curve.lo[0]:
        ax.axhspan(curve.lo[0], curve.hi[0], color=style["color"], alpha=0.08, linewidth=0)


def _draw_method(ax, method: str, curve: Curve) -> None:
    style = method_style(method)
    x = 100 * curve.rates
    ax.plot(x, curve.mean, label=method, linewidth=1.5, markersize=5, **style)
    ax.fill_between(x, curve.lo, curve.hi, color=style["color"], alpha=0.15, linewidth=0)


def _draw_panel(ax, n: int, curves: dict[str, Curve], rates: np.ndarray) -> None:
    for method, curve in curves.items():
        if method == ORIGINAL:
            _draw_original(ax, curve)
        else:
            _draw_method(ax, method, curve)
    ax.set_title(f"n = {n}")
    ax.set_xticks(100 * rates)
    ax.set_xticklabels([f"{100 * r:g}" for r in rates], fontsize=9)
    ax.set_xlabel("discovery rate |S_f| / |S_m| (%)")
    ax.grid(alpha=0.3)


def _legend_handles(axes) -> tuple[list, list]:
    """Union over panels, in first-seen order: a method missing from one panel still gets an entry."""
    seen: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    return list(seen.values()), list(seen)


def plot_metric(panels: dict[int, dict[str, Curve]], path: Path, title: str,
                ylabel: str = "accuracy (%)") -> Path:
    """One panel per manipulation size ``n``; ``panels[n]`` maps method -> curve, in legend order. The
    ``original`` entry is drawn as a dashed horizontal line (its curve has a single point)."""
    sizes = sorted(panels)
    rates = np.unique(np.concatenate([c.rates for curves in panels.values() for m, c in curves.items()
                                      if m != ORIGINAL] or [np.empty(0)]))
    width = max(7.0, 1.0 + PANEL_WIDTH * len(sizes))
    fig, axes = plt.subplots(1, len(sizes), figsize=(width, 4.8), sharey=True, squeeze=False,
                             layout="constrained")
    axes = axes[0]
    for ax, n in zip(axes, sizes):
        _draw_panel(ax, n, panels[n], rates)
    axes[0].set_ylabel(ylabel)
    handles, labels = _legend_handles(axes)
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), int(width / 1.15)), frameon=False)
    # About 12 characters of the title font per inch: wrap so a one-panel figure keeps its whole title.
    fig.suptitle("\n".join(textwrap.fill(line, int(12 * width)) for line in title.splitlines()), fontsize=11)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def level_style(name: str) -> dict:
    """Line style of a row of RUM's study: a base method solid in its own colour, ``rum^F m`` dashed in m's colour,
    full RUM in RUM's colour, a shuffle control dotted, the original dashed black."""
    if name == ORIGINAL:
        return {**method_style(ORIGINAL), "linestyle": "--", "marker": "o"}
    if name.startswith("rum^F "):
        style = {**method_style(name.split()[1]), "linestyle": "--"}
    elif name.startswith("rum"):
        style = {**method_style("rum"), "linestyle": "-"}
    else:
        style = {**method_style(name), "linestyle": "-"}
    if "(shuffle)" in name:
        style["linestyle"] = ":"
    return style


def plot_levels(curves: dict[str, Curve], levels: list[str], path: Path, title: str,
                ylabel: str = "ToW (%)") -> Path:
    """One panel: ``curves[name]`` over the levels (its ``rates`` are positions in ``levels``: 0 = the first),
    one line per name in legend order, its min-max band over seeds shaded."""
    width = max(7.0, 2.0 + 1.6 * len(levels))
    fig, ax = plt.subplots(figsize=(width, 5.2), layout="constrained")
    for name, curve in curves.items():
        style = level_style(name)
        ax.plot(curve.rates, curve.mean, label=name, linewidth=1.5, markersize=5, **style)
        if np.any(curve.hi > curve.lo):
            ax.fill_between(curve.rates, curve.lo, curve.hi, color=style["color"], alpha=0.12, linewidth=0)
    ax.set_xticks(range(len(levels)))
    ax.set_xticklabels(levels)
    ax.set_xlim(-0.3, len(levels) - 0.7)
    ax.set_xlabel("memorization level of the forget set")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 4), frameon=False, fontsize=8)
    fig.suptitle("\n".join(textwrap.fill(line, int(12 * width)) for line in title.splitlines()), fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_heatmaps(panels: dict[str, np.ndarray], rows: list[str], columns: list[str], path: Path, title: str,
                  vmin: float = 0.0, vmax: float = 100.0, cmap: str = "viridis",
                  annotations: dict[str, list[list[str]]] | None = None, xlabel: str = "discovery rate") -> Path:
    """REM-style maps: one panel per name in ``panels`` (in order), each a rows x columns heatmap with its value
    written in every cell (NaN: grey, ``n/a``), or the panel's ``annotations`` text when given. One colour scale,
    ``vmin``-``vmax``, for every panel."""
    names = list(panels)
    ncols = min(len(names), 3) or 1
    nrows = max(1, -(-len(names) // ncols))
    cell_w, cell_h = (1.0, 0.62) if annotations else (0.62, 0.5)
    width = max(7.0, ncols * (1.8 + cell_w * len(columns)) + 1.0)
    height = nrows * (0.9 + cell_h * len(rows)) + 1.4
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False, layout="constrained")
    colormap = plt.get_cmap(cmap).with_extremes(bad="lightgrey")
    image = None
    for ax, name in zip(axes.flat, names):
        matrix = np.asarray(panels[name], dtype=float)
        image = ax.imshow(np.ma.masked_invalid(matrix), cmap=colormap, vmin=vmin, vmax=vmax, aspect="auto")
        for (i, j), value in np.ndenumerate(matrix):
            if np.isfinite(value):
                shade = (value - vmin) / (vmax - vmin) if vmax > vmin else 0.5
                text = annotations[name][i][j] if annotations else f"{value:.0f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=7 if annotations else 8,
                        color="black" if shade > 0.6 else "white")
            else:
                ax.text(j, i, "n/a", ha="center", va="center", fontsize=7, color="black")
        ax.set_title(name, fontsize=10)
        ax.set_xticks(range(len(columns)))
        ax.set_xticklabels(columns, fontsize=8, rotation=45)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(rows, fontsize=8)
        ax.set_xlabel(xlabel, fontsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8)
    fig.suptitle("\n".join(textwrap.fill(line, int(12 * width)) for line in title.splitlines()), fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
