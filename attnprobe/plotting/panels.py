"""The panels every reversal figure is built from, drawn into axes the caller owns.

Each takes the probe result it shows (by duck typing: plotting imports no probe class) and,
where it has a time axis, the seconds per frame (``None``: frame indices) and how many frames are
valid (Whisper pads every input to 30 s; the padding is not drawn).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .figure import BRANCH_COLOURS, label_axis, time_extent


def score_zones(axes: Any, threshold: float) -> None:
    """Shade the reversed (<= -threshold) and time-order (>= threshold) zones of a score axis."""
    from matplotlib.ticker import MaxNLocator

    axes.axhspan(-1.05, -threshold, color="tab:red", alpha=0.08, label="reversed zone")
    axes.axhspan(threshold, 1.05, color="tab:green", alpha=0.08, label="time-order zone")
    axes.axhline(0.0, color="grey", linewidth=0.6)
    axes.set_ylim(-1.05, 1.05)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))


def cross_attention(axes: Any, cross: Any, seconds_per_frame: float | None = None,
                    frames: int | None = None, tokens: Sequence[str] | None = None) -> Any:
    """The first sequence's cross-attention map (last decoder layer, heads averaged): labels
    (first at the top) against encoder time. Returns the image, for a colour bar."""
    example = np.asarray(cross.example)[:, :frames]
    labels = example.shape[0]
    right, unit = time_extent(example.shape[1], seconds_per_frame)
    image = axes.imshow(example, aspect="auto", origin="upper", interpolation="nearest",
                        cmap="magma", extent=(0.0, right, labels - 0.5, -0.5))
    label_axis(axes, tokens, labels)
    layer_score = float(np.nanmean(cross.scores[-1]))
    axes.set(xlabel=unit, ylabel="label (first at the top)",
             title=f"{cross.sites[-1]}, heads averaged (their mean Spearman {layer_score:+.2f})\n"
                   f"all decoder layers and heads: {cross.verdict} ({cross.overall:+.2f})")
    return image


def block_scores(axes: Any, frame_mapping: Any = None, gradient_maps: Any = None,
                 diagonality: Any = None, reversed_at: int | None = None,
                 title: str = "") -> None:
    """Per-block scores of every probe that ran, on one axis: +1 keeps time order, -1 reversed."""
    threshold = next(result.threshold for result in (frame_mapping, gradient_maps, diagonality)
                     if result is not None)
    score_zones(axes, threshold)
    if frame_mapping is not None:
        axes.plot(frame_mapping.layers, frame_mapping.scores, marker="o", color="black",
                  linewidth=2, label="frame mapping")
    if gradient_maps is not None:
        layers = [int(site.rsplit(".", 1)[-1]) for site in gradient_maps.sites[1:]]
        axes.plot(layers, gradient_maps.scores[1:], marker="s", color="tab:blue",
                  label="gradient-map monotonicity")
    if diagonality is not None:
        axes.plot(diagonality.layers, diagonality.layer_scores, marker="^", color="tab:orange",
                  label="self-attention diagonality")
    if reversed_at is not None:
        axes.axvline(reversed_at, color="tab:red", linestyle="--",
                     label=f"reversed from block {reversed_at}")
    axes.set(xlabel="encoder block", ylabel="score (+1 order kept, -1 reversed)", title=title)
    axes.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))


def dependency_map(axes: Any, block_map: np.ndarray, frames: int | None,
                   seconds_per_frame: float | None, title: str) -> Any:
    """One block's frame-mapping matrix (output time against encoder-input time), each row scaled
    to its maximum on a square-root colour scale. Returns the image."""
    from matplotlib.colors import PowerNorm

    shown = block_map[:frames, :frames]
    scaled = shown / np.maximum(shown.max(axis=1, keepdims=True), np.finfo(float).tiny)
    right, unit = time_extent(shown.shape[1], seconds_per_frame)
    top, _ = time_extent(shown.shape[0], seconds_per_frame)
    # A square-root colour scale keeps the weaker off-diagonal dependencies visible.
    image = axes.imshow(scaled, origin="lower", aspect="auto", interpolation="nearest",
                        cmap="viridis", extent=(0.0, right, 0.0, top),
                        norm=PowerNorm(0.5, 0.0, 1.0))
    axes.set(xlabel=f"encoder-input {unit}", ylabel=f"block-output {unit}", title=title)
    return image


def label_map(axes: Any, site_map: np.ndarray, title: str, tokens: Sequence[str] | None = None
              ) -> Any:
    """One gradient map ``(labels, frames)``: labels (first at the top) against frames."""
    image = axes.imshow(site_map, aspect="auto", origin="upper", interpolation="nearest",
                        cmap="viridis")
    label_axis(axes, tokens, site_map.shape[0])
    axes.set(xlabel="frame", ylabel="label", title=title)
    return image


def dominance_ratios(axes: Any, dominance: Any, reversed_at: int | None = None) -> None:
    """Each branch's output norm over the residual norm it joins, per block (log scale)."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    for column, branch in enumerate(dominance.branches):
        ratios = dominance.ratio[:, column]
        if np.isfinite(ratios).any():
            axes.plot(dominance.layers, ratios, marker="o", label=branch,
                      color=BRANCH_COLOURS.get(branch))
    axes.axhline(1.0, color="grey", linestyle=":", linewidth=1)
    axes.set_yscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    axes.yaxis.set_major_formatter(plain)
    axes.yaxis.set_minor_formatter(plain)
    axes.set(xlabel="encoder block", ylabel="branch norm / residual norm",
             title="Branch output against the residual stream")
    axes.legend(fontsize="small")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    if reversed_at is not None:
        axes.axvline(reversed_at, color="tab:red", linestyle="--")


def survival(axes: Any, dominance: Any, reversed_at: int | None = None) -> None:
    """Cosine of block input and output per block: how much of a block's input survives it."""
    from matplotlib.ticker import MaxNLocator

    axes.plot(dominance.layers, dominance.mean_survival, marker="o", color="black")
    axes.set_ylim(-1.05, 1.05)
    axes.axhline(0.0, color="grey", linewidth=0.6)
    axes.set(xlabel="encoder block", ylabel="cos(block input, block output)",
             title="What survives each block")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    if reversed_at is not None:
        axes.axvline(reversed_at, color="tab:red", linestyle="--")


def offset_histogram(axes: Any, diagonality: Any) -> None:
    """Self-attention mass per key-minus-query offset and layer, heads averaged."""
    histogram = np.nanmean(diagonality.histogram, axis=1)
    axes.imshow(histogram, origin="lower", aspect="auto", interpolation="nearest",
                extent=(-diagonality.max_offset - 0.5, diagonality.max_offset + 0.5,
                        -0.5, len(diagonality.layers) - 0.5))
    axes.set(title="attention per offset (heads averaged)", xlabel="key - query frame",
             ylabel="layer")


def scores_over_training(axes: Any, steps: Sequence[int], scores: np.ndarray, threshold: float,
                         title: str = "") -> None:
    """Per-block reversal scores ``(checkpoints, blocks)`` against the training step, one line
    per block (darker for later blocks), over the reversed and time-order zones."""
    import matplotlib

    score_zones(axes, threshold)
    values = np.asarray(scores, dtype=np.float64)
    colours = matplotlib.colormaps["viridis"](np.linspace(0.0, 0.85, max(values.shape[1], 1)))
    for block in range(values.shape[1]):
        axes.plot(steps, values[:, block], marker="o", markersize=3, color=colours[block],
                  label=f"block {block}")
    axes.set(xlabel="training step", ylabel="reversal score (+1 kept, -1 reversed)", title=title)
    axes.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
