"""Plots of pruning logs: error (or accuracy) against the fraction pruned, per layer.

Reads the CSV that `keras_prune.runlog.RunLog` writes and the original tool's
plotlog (``LayerNo,Retained%,TestError`` with ``l,stop`` rows) alike, and draws one
line per layer, as in the sensitivity figures of Han et al. 2015. Uses matplotlib's
Agg canvas directly, so it never touches the user's pyplot backend.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from keras_prune.errors import InputError
from keras_prune.storage import atomic_path, read_text

__all__ = [
    "LogCurve",
    "METRICS",
    "plot_curves",
    "plot_log",
    "read_log",
]

METRICS = ("error", "accuracy")
"""What the y-axis can show: error or accuracy, in percent."""


@dataclass(frozen=True)
class LogCurve:
    """One layer's points from a log.

    Attributes:
        label: the layer, e.g. ``"Layer8 fc1"``.
        fractions: fraction of the layer's weights pruned (1 - retained), ascending.
        errors: the error (%) at each fraction.
    """

    label: str
    fractions: tuple[float, ...]
    errors: tuple[float, ...]


def read_log(path: str | Path) -> tuple[list[LogCurve], str]:
    """Reads a run or sensitivity CSV (or an original plotlog) into per-layer curves.

    Rows whose ``Retained%`` is not a number (``stop`` rows) are skipped. Layers keep
    the order of their first row.

    Args:
        path: the CSV file.

    Returns:
        The curves, and the name of the error column (``TestError`` or ``ValError``).

    Raises:
        InputError: the file is missing, or lacks the ``LayerNo``, ``Retained%`` and
            an error column.
    """
    path = Path(path)
    text = read_text(path, "log file")
    rows = list(csv.DictReader(text.splitlines()))
    columns = rows[0].keys() if rows else []
    error_column = next((c for c in ("TestError", "ValError") if c in columns), None)
    if not rows or "LayerNo" not in columns or "Retained%" not in columns or error_column is None:
        raise InputError(
            f"{path} is not a pruning log: it needs the columns LayerNo, Retained% and "
            "TestError or ValError, and at least one row"
        )
    points: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        try:
            retained, error = float(row["Retained%"]), float(row[error_column])
        except (TypeError, ValueError):
            continue
        number, name = row["LayerNo"], row.get("Layer") or ""
        label = f"Layer{number}" if number.isdigit() else number
        if name and name != number:
            label = f"{label} {name}"
        points.setdefault(label, []).append((1.0 - retained, error))
    curves = []
    for label, pairs in points.items():
        pairs.sort()
        curves.append(LogCurve(label, tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)))
    if not curves:
        raise InputError(f"{path} has no rows with numbers to plot")
    return curves, error_column


def plot_curves(
    curves: list[LogCurve],
    out: str | Path,
    metric: str = "accuracy",
    split: str = "validation",
    title: str | None = None,
) -> Path:
    """Draws error or accuracy against fraction pruned, one line per layer, to a PNG.

    Args:
        curves: the layers' points (`read_log`).
        out: the PNG file to write (atomically).
        metric: ``"accuracy"`` or ``"error"`` (both in percent).
        split: the split the figures come from, for the axis label.
        title: the figure title; None: none.

    Returns:
        `out`.

    Example:

    ```python
    curves, column = read_log("logs/sensitivity.csv")
    plot_curves(curves, "docs/sensitivity.png", metric="accuracy")
    ```
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if metric not in METRICS:
        raise InputError(f"unknown metric '{metric}'; choose one of: {', '.join(METRICS)}")
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise InputError(f"plots are written as PNG; the file name must end in .png, got {out}")
    figure = Figure(figsize=(6.4, 4.2), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for curve in curves:
        values = [100.0 - e for e in curve.errors] if metric == "accuracy" else list(curve.errors)
        axes.plot([100.0 * f for f in curve.fractions], values, marker="o", markersize=3, label=curve.label)
    axes.set_xlabel("weights pruned away (%)")
    axes.set_ylabel(f"{split} {metric} (%)")
    axes.set_xlim(0, 100)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    if title:
        axes.set_title(title, fontsize=10)
    figure.tight_layout()
    with atomic_path(out, suffix=".png") as tmp:
        figure.savefig(tmp, format="png")
    return out


def plot_log(log: str | Path, out: str | Path | None = None, metric: str = "accuracy", title: str | None = None) -> Path:
    """Draws a run's or a sensitivity sweep's CSV log as a PNG.

    Args:
        log: the CSV (`keras_prune.runlog.RunLog`) or an original plotlog.
        out: the PNG; default: the log's name with ``.png``.
        metric: ``"accuracy"`` or ``"error"``.
        title: the figure title; default: the log's file name.

    Returns:
        The PNG's path.

    Example:

    ```python
    plot_log("logs/localMain.csv", metric="error")  # writes logs/localMain.png
    ```
    """
    log = Path(log)
    curves, column = read_log(log)
    split = "test" if column == "TestError" else "validation"
    return plot_curves(curves, out or log.with_suffix(".png"), metric, split, title or log.name)
