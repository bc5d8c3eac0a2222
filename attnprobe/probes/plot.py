"""Figures of probe results. matplotlib is imported here only, when a figure is asked for.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot state, no backend needed): save with
``figure.savefig(path)`` or display in a notebook.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .cross_attention import CrossAttentionMonotonicity
from .diagonality import SelfAttentionDiagonality
from .dominance import BranchDominance
from .frame_mapping import FrameMapping
from .gradient_maps import GradientMaps
from .report import ReversalReport
from .result import ProbeResult


def plot_result(result: ProbeResult) -> Any:
    """A ``matplotlib.figure.Figure`` for any probe result."""
    painters: dict[type, Callable[[Any], Any]] = {
        CrossAttentionMonotonicity: _cross_attention_figure,
        SelfAttentionDiagonality: _diagonality_figure,
        BranchDominance: _dominance_figure,
        FrameMapping: _frame_mapping_figure,
        GradientMaps: _gradient_maps_figure,
        ReversalReport: _report_figure,
    }
    return painters[type(result)](result)


def _figure(columns: int, rows: int = 1, width: float = 4.0, height: float = 3.2) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("plots need matplotlib: pip install 'attnprobe[plot]'") from error
    figure = Figure(figsize=(width * columns, height * rows), layout="constrained")
    return figure, figure.subplots(rows, columns, squeeze=False)


def _image(axes: Any, values: np.ndarray, title: str, xlabel: str, ylabel: str) -> None:
    axes.imshow(values, origin="lower", aspect="auto", interpolation="nearest")
    axes.set(title=title, xlabel=xlabel, ylabel=ylabel)


def _score_axes(axes: Any, threshold: float, title: str) -> None:
    from matplotlib.ticker import MaxNLocator

    axes.axhline(threshold, color="grey", linestyle=":", linewidth=1)
    axes.axhline(-threshold, color="grey", linestyle=":", linewidth=1)
    axes.set(title=title, ylim=(-1.05, 1.05), xlabel="encoder block")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))


def _cross_attention_panel(axes: Any, result: CrossAttentionMonotonicity) -> None:
    if result.example is not None and result.example.size:
        _image(axes, result.example, f"{result.sites[-1]} (sequence 0)", "encoder frame", "label")


def _cross_attention_figure(result: CrossAttentionMonotonicity) -> Any:
    figure, axes = _figure(2)
    _cross_attention_panel(axes[0, 0], result)
    scores = result.scores
    for head in range(scores.shape[1]):
        axes[0, 1].plot(range(len(result.sites)), scores[:, head], marker="o", label=f"head {head}")
    _score_axes(axes[0, 1], result.threshold, f"monotonicity: {result.verdict}")
    axes[0, 1].set_xlabel("decoder layer")
    return figure


def _diagonality_figure(result: SelfAttentionDiagonality) -> Any:
    figure, axes = _figure(2)
    axes[0, 0].plot(result.layers, result.layer_scores, marker="o")
    _score_axes(axes[0, 0], result.threshold, "self-attention diagonality")
    histogram = np.nanmean(result.histogram, axis=1)
    axes[0, 1].imshow(histogram, origin="lower", aspect="auto", interpolation="nearest",
                      extent=(-result.max_offset - 0.5, result.max_offset + 0.5,
                              -0.5, len(result.layers) - 0.5))
    axes[0, 1].set(title="attention per offset (heads averaged)", xlabel="key - query frame",
                   ylabel="layer")
    return figure


def _dominance_panel(axes: Any, result: BranchDominance) -> None:
    from matplotlib.ticker import MaxNLocator

    for column, branch in enumerate(result.branches):
        axes.plot(result.layers, result.ratio[:, column], marker="o", label=branch)
    axes.plot(result.layers, result.mean_survival, color="black", linestyle="--",
              label="cos(in, out)")
    axes.axhline(1.0, color="grey", linestyle=":", linewidth=1)
    axes.set(title="branch norm / residual norm", xlabel="encoder block")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.legend(fontsize="small")


def _dominance_figure(result: BranchDominance) -> Any:
    figure, axes = _figure(1, width=5.0)
    _dominance_panel(axes[0, 0], result)
    return figure


def _frame_mapping_figure(result: FrameMapping, sequence: int = 0) -> Any:
    maps = result.maps[sequence]
    figure, axes = _figure(len(result.layers) + 1, width=3.0)
    for column, layer in enumerate(result.layers):
        _image(axes[0, column], maps[column], f"encoder.{layer}", "input frame", "output frame")
    axes[0, -1].plot(result.layers, result.scores, marker="o")
    _score_axes(axes[0, -1], result.threshold, result.verdict)
    return figure


def _gradient_maps_figure(result: GradientMaps, sequence: int = 0) -> Any:
    maps = result.maps[sequence]
    figure, axes = _figure(len(result.sites) + 1, width=3.0)
    for column, site in enumerate(result.sites):
        _image(axes[0, column], maps[column], site, "frame", "label")
    axes[0, -1].plot(range(len(result.sites)), result.scores, marker="o")
    _score_axes(axes[0, -1], result.threshold, "monotonicity (0 = G_0)")
    return figure


def _report_figure(report: ReversalReport) -> Any:
    figure, axes = _figure(3)
    mapping = report.frame_mapping
    if report.cross_attention is not None:
        _cross_attention_panel(axes[0, 0], report.cross_attention)
    else:
        _image(axes[0, 0], mapping.maps[0][-1], f"frame map encoder.{mapping.layers[-1]}",
               "input frame", "output frame")
    score_axes = axes[0, 1]
    score_axes.plot(mapping.layers, mapping.scores, marker="o", label="frame mapping")
    if report.gradient_maps is not None:
        layers = [int(site.rsplit(".", 1)[-1]) for site in report.gradient_maps.sites[1:]]
        score_axes.plot(layers, report.gradient_maps.scores[1:], marker="s",
                        label="gradient-map monotonicity")
    if report.diagonality is not None:
        score_axes.plot(report.diagonality.layers, report.diagonality.layer_scores, marker="^",
                        label="self-attention diagonality")
    _score_axes(score_axes, mapping.threshold, report.verdict)
    score_axes.legend(fontsize="small")
    if report.dominance is not None:
        _dominance_panel(axes[0, 2], report.dominance)
    return figure
