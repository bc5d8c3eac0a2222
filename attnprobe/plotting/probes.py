"""One figure per reversal-probe result: what ``result.plot()`` returns.

Axes count frames (the probes do not know seconds); the report's figures on a time axis in
seconds are :func:`attnprobe.reporting.figures.figures_of`. Both draw the same panels
(:mod:`.panels`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import panels
from .figure import new_figure


def probe_figure(result: Any) -> Any:
    """A ``matplotlib.figure.Figure`` for any probe result (chosen by the result's class name,
    so that plotting imports no probe module)."""
    painters: dict[str, Callable[[Any], Any]] = {
        "CrossAttentionMonotonicity": cross_attention_figure,
        "SelfAttentionDiagonality": diagonality_figure,
        "BranchDominance": dominance_figure,
        "FrameMapping": frame_mapping_figure,
        "GradientMaps": gradient_maps_figure,
        "ReversalReport": report_figure,
    }
    painter = painters.get(type(result).__name__)
    if painter is None:
        raise TypeError(f"no figure for {type(result).__name__}; figures exist for "
                        f"{', '.join(painters)}")
    return painter(result)


def cross_attention_figure(result: Any) -> Any:
    figure, (map_axes, score_axes) = new_figure(9.0, 3.6, columns=2)
    figure.colorbar(panels.cross_attention(map_axes, result), ax=map_axes,
                    label="attention weight")
    for head in range(result.scores.shape[1]):
        score_axes.plot(range(len(result.sites)), result.scores[:, head], marker="o",
                        label=f"head {head}")
    panels.score_zones(score_axes, result.threshold)
    score_axes.set(title=f"monotonicity: {result.verdict}", xlabel="decoder layer")
    return figure


def diagonality_figure(result: Any) -> Any:
    figure, (score_axes, histogram_axes) = new_figure(8.0, 3.2, columns=2)
    panels.block_scores(score_axes, diagonality=result, reversed_at=result.reversed_at,
                        title="self-attention diagonality")
    panels.offset_histogram(histogram_axes, result)
    return figure


def dominance_figure(result: Any) -> Any:
    figure, (ratio_axes, survival_axes) = new_figure(9.0, 3.6, columns=2)
    panels.dominance_ratios(ratio_axes, result)
    panels.survival(survival_axes, result)
    return figure


def frame_mapping_figure(result: Any, sequence: int = 0) -> Any:
    maps = result.maps[sequence]
    figure, axes = new_figure(3.0 * (len(result.layers) + 1) + 1.5, 3.2,
                              columns=len(result.layers) + 1)
    for column, layer in enumerate(result.layers):
        panels.dependency_map(axes[column], maps[column], None, None,
                              f"encoder.{layer}: {result.per_sequence[sequence][column]:+.2f}")
    panels.block_scores(axes[-1], frame_mapping=result, reversed_at=result.reversed_at,
                        title=result.verdict)
    return figure


def gradient_maps_figure(result: Any, sequence: int = 0) -> Any:
    maps = result.maps[sequence]
    figure, axes = new_figure(3.0 * (len(result.sites) + 1) + 1.5, 3.2,
                              columns=len(result.sites) + 1)
    for column, site in enumerate(result.sites):
        panels.label_map(axes[column], maps[column], site)
    panels.block_scores(axes[-1], gradient_maps=result, reversed_at=result.reversed_at,
                        title=f"gradient maps: {result.verdict}")
    return figure


def report_figure(report: Any) -> Any:
    figure, (first, scores, dominance) = new_figure(15.0, 3.8, columns=3)
    mapping = report.frame_mapping
    if report.cross_attention is not None:
        panels.cross_attention(first, report.cross_attention)
    else:
        panels.dependency_map(first, mapping.maps[0][-1], None, None,
                              f"frame map encoder.{mapping.layers[-1]}")
    panels.block_scores(scores, mapping, report.gradient_maps, report.diagonality,
                        report.reversed_at, f"Verdict: {report.verdict}")
    if report.dominance is not None:
        panels.dominance_ratios(dominance, report.dominance, report.reversed_at)
    else:
        dominance.set_axis_off()
    return figure
