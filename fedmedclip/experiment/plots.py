"""PNG plots for the experiment harness and the demo: small line panels and a reliability diagram.

matplotlib with the Agg backend (no display, no GUI toolkit): the plots are files beside the reports. Every
function takes plain numbers, so the callers decide what is plotted and these stay generic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: never try to open a window

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

Series = Mapping[str, Sequence[float]]  # legend label → y per round (round 1, 2, …)
Markers = Mapping[str, tuple[float, float]]  # legend label → one (x, y) point drawn as a star


def line_panels(
    path: Path,
    title: str,
    panels: Mapping[str, Series],
    *,
    ylabel: str,
    xlabel: str = "round",
    markers: Mapping[str, Markers] | None = None,
    log_y: bool = False,
    percent: bool = False,
) -> Path:
    """One subplot per panel (e.g. per site), one line per series; returns ``path``."""
    names = list(panels) or ["(no data)"]
    columns = min(len(names), 3)
    rows = math.ceil(len(names) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.4 * rows), squeeze=False)
    for index, name in enumerate(names):
        axis = axes[index // columns][index % columns]
        for label, values in panels.get(name, {}).items():
            if not values:
                continue
            scale = 100.0 if percent else 1.0
            axis.plot(range(1, len(values) + 1), [scale * v for v in values], marker="o", markersize=3, label=label)
        for label, (x, y) in (markers or {}).get(name, {}).items():
            axis.plot([x], [100.0 * y if percent else y], marker="*", markersize=12, linestyle="none", label=label)
        axis.set_title(name)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole numbers
        axis.set_xlabel(xlabel)
        axis.set_ylabel(f"{ylabel} (%)" if percent else ylabel)
        if log_y:
            axis.set_yscale("log")
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7)
    for index in range(len(names), rows * columns):
        axes[index // columns][index % columns].set_visible(False)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def reliability_diagram(path: Path, title: str, curves: Mapping[str, Sequence[Mapping[str, float]]]) -> Path:
    """Accuracy against mean confidence per confidence bin, one line per curve, with the diagonal.

    ``curves`` maps a label (e.g. "uncalibrated, ECE 12.3%") to ``reliability_bins`` output.
    """
    figure, axis = plt.subplots(figsize=(4.8, 4.6))
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    for label, bins in curves.items():
        points = [(b["confidence"], b["accuracy"]) for b in bins if b["count"] > 0]
        if points:
            axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_xlabel("confidence (top-class probability)")
    axis.set_ylabel("accuracy")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
