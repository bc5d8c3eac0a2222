"""Picture of an alignment: the log score matrix over time, every label's span (the Viterbi
path), the aligned word boundaries, and reference boundaries where known."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .figure import height_for_labels, label_axis, new_figure, time_extent


def plot_alignment(alignment: Any, ax: Any = None, *,
                   reference: Sequence[tuple[str, float, float]] | None = None,
                   duration_s: float | None = None, tokens: Sequence[str] | None = None,
                   title: str | None = None) -> Any:
    """Draw ``alignment`` on ``ax`` (a new figure when ``None``) and return the figure.

    Args:
        alignment: an :class:`attnprobe.alignment.Alignment`.
        reference: reference words ``(word, start_s, end_s)``, drawn as dashed lines.
        duration_s: the audio's length (default: the alignment's frames). An alignment without
            a known frame shift is drawn over frame indices.
        tokens: y tick labels, one per label (default: the labels' text).
        title: default: the method and the number of words.
    """
    from matplotlib.lines import Line2D

    labels = len(alignment.labels)
    # Positions in seconds where the frame shift is known, in frames otherwise.
    seconds = alignment.seconds_per_frame or 1.0
    end, unit = time_extent(alignment.num_frames, alignment.seconds_per_frame)
    if ax is None:
        width = 2.0 + 2.2 * end if alignment.in_seconds else 2.0 + end / 20
        figure, (ax,) = new_figure(max(7.0, min(16.0, width)), height_for_labels(labels) + 0.6)
    if alignment.scores is not None:
        scores = np.where(np.isfinite(alignment.scores), alignment.scores, np.nan)
        image = ax.imshow(scores, aspect="auto", origin="upper", interpolation="nearest",
                          cmap="viridis",
                          extent=(0.0, scores.shape[1] * seconds, labels - 0.5, -0.5))
        ax.figure.colorbar(image, ax=ax, label="log score")
    for label in alignment.labels:
        ax.hlines(label.index, label.start_frame * seconds, label.end_frame * seconds,
                  color="white", linewidth=2.5)
    legend = [Line2D([], [], color="white", linewidth=2.5, label="label span (Viterbi path)"),
              Line2D([], [], color="orange", label="aligned word boundary")]
    for word in alignment.words:
        ax.axvline(word.start_frame * seconds, color="orange", linewidth=1.0)
        ax.axvline(word.end_frame * seconds, color="orange", linewidth=1.0)
    if reference is not None:
        for _, start, end in reference:
            ax.axvline(start, color="cyan", linestyle="--", linewidth=0.9)
            ax.axvline(end, color="cyan", linestyle="--", linewidth=0.9)
        legend.append(Line2D([], [], color="cyan", linestyle="--",
                             label="reference word boundary"))
    words_axis = ax.secondary_xaxis("top")
    words_axis.set_xticks([(word.start_frame + word.end_frame) / 2 * seconds
                           for word in alignment.words],
                          [word.text for word in alignment.words], fontsize=8, rotation=30,
                          ha="left")
    label_axis(ax, tokens if tokens is not None else [label.text for label in alignment.labels],
               labels)
    ax.set_xlim(0.0, max(end, duration_s or 0.0))
    ax.set_ylim(labels - 0.5, -0.5)
    ax.set(xlabel=unit, ylabel="label")
    ax.set_title(title or f"{alignment.method}: {len(alignment.words)} words")
    # A grey key, so that the white path line shows in it.
    key = ax.figure.legend(handles=legend, loc="outside lower center", ncol=len(legend),
                           fontsize="small", facecolor="#9a9a9a", framealpha=1.0)
    key.get_frame().set_edgecolor("none")
    return ax.figure
