"""The report's evidence, per encoder block: what every probe that ran says about that block.

One row per block, one column per probe (``None`` where the probe did not run or has no such
block):

- ``frame_mapping``: the frame mapping's reversal score of the block's output;
- ``gradient_map``: the monotonicity of ``G`` of the block's output, oriented to the input's order
  (``input_gradient_map`` is ``G_0``, the encoder input's);
- ``self_attention``: the block's self-attention diagonality (+1 diagonal, -1 anti-diagonal);
- ``branch`` / ``branch_ratio``: the branch with the largest output next to the residual it is
  added to, and that ratio; ``survival``: cos(block input, block output).

The rule (:mod:`attnprobe.probes.verdict`) reads one of the first two columns; the others say how
the turn happened (an anti-diagonal self-attention, a branch outgrowing the residual).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .verdict import DECIDED_BY_DECODER, DECIDED_BY_FRAME_MAPPING

if TYPE_CHECKING:
    from .report import ReversalReport


@dataclass(frozen=True)
class BlockEvidence:
    """What the probes say about one encoder block (see the module docstring)."""

    block: int
    frame_mapping: float | None = None
    gradient_map: float | None = None
    self_attention: float | None = None
    branch: str | None = None
    branch_ratio: float | None = None
    survival: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def block_evidence(report: ReversalReport) -> list[BlockEvidence]:
    """One :class:`BlockEvidence` per encoder block a probe scored (the frame mapping's blocks,
    or where it could not run, the other probes')."""
    mapping = report.frame_mapping
    framed = {} if mapping is None else \
        {layer: float(score) for layer, score in zip(mapping.layers, mapping.scores)}
    gradient: dict[int, float] = {}
    if report.gradient_maps is not None:
        layers, scores, _ = report.gradient_maps.oriented_scores()
        gradient = dict(zip(layers, (float(score) for score in scores)))
    attention: dict[int, float] = {}
    if report.diagonality is not None:
        attention = {layer: float(score) for layer, score in
                     zip(report.diagonality.layers, report.diagonality.layer_scores)}
    dominance_layers = [] if report.dominance is None else list(report.dominance.layers)
    blocks = sorted(framed) if framed else sorted({*gradient, *attention, *dominance_layers})
    rows = []
    for layer in blocks:
        branch = ratio = survival = None
        dominance = report.dominance
        if dominance is not None and layer in dominance.layers:
            row = dominance.layers.index(layer)
            ratios = np.nan_to_num(dominance.ratio[row], nan=-np.inf)
            largest = int(ratios.argmax())
            branch, ratio = dominance.branches[largest], float(dominance.ratio[row][largest])
            survival = float(dominance.mean_survival[row])
        rows.append(BlockEvidence(layer, framed.get(layer), gradient.get(layer),
                                  _finite(attention.get(layer)), branch, ratio, survival))
    return rows


def input_gradient_map(report: ReversalReport) -> float | None:
    """``G_0`` oriented like the rows (the encoder input's own score), or ``None``."""
    if report.gradient_maps is None:
        return None
    return report.gradient_maps.oriented_scores()[2]


def evidence_table(report: ReversalReport) -> list[str]:
    """The per-block table as text lines; ``*`` marks the column that decides, ``<`` the block the
    rule names."""
    rows = block_evidence(report)
    decided = report.localisation
    frame_decides = decided.decided_by == DECIDED_BY_FRAME_MAPPING
    decoder_decides = decided.decided_by == DECIDED_BY_DECODER
    header = ["block", "frame map" + ("*" if frame_decides else ""),
              "gradient map" + ("*" if decoder_decides else ""), "self-attn", "survival",
              "largest branch / residual"]
    widths = [6, 11, 13, 10, 9]
    lines = ["per block (+1 time order kept, -1 reversed; * decides, < the block it names):",
             "  " + "".join(f"{name:>{width}}" for name, width in zip(header, widths))
             + f"  {header[-1]}"]
    first = input_gradient_map(report)
    if first is not None:
        framed = "-" if report.frame_mapping is None else "+1.00"
        lines.append("  " + f"{'input':>6}{framed:>11}{first:>+13.2f}")
    for row in rows:
        cells = [f"{row.block:>6}", _number(row.frame_mapping, 11), _number(row.gradient_map, 13),
                 _number(row.self_attention, 10), _number(row.survival, 9, signed=False)]
        branch = "" if row.branch is None else f"  {row.branch} {row.branch_ratio:.2f}"
        marker = "  <" if row.block == decided.reversed_at else ""
        lines.append("  " + "".join(cells) + branch + marker)
    return lines


def _number(value: float | None, width: int, signed: bool = True) -> str:
    if value is None:
        return f"{'-':>{width}}"
    return f"{value:>+{width}.2f}" if signed else f"{value:>{width}.2f}"


def _finite(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else value
