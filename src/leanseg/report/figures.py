"""The report's plots, drawn with matplotlib (the optional ``report`` extra) as PNG bytes.

matplotlib is imported here only, inside :func:`require_matplotlib`, so the rest of leanseg
stays torch-only. Figures are made with :class:`matplotlib.figure.Figure` and the Agg canvas
directly, never through ``pyplot``: nothing global (backend, open figures) changes in the caller,
and no window can open. PNGs carry no software metadata, so nothing but pixels goes in the report.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from leanseg.config import ConfigError

INSTALL_HINT = 'pip install "leanseg[report]"'
DPI = 100


class MissingPlotLibrary(ConfigError):
    """matplotlib is not installed; the message says how to install it."""


def require_matplotlib() -> Any:
    """The ``matplotlib.figure`` module, or :class:`MissingPlotLibrary` naming the install."""
    try:
        from matplotlib import figure
    except ImportError:
        raise MissingPlotLibrary(
            f"leanseg report draws its plots with matplotlib, which is not installed; "
            f"install it with: {INSTALL_HINT}"
        ) from None
    return figure


def _new_figure(width: float, height: float) -> Any:
    return require_matplotlib().Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


@dataclass(frozen=True)
class Series:
    """One line of a plot: ``y`` against ``x`` with a legend label."""

    label: str
    x: Sequence[float]
    y: Sequence[float]


def training_curves(
    losses: Sequence[Series], lrs: Sequence[Series], accuracy: Sequence[Series]
) -> bytes:
    """Three panels side by side: training losses, learning rate, validation accuracy.

    Args:
        losses: loss terms against iteration (log scale when all positive).
        lrs: learning rate(s) against iteration.
        accuracy: validation scores in [0, 1] against iteration, drawn in percent.
    """
    figure = _new_figure(12.0, 3.4)
    axes = figure.subplots(1, 3)
    panels = (
        (axes[0], losses, "training loss", 1.0),
        (axes[1], lrs, "learning rate", 1.0),
        (axes[2], accuracy, "validation (%)", 100.0),
    )
    for ax, series, title, scale in panels:
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        drawn = [s for s in series if len(s.x)]
        if not drawn:
            ax.text(0.5, 0.5, "nothing logged", ha="center", va="center", transform=ax.transAxes)
            continue
        for s in drawn:
            values = [scale * v for v in s.y]
            marker = "o" if len(values) < 30 else None
            ax.plot(list(s.x), values, label=s.label, marker=marker, markersize=3)
        ys = [v for s in drawn for v in s.y if v is not None and math.isfinite(v)]
        if title != "validation (%)" and ys and min(ys) > 0 and max(ys) / min(ys) > 20:
            ax.set_yscale("log")
        ax.legend(fontsize="small")
    return _png(figure)


def class_iou_bars(class_names: Sequence[str], iou: Sequence[float | None]) -> bytes:
    """Horizontal bars of per-class IoU in percent; absent classes (None / NaN) are marked."""
    height = max(2.0, 0.28 * len(class_names) + 1.0)
    figure = _new_figure(6.5, height)
    ax = figure.subplots()
    values = [_finite_or_nan(v) for v in iou]
    positions = np.arange(len(class_names))
    shown = [0.0 if math.isnan(v) else 100 * v for v in values]
    ax.barh(positions, shown, color="#3b75af")
    for y, value in zip(positions, values, strict=True):
        text = "absent" if math.isnan(value) else f"{100 * value:.1f}"
        ax.text(1 if math.isnan(value) else 100 * value + 1, y, text, va="center", fontsize=8)
    ax.set_yticks(positions, labels=list(class_names), fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 110)
    ax.set_xlabel("IoU (%)")
    ax.grid(axis="x", alpha=0.3)
    return _png(figure)


def confusion_heatmap(confusion: Sequence[Sequence[int]], class_names: Sequence[str]) -> bytes:
    """The confusion matrix, each row divided by its ground-truth pixel count (recall).

    Rows are ground truth, columns predictions. Cells carry their percentage when there are at
    most 20 classes; a row without ground truth stays empty (white).
    """
    matrix = np.asarray(confusion, dtype=np.float64)
    totals = matrix.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rows = np.where(totals > 0, matrix / totals, np.nan)
    count = len(class_names)
    side = max(3.5, 0.42 * count + 2.0)
    figure = _new_figure(side + 1.0, side)
    ax = figure.subplots()
    image = ax.imshow(100 * rows, cmap="viridis", vmin=0, vmax=100)
    figure.colorbar(image, ax=ax, label="% of the true class's pixels", shrink=0.8)
    ticks = np.arange(count)
    ax.set_xticks(ticks, labels=list(class_names), rotation=60, ha="right", fontsize=8)
    ax.set_yticks(ticks, labels=list(class_names), fontsize=8)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    if count <= 20:
        for (row, col), value in np.ndenumerate(rows):
            if not math.isnan(value) and value >= 0.005:
                colour = "black" if value > 0.6 else "white"
                ax.text(col, row, f"{100 * value:.0f}", ha="center", va="center", fontsize=7,
                        color=colour)  # fmt: skip
    return _png(figure)


@dataclass(frozen=True)
class Point:
    """One run in the accuracy-vs-latency plot."""

    label: str
    latency_ms: float
    accuracy: float


def accuracy_vs_latency(points: Sequence[Point], accuracy_name: str = "mIoU") -> bytes:
    """Each run as a labelled point: latency (ms, x) against accuracy (%, y)."""
    figure = _new_figure(6.5, 4.2)
    ax = figure.subplots()
    for point in points:
        ax.scatter([point.latency_ms], [100 * point.accuracy], s=40)
        ax.annotate(
            point.label,
            (point.latency_ms, 100 * point.accuracy),
            textcoords="offset points",
            xytext=(5, 4),
            fontsize=8,
        )
    ax.set_xlabel("latency (ms, median)")
    ax.set_ylabel(f"{accuracy_name} (%)")
    ax.grid(alpha=0.3)
    ax.margins(0.2)
    return _png(figure)


def _finite_or_nan(value: float | None) -> float:
    return math.nan if value is None else float(value)
