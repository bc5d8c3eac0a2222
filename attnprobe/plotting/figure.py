"""Figures without pyplot state: a ``matplotlib.figure.Figure`` per picture, rendered to PNG on
request. matplotlib is imported only here, when a figure is asked for."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

PLOT_HINT = "pip install 'attnprobe[plot]'"
DPI = 110
BRANCH_COLOURS = {"ffn1": "tab:blue", "self_attn": "tab:red", "conv": "tab:green",
                  "ffn2": "tab:purple", "ffn": "tab:blue"}


def new_figure(width: float, height: float, columns: int = 1) -> tuple[Any, list[Any]]:
    """A constrained-layout figure of ``width`` x ``height`` inches and its ``columns`` axes.

    Raises:
        ImportError: matplotlib is missing; the message names the extra that installs it.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(f"figures need matplotlib: {PLOT_HINT}") from error
    figure = Figure(figsize=(width, height), layout="constrained")
    return figure, list(figure.subplots(1, columns, squeeze=False)[0])


def png_bytes(figure: Any) -> bytes:
    """The figure as PNG."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def height_for_labels(count: int) -> float:
    """Inches for a panel with one row per label."""
    return min(6.5, max(3.4, 1.6 + 0.16 * count))


def label_axis(axes: Any, tokens: Sequence[str] | None, count: int) -> None:
    """Token strings as y tick labels (``␣`` for a space), smaller as there are more of them."""
    if tokens is None or len(tokens) != count:
        return
    names = [token.replace("Ġ", "").replace("▁", "") if token.strip() else "␣"
             for token in tokens]
    axes.set_yticks(range(count), names, fontsize=8 if count <= 30 else 6 if count <= 70 else 4)


def time_extent(frames: int, seconds_per_frame: float | None) -> tuple[float, str]:
    """The right edge of ``frames`` frames and the axis label: seconds when the frame duration is
    known, frame indices otherwise."""
    if seconds_per_frame is None:
        return float(frames), "frame"
    return frames * seconds_per_frame, "time (s)"
