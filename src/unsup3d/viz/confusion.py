"""A confusion matrix (ground-truth rows, predicted or aligned columns) drawn as an image."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from unsup3d.viz.colors import to_numpy
from unsup3d.viz.scene import new_figure, save_figure


def row_normalize(confusion: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (the recall of each ground-truth class); empty rows stay zero."""
    m = np.asarray(confusion, dtype=np.float64)
    sums = m.sum(axis=1, keepdims=True)
    return np.divide(m, sums, out=np.zeros_like(m), where=sums > 0)


def draw_confusion(
    confusion: np.ndarray,
    class_names: Sequence[str] | None = None,
    path: str | Path | None = None,
    *,
    normalize: bool = True,
    title: str | None = None,
    annotate: bool | None = None,
    cmap: str = "Blues",
    dpi: int = 100,
) -> Figure:
    """Draw a (C, C) confusion matrix, rows = ground-truth class, columns = predicted / aligned class.

    ``normalize`` divides each row by its sum (colour scale 0-1); otherwise raw counts are shown.
    Class names label both axes (indices when None). ``annotate`` writes each cell's value (default:
    when C <= 20). Writes a PNG when ``path`` is given; returns a ``Figure`` on an Agg canvas, outside
    pyplot: nothing to close. The matrix shown is ``fig.axes[0].images[0].get_array()``.
    """
    m = to_numpy(confusion)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"draw_confusion: confusion must be a square (C, C) matrix, got shape {m.shape}")
    c = m.shape[0]
    names = [str(i) for i in range(c)] if class_names is None else [str(n) for n in class_names]
    if len(names) != c:
        raise ValueError(f"draw_confusion: {len(names)} class names for a {c}x{c} matrix")
    shown = row_normalize(m) if normalize else m.astype(np.float64)
    vmax = 1.0 if normalize else max(float(shown.max(initial=0.0)), 1.0)

    side = float(np.clip(2.5 + 0.42 * c, 5.0, 16.0))
    fig = new_figure((side + 1.2, side), dpi)
    ax = fig.add_subplot()
    image = ax.imshow(shown, cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of the row" if normalize else "count")
    fontsize = float(np.clip(14.0 - 0.3 * c, 6.0, 11.0))
    ax.set_xticks(np.arange(c), labels=names, rotation=90, fontsize=fontsize)
    ax.set_yticks(np.arange(c), labels=names, fontsize=fontsize)
    ax.set_xlabel("predicted (aligned) class")
    ax.set_ylabel("ground-truth class")
    if annotate if annotate is not None else c <= 20:
        for (i, j), value in np.ndenumerate(shown):
            if value == 0:  # blank zeros keep a 20-class matrix legible
                continue
            text = f"{value:.2f}" if normalize else f"{value:.0f}"
            # Dark text on light cells, white on dark ones, so every value stays readable.
            colour = "white" if value > 0.6 * vmax else "black"
            ax.text(j, i, text, ha="center", va="center", fontsize=fontsize * 0.8, color=colour)
    if title:
        ax.set_title(title)
    if path is not None:
        save_figure(fig, path)
    return fig
