"""Picture of an alignment: the score matrix over time, the path on it, and the word boundaries."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .result import Alignment

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def plot_alignment(alignment: Alignment, ax: Axes | None = None) -> Figure:
    """Draw ``alignment`` on ``ax`` (a new figure when ``None``) and return the figure.

    The score matrix, when the alignment carries one, is shown as labels (rows, top to bottom)
    against time in seconds; the path is drawn as dots at frame centres, every label span as a
    bar, and word starts / ends as vertical lines with the word above the plot.
    """
    if ax is None:
        from matplotlib.figure import Figure

        figure = Figure(figsize=(min(20.0, max(6.0, 0.5 + 2.0 * alignment.duration_s)), 4.0))
        ax = figure.add_subplot()
    seconds = alignment.seconds_per_frame
    num_labels = len(alignment.labels)
    if alignment.scores is not None:
        finite = np.where(np.isfinite(alignment.scores), alignment.scores, np.nan)
        image = ax.imshow(
            finite,
            aspect="auto",
            origin="upper",
            interpolation="nearest",
            extent=(0.0, finite.shape[1] * seconds, num_labels - 0.5, -0.5),
            cmap="viridis",
        )
        ax.figure.colorbar(image, ax=ax, label="score")
    if alignment.path is not None and len(alignment.path):
        ax.plot(
            (alignment.path[:, 1] + 0.5) * seconds,
            alignment.path[:, 0],
            ".",
            color="red",
            markersize=3,
            label="path",
        )
    for label in alignment.labels:
        ax.hlines(label.index, label.start_s, label.end_s, color="white", linewidth=2)
    for word in alignment.words:
        ax.axvline(word.start_s, color="orange", linewidth=0.8)
        ax.axvline(word.end_s, color="orange", linewidth=0.8, linestyle="--")
        ax.text(
            word.centre_s,
            1.01,
            word.text,
            transform=ax.get_xaxis_transform(),
            ha="center",
            va="bottom",
            fontsize=8,
            rotation=45,
        )
    ax.set_xlim(0.0, alignment.duration_s)
    ax.set_ylim(num_labels - 0.5, -0.5)
    ax.set_yticks(range(num_labels))
    ax.set_yticklabels([label.text for label in alignment.labels], fontsize=7)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("label")
    ax.set_title(alignment.method, pad=24)
    return ax.figure
