"""Pictures and terminal tables of evaluation results: confusion heatmaps and per-class F1 bars.

Figures are built with `matplotlib.figure.Figure` and the Agg canvas, never pyplot: no global figure
state, safe from worker threads, no display needed. Files are written atomically (a temporary file in the
same folder, then a rename), so a reader never sees half a PNG.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from evals.metrics import ClassMetrics, Confusion

DPI = 120
#: Longer label names are cut to this many characters (the last one an ellipsis).
MAX_LABEL_CHARS = 28


def chosen_labels(confusion: Confusion, max_labels: int) -> list[str]:
    """Return the labels a confusion picture shows: all of them, or those of the largest confusions.

    With more than `max_labels` labels, the off-diagonal cells are taken largest first and both of their
    labels added while there is room; a matrix without confusions shows its most frequent gold labels.
    The chosen labels keep their order in `confusion.labels`.
    """
    if len(confusion.labels) <= max_labels:
        return list(confusion.labels)
    chosen: set[str] = set()
    for gold, predicted, _ in confusion.top_confusions(n=len(confusion.labels) ** 2):
        needed = {gold, predicted} - chosen
        if len(chosen) + len(needed) <= max_labels:
            chosen |= needed
        if len(chosen) >= max_labels:
            break
    if not chosen:
        totals = np.asarray(confusion.matrix).sum(axis=1)
        ranked = sorted(range(len(confusion.labels)), key=lambda i: (-totals[i], i))
        chosen = {confusion.labels[i] for i in ranked[:max_labels]}
    return [label for label in confusion.labels if label in chosen]


def confusion_png(confusion: Confusion, path: Path, *, title: str = "", max_labels: int = 20) -> Path:
    """Draw a confusion heatmap (row-normalised colours, raw counts in the cells) to a PNG; return `path`.

    With more than `max_labels` labels only the labels of the top confusions are drawn (`chosen_labels`),
    coloured by the share of each gold class's items, and the title says so.
    """
    labels = chosen_labels(confusion, max_labels)
    index = [confusion.labels.index(label) for label in labels]
    full = np.asarray(confusion.matrix, dtype=float).reshape(len(confusion.labels), len(confusion.labels))
    row_totals = full.sum(axis=1)
    counts = full[np.ix_(index, index)]
    # shares of the whole gold row, so a cropped matrix still shows how much of a class goes astray
    shares = counts / np.maximum(row_totals[index], 1)[:, None]
    size = len(labels)
    if size < len(confusion.labels):
        title = f"{title} — top confusions of {len(confusion.labels)} classes ({size} shown)".strip(" —")
    inches = min(24.0, 2.5 + 0.5 * size)
    figure = Figure(figsize=(inches + 1.5, inches), dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, aspect="equal")
    colorbar = figure.colorbar(image, ax=axes, shrink=0.8)
    colorbar.set_label("share of the gold class")
    names = [_short(label) for label in labels]
    font = max(5.0, min(10.0, 160 / max(size, 1)))
    axes.set_xticks(range(size), names, rotation=60, ha="right", rotation_mode="anchor", fontsize=font)
    axes.set_yticks(range(size), names, fontsize=font)
    axes.set_xlabel("predicted")
    axes.set_ylabel("gold")
    for i in range(size):
        for j in range(size):
            if counts[i, j]:
                colour = "white" if shares[i, j] > 0.5 else "black"
                axes.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", color=colour, fontsize=font)
    if title:
        axes.set_title(title)
    return _save(figure, path)


def per_class_f1_png(
    per_class: Sequence[ClassMetrics], path: Path, *, title: str = "", max_bars: int = 40
) -> Path:
    """Draw per-class F1 as horizontal bars, worst at the top, support in each bar's label; return `path`.

    With more than `max_bars` classes only the worst `max_bars` are drawn, and the title says so.
    """
    rows = sorted(per_class, key=lambda row: (row.f1, row.label))
    if len(rows) > max_bars:
        title = f"{title} — worst {max_bars} of {len(rows)} classes".strip(" —")
        rows = rows[:max_bars]
    height = min(30.0, 1.5 + 0.3 * max(len(rows), 1))
    figure = Figure(figsize=(8.0, height), dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    positions = np.arange(len(rows))
    axes.barh(positions, [row.f1 for row in rows], color="tab:blue")
    axes.set_yticks(positions, [f"{_short(row.label)} (n={row.support})" for row in rows], fontsize=8)
    axes.margins(y=0.01)
    axes.invert_yaxis()
    axes.set_xlim(0.0, 1.08)
    axes.set_xlabel("F1")
    for position, row in enumerate(rows):
        axes.text(row.f1 + 0.01, position, f"{row.f1:.2f}", va="center", fontsize=7)
    if not rows:
        axes.text(0.5, 0.5, "no per-class metrics", ha="center", va="center", transform=axes.transAxes)
    if title:
        axes.set_title(title)
    return _save(figure, path)


def confusion_table(confusion: Confusion, *, max_labels: int = 12) -> list[list[str]]:
    """Return rows for a terminal table, header first: the full matrix, or the top confusions if large.

    Up to `max_labels` labels: ["gold \\ predicted", *labels], then one row per gold label. More: ["gold",
    "predicted", "count"], then the `max_labels` largest off-diagonal cells.
    """
    if len(confusion.labels) <= max_labels:
        header = ["gold \\ predicted", *confusion.labels]
        rows = [
            [label, *(str(c) for c in row)]
            for label, row in zip(confusion.labels, confusion.matrix, strict=True)
        ]
        return [header, *rows]
    top = confusion.top_confusions(n=max_labels)
    return [
        ["gold", "predicted", "count"],
        *([gold, predicted, str(count)] for gold, predicted, count in top),
    ]


def _short(label: str) -> str:
    return label if len(label) <= MAX_LABEL_CHARS else label[: MAX_LABEL_CHARS - 1] + "…"


def _save(figure: Figure, path: Path) -> Path:
    """Write the figure as PNG to a temporary file beside `path`, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # not tempfile.mkstemp: its files are private (0600); this one gets the umask's mode like any file
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with temporary.open("xb") as file:
            figure.savefig(file, format="png", dpi=DPI)
        temporary.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    return path
