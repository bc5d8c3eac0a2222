"""The report's figures, drawn on a time axis in seconds: cross-attention map, per-block reversal
scores, branch dominance, frame mapping, and the gradient map with the alignment and the word
boundaries. matplotlib is imported on first use; figures are ``matplotlib.figure.Figure`` objects
(no pyplot state), rendered to PNG bytes by :func:`png_bytes`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from .analysis import UtteranceResult, encoder_frame_seconds, valid_encoder_frames

DPI = 110
BRANCH_COLOURS = {"ffn1": "tab:blue", "self_attn": "tab:red", "conv": "tab:green",
                  "ffn2": "tab:purple", "ffn": "tab:blue"}


@dataclass(frozen=True)
class NamedFigure:
    """A figure with the file stem, title and caption the report gives it."""

    name: str
    title: str
    caption: str
    figure: Any


def png_bytes(figure: Any) -> bytes:
    """The figure as PNG."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


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
            "Rank correlation per encoder block between output time and the input time it "
            "depends on (frame mapping, the verdict), the monotonicity of the gradient maps and "
            "the self-attention diagonality: +1 keeps time order, -1 is reversed.",
            _block_scores(result)))
    if report is not None:
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


def _figure(width: float, height: float, columns: int = 1) -> tuple[Any, Any]:
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("figures need matplotlib: pip install 'attnprobe[plot]'") from error
    figure = Figure(figsize=(width, height), layout="constrained")
    axes = figure.subplots(1, columns, squeeze=False)[0]
    return figure, axes


def _label_axis(axes: Any, result: UtteranceResult, count: int) -> None:
    """Token strings as y tick labels (``␣`` for a space), smaller as there are more of them."""
    if result.transcript is None or len(result.transcript.tokens) != count:
        return
    names = [token.replace("Ġ", "").replace("▁", "") if token.strip() else "␣"
             for token in result.transcript.tokens]
    axes.set_yticks(range(count), names, fontsize=8 if count <= 30 else 6 if count <= 70 else 4)


def _height_for_labels(count: int) -> float:
    return min(6.5, max(3.4, 1.6 + 0.16 * count))


def _cross_attention(result: UtteranceResult) -> Any:
    cross = result.cross_attention
    assert cross is not None
    example = np.asarray(cross.example)[:, : valid_encoder_frames(result)]
    seconds = encoder_frame_seconds(result.model)
    labels = example.shape[0]
    figure, (axes,) = _figure(8.0, _height_for_labels(labels))
    image = axes.imshow(example, aspect="auto", origin="upper", interpolation="nearest",
                        cmap="magma", extent=(0.0, example.shape[1] * seconds, labels - 0.5, -0.5))
    figure.colorbar(image, ax=axes, label="attention weight")
    _label_axis(axes, result, labels)
    layer_score = float(np.nanmean(cross.scores[-1]))
    axes.set(xlabel="time (s)", ylabel="label (first at the top)",
             title=f"{cross.sites[-1]}, heads averaged (their mean Spearman {layer_score:+.2f})\n"
                   f"all decoder layers and heads: {cross.verdict} ({cross.overall:+.2f})")
    return figure


def _score_axes(axes: Any, threshold: float) -> None:
    from matplotlib.ticker import MaxNLocator

    axes.axhspan(-1.05, -threshold, color="tab:red", alpha=0.08, label="reversed zone")
    axes.axhspan(threshold, 1.05, color="tab:green", alpha=0.08, label="time-order zone")
    axes.axhline(0.0, color="grey", linewidth=0.6)
    axes.set_ylim(-1.05, 1.05)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))


def _block_scores(result: UtteranceResult) -> Any:
    report = result.report
    figure, (axes,) = _figure(7.5, 3.8)
    if report is not None:
        mapping = report.frame_mapping
        _score_axes(axes, mapping.threshold)
        axes.plot(mapping.layers, mapping.scores, marker="o", color="black", linewidth=2,
                  label="frame mapping (verdict)")
    if report is not None and report.gradient_maps is not None:
        maps = report.gradient_maps
        layers = [int(site.rsplit(".", 1)[-1]) for site in maps.sites[1:]]
        axes.plot(layers, maps.scores[1:], marker="s", color="tab:blue",
                  label="gradient-map monotonicity")
    diagonality = result.diagonality
    if diagonality is not None:
        if report is None:
            _score_axes(axes, diagonality.threshold)
        axes.plot(diagonality.layers, diagonality.layer_scores, marker="^",
                  color="tab:orange", label="self-attention diagonality")
    if report is not None and report.reversed_at is not None:
        axes.axvline(report.reversed_at, color="tab:red", linestyle="--",
                     label=f"reversed from block {report.reversed_at}")
    title = f"Verdict: {report.verdict}" if report is not None else \
        "No verdict (frame mapping not run): self-attention only"
    axes.set(xlabel="encoder block", ylabel="score (+1 order kept, -1 reversed)", title=title)
    axes.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    return figure


def _frame_mapping(result: UtteranceResult) -> Any:
    from matplotlib.colors import PowerNorm

    assert result.report is not None
    mapping = result.report.frame_mapping
    maps = mapping.maps[0]
    frames = min(maps.shape[1], valid_encoder_frames(result))
    seconds = encoder_frame_seconds(result.model)
    shown = sorted({0, len(mapping.layers) - 1})
    figure, axes_row = _figure(4.2 * len(shown) + 0.8, 3.9, columns=len(shown))
    image = None
    for axes, index in zip(axes_row, shown, strict=True):
        block = maps[index][:frames, :frames]
        scaled = block / np.maximum(block.max(axis=1, keepdims=True), np.finfo(float).tiny)
        extent = (0.0, frames * seconds, 0.0, frames * seconds)
        # A square-root colour scale keeps the weaker off-diagonal dependencies visible.
        image = axes.imshow(scaled, origin="lower", aspect="equal", interpolation="nearest",
                            cmap="viridis", extent=extent, norm=PowerNorm(0.5, 0.0, 1.0))
        axes.set(xlabel="encoder-input time (s)", ylabel="block-output time (s)",
                 title=f"encoder.{mapping.layers[index]}: score "
                       f"{mapping.scores[index]:+.2f}")
    figure.colorbar(image, ax=list(axes_row), label="dependency (row maximum = 1)")
    figure.suptitle(f"Frame mapping: {mapping.verdict}")
    return figure


def _dominance(result: UtteranceResult) -> Any:
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    dominance = result.dominance
    assert dominance is not None
    reversed_at = None if result.report is None else result.report.reversed_at
    figure, (ratio_axes, survival_axes) = _figure(9.0, 3.6, columns=2)
    for column, branch in enumerate(dominance.branches):
        ratios = dominance.ratio[:, column]
        if np.isfinite(ratios).any():
            ratio_axes.plot(dominance.layers, ratios, marker="o", label=branch,
                            color=BRANCH_COLOURS.get(branch))
    ratio_axes.axhline(1.0, color="grey", linestyle=":", linewidth=1)
    ratio_axes.set_yscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    ratio_axes.yaxis.set_major_formatter(plain)
    ratio_axes.yaxis.set_minor_formatter(plain)
    ratio_axes.set(xlabel="encoder block", ylabel="branch norm / residual norm",
                   title="Branch output against the residual stream")
    ratio_axes.legend(fontsize="small")
    survival_axes.plot(dominance.layers, dominance.mean_survival, marker="o", color="black")
    survival_axes.set_ylim(-1.05, 1.05)
    survival_axes.axhline(0.0, color="grey", linewidth=0.6)
    survival_axes.set(xlabel="encoder block", ylabel="cos(block input, block output)",
                      title="What survives each block")
    for axes in (ratio_axes, survival_axes):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        if reversed_at is not None:
            axes.axvline(reversed_at, color="tab:red", linestyle="--")
    return figure


def _gradient_alignment(result: UtteranceResult) -> Any:
    from matplotlib.lines import Line2D

    alignment = result.alignment
    assert alignment is not None and alignment.scores is not None
    seconds = alignment.seconds_per_frame
    scores = np.where(np.isfinite(alignment.scores), alignment.scores, np.nan)
    labels = scores.shape[0]
    figure, (axes,) = _figure(max(7.0, min(16.0, 2.0 + 2.2 * alignment.duration_s)),
                              _height_for_labels(labels) + 0.6)
    image = axes.imshow(scores, aspect="auto", origin="upper", interpolation="nearest",
                        cmap="viridis", extent=(0.0, scores.shape[1] * seconds, labels - 0.5, -0.5))
    figure.colorbar(image, ax=axes, label="log gradient score")
    for label in alignment.labels:
        axes.hlines(label.index, label.start_s, label.end_s, color="white", linewidth=2.5)
    legend = [Line2D([], [], color="white", linewidth=2.5, label="label span (Viterbi path)"),
              Line2D([], [], color="orange", label="aligned word boundary")]
    for word in alignment.words:
        axes.axvline(word.start_s, color="orange", linewidth=1.0)
        axes.axvline(word.end_s, color="orange", linewidth=1.0)
    if result.errors is not None and result.item.reference is not None:
        for _, start, end in result.item.reference:
            axes.axvline(start, color="cyan", linestyle="--", linewidth=0.9)
            axes.axvline(end, color="cyan", linestyle="--", linewidth=0.9)
        legend.append(Line2D([], [], color="cyan", linestyle="--",
                             label="reference word boundary"))
    words_axis = axes.secondary_xaxis("top")
    words_axis.set_xticks([word.centre_s for word in alignment.words],
                          [word.text for word in alignment.words], fontsize=8, rotation=30,
                          ha="left")
    _label_axis(axes, result, labels)
    axes.set_xlim(0.0, max(alignment.duration_s, result.audio.duration))
    error = "" if result.errors is None else \
        f"; error against the reference {result.errors.tse_boundaries_ms:.0f} ms per boundary"
    axes.set(xlabel="time (s)", ylabel="label")
    axes.set_title(f"Gradient alignment: {len(alignment.words)} words{error}")
    # A grey key, so that the white path line shows in it.
    key = figure.legend(handles=legend, loc="outside lower center", ncol=len(legend),
                        fontsize="small", facecolor="#9a9a9a", framealpha=1.0)
    key.get_frame().set_edgecolor("none")
    return figure
