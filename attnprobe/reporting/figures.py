"""The report's figures, drawn on a time axis in seconds from the shared panels
(:mod:`attnprobe.plotting.panels`): cross-attention map, per-block reversal scores, frame mapping,
branch dominance, and the gradient map with the alignment and the word boundaries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from attnprobe.plotting import panels
from attnprobe.plotting.alignment import plot_alignment
from attnprobe.plotting.figure import height_for_labels, new_figure

from .utterance import UtteranceResult, encoder_frame_seconds, valid_encoder_frames


@dataclass(frozen=True)
class NamedFigure:
    """A figure with the file stem, title and caption the report gives it."""

    name: str
    title: str
    caption: str
    figure: Any


def figures_of(result: UtteranceResult) -> list[NamedFigure]:
    """Every figure the result has data for, in the report's order."""
    figures = []
    report = result.report
    cross = result.cross_attention
    if cross is not None and cross.example is not None:
        figures.append(NamedFigure(
            "cross_attention", "Cross-attention map",
            "Where the decoder looks (last decoder layer, heads averaged) while predicting each "
            "label. A model that keeps time order draws a rising diagonal; a reversed encoder "
            "makes it fall.", _cross_attention(result)))
    if report is not None or result.diagonality is not None:
        figures.append(NamedFigure(
            "block_scores", "Per-block reversal scores",
            "Rank correlation per encoder block between output time and the centre of the "
            "input time it depends on (frame mapping), the monotonicity of the gradient maps "
            "(they decide when the decoder reads in order) and the self-attention "
            "diagonality: +1 keeps time order, -1 is reversed.",
            _block_scores(result)))
    if report is not None and report.frame_mapping is not None:
        figures.append(NamedFigure(
            "frame_mapping", "Frame mapping",
            "Which encoder-input time each output time of a block depends on (Jacobian norms, "
            "each row scaled to its maximum): the diagonal means time order kept, the "
            "anti-diagonal means reversed.", _frame_mapping(result)))
    if result.dominance is not None:
        figures.append(NamedFigure(
            "branch_dominance", "Branch dominance",
            "Norm of each branch output relative to the residual stream it is added to, and how "
            "much of a block's input survives in its output (cosine). A reversing block shows a "
            "branch far above 1 and a low cosine.", _dominance(result)))
    if result.alignment is not None:
        figures.append(NamedFigure(
            "gradient_alignment", "Gradient map and alignment",
            "Log gradient norm of each label's probability with respect to the input frames, the "
            "Viterbi path (white), aligned word boundaries (orange) and reference boundaries "
            "(cyan, dashed) where known.", _gradient_alignment(result)))
    return figures


def _tokens(result: UtteranceResult) -> list[str] | None:
    return None if result.transcript is None else result.transcript.tokens


def _cross_attention(result: UtteranceResult) -> Any:
    cross = result.cross_attention
    assert cross is not None
    figure, (axes,) = new_figure(8.0, height_for_labels(cross.example.shape[0]))
    image = panels.cross_attention(axes, cross, encoder_frame_seconds(result.model),
                                   valid_encoder_frames(result), _tokens(result))
    figure.colorbar(image, ax=axes, label="attention weight")
    return figure


def _block_scores(result: UtteranceResult) -> Any:
    report = result.report
    figure, (axes,) = new_figure(7.5, 3.8)
    title = f"Verdict: {report.verdict}" if report is not None else \
        "No verdict (frame mapping not run): self-attention only"
    panels.block_scores(axes, None if report is None else report.frame_mapping,
                        None if report is None else report.gradient_maps, result.diagonality,
                        None if report is None else report.reversed_at, title)
    return figure


def _frame_mapping(result: UtteranceResult) -> Any:
    assert result.report is not None and result.report.frame_mapping is not None
    mapping = result.report.frame_mapping
    maps = mapping.maps[0]
    frames = min(maps.shape[1], valid_encoder_frames(result))
    shown = sorted({0, len(mapping.layers) - 1})
    figure, axes_row = new_figure(4.2 * len(shown) + 0.8, 3.9, columns=len(shown))
    image = None
    for axes, index in zip(axes_row, shown, strict=True):
        image = panels.dependency_map(axes, maps[index], frames,
                                      encoder_frame_seconds(result.model),
                                      f"encoder.{mapping.layers[index]}: score "
                                      f"{mapping.scores[index]:+.2f}")
        axes.set_aspect("equal")
    figure.colorbar(image, ax=axes_row, label="dependency (row maximum = 1)")
    figure.suptitle(f"Frame mapping: {mapping.verdict}")
    return figure


def _dominance(result: UtteranceResult) -> Any:
    dominance = result.dominance
    assert dominance is not None
    reversed_at = None if result.report is None else result.report.reversed_at
    figure, (ratio_axes, survival_axes) = new_figure(9.0, 3.6, columns=2)
    panels.dominance_ratios(ratio_axes, dominance, reversed_at)
    panels.survival(survival_axes, dominance, reversed_at)
    return figure


def _gradient_alignment(result: UtteranceResult) -> Any:
    alignment = result.alignment
    assert alignment is not None
    error = "" if result.errors is None else \
        f"; error against the reference {result.errors.tse_boundaries_ms:.0f} ms per boundary"
    reference = result.item.reference if result.errors is not None else None
    return plot_alignment(alignment, reference=reference, duration_s=result.audio.duration,
                          tokens=_tokens(result),
                          title=f"Gradient alignment: {len(alignment.words)} words{error}")
