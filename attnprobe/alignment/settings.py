"""The one set of alignment defaults: how gradient scores become word times.

:data:`DEFAULT_SETTINGS` is what the held-out evaluation chose (``python -m
benchmarks.alignment_eval``, results in ``benchmarks/results/alignment_eval.md``): each label's log
scores normalised over time, the percentile-mirrored blank (mean over labels, 50th percentile),
which adapts to any model's score scale, and gaps of up to 300 ms between words handed to the
following word, whose onset the gradient evidence tends to miss.
:func:`attnprobe.gradient_alignment`, the decoding functions, ``attnprobe align``, the demo and the benchmarks all read them from here.
:meth:`AlignmentSettings.paper` is the recipe as the paper published it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

BlankKind = Literal["constant", "percentile"]
FrameReduction = Literal["mean", "max", "log_mean_exp"]


@dataclass(frozen=True)
class BlankScore:
    """How the blank state scores every frame.

    Attributes:
        kind: ``"constant"``: every frame scores ``value``; the paper found about -4 best for
            60 ms frames and -6 for 10 ms frames. ``"percentile"``: reduce the label log scores
            of each frame to ``l(t)`` with ``reduction``, take ``q``, the ``percentile``-th
            percentile of ``l`` over the valid frames, and score ``blank(t) = 2q - l(t)``: frames
            where labels score low become likely blanks. The paper found ``percentile=80`` best
            with ``"mean"`` and 60 with ``"log_mean_exp"``.
        value: the constant blank log score (``kind="constant"``).
        reduction: ``"mean"``, ``"max"`` or ``"log_mean_exp"`` over labels (``kind="percentile"``).
        percentile: ``P`` in ``[0, 100]`` (``kind="percentile"``).
    """

    kind: BlankKind = "constant"
    value: float = -6.0
    reduction: FrameReduction = "mean"
    percentile: float = 80.0

    def __post_init__(self) -> None:
        if self.kind not in ("constant", "percentile"):
            raise ValueError(f"BlankScore kind={self.kind!r}; use 'constant' or 'percentile'")
        if self.reduction not in ("mean", "max", "log_mean_exp"):
            raise ValueError(
                f"BlankScore reduction={self.reduction!r}; use 'mean', 'max' or 'log_mean_exp'"
            )
        if not 0.0 <= self.percentile <= 100.0:
            raise ValueError(f"BlankScore percentile={self.percentile}; use a value in [0, 100]")
        if not math.isfinite(self.value):
            raise ValueError(f"BlankScore value={self.value}; use a finite log score such as -6.0")


# The paper's best constants: -6 for 10 ms frames, -4 for 60 ms frames.
BLANK_10MS = BlankScore("constant", -6.0)
BLANK_60MS = BlankScore("constant", -4.0)

GradientInput = Literal["auto", "features", "encoder_input"]
"""Where the gradients are taken: the model input frames (``"features"``, e.g. 10 ms log-mel),
the output of the ``encoder.frontend`` site (``"encoder_input"``, subsampled frames), or
``"auto"``: the features when they are frames of at least 5 ms, the encoder input when the model
reads raw samples."""

FRAME_INPUT_SHORTEST_SHIFT_S = 0.005
"""Inputs with a shorter frame shift are waveforms: ``"auto"`` scores their encoder input."""


@dataclass(frozen=True)
class AlignmentSettings:
    """How gradient alignment scores and decodes.

    Attributes:
        gradient_input: see :data:`GradientInput`.
        blank: blank scoring of the Viterbi; ``None``: the paper's constants (-6 on 10 ms input
            frames, -4 on subsampled frames).
        log_softmax_over_time: normalise each label's log scores to a distribution over frames
            before the Viterbi.
        max_gap_s: gaps between words up to this long join the following word (0: keep them).
        p: the norm of the gradient over features (2: L2).
    """

    gradient_input: GradientInput = "auto"
    blank: BlankScore | None = BlankScore("percentile", reduction="mean", percentile=50.0)
    log_softmax_over_time: bool = True
    max_gap_s: float = 0.3
    p: float = 2.0

    def __post_init__(self) -> None:
        if self.gradient_input not in ("auto", "features", "encoder_input"):
            raise ValueError(f"gradient_input={self.gradient_input!r}; use 'auto', 'features' or "
                             f"'encoder_input'")
        if not self.max_gap_s >= 0:
            raise ValueError(f"max_gap_s={self.max_gap_s}; use 0 (keep gaps) or a positive "
                             f"number of seconds")
        if not (self.p >= 1 or math.isinf(self.p)):
            raise ValueError(f"p={self.p} is not a norm; use p >= 1 (2 for L2, 1 for L1, "
                             f"math.inf for max)")

    @classmethod
    def paper(cls, gradient_input: GradientInput = "auto") -> AlignmentSettings:
        """The recipe as Schmitt et al. published it: constant blank, no normalisation over
        time, no gap closing."""
        return cls(gradient_input=gradient_input, blank=None, log_softmax_over_time=False,
                   max_gap_s=0.0)

    def blank_for(self, subsampling: int) -> BlankScore:
        """The blank scoring for score columns ``subsampling`` input frames apart."""
        if self.blank is not None:
            return self.blank
        return BLANK_10MS if subsampling == 1 else BLANK_60MS

    def scored_input(self, frame_shift_seconds: float | None, input_rank: int = 3
                     ) -> Literal["features", "encoder_input"]:
        """``gradient_input`` with ``"auto"`` resolved for inputs ``frame_shift_seconds`` apart;
        where the shift is unknown, by the rank of ``batch.inputs``: waveforms ``(batch,
        samples)`` are scored at the encoder input, features ``(batch, frames, features)`` as
        they are."""
        if self.gradient_input != "auto":
            return self.gradient_input
        if frame_shift_seconds is None:
            return "encoder_input" if input_rank == 2 else "features"
        return ("features" if frame_shift_seconds >= FRAME_INPUT_SHORTEST_SHIFT_S
                else "encoder_input")

    def replace(self, **changes: object) -> AlignmentSettings:
        """A copy with some settings changed."""
        return replace(self, **changes)  # type: ignore[arg-type]


DEFAULT_SETTINGS = AlignmentSettings()
"""What :func:`attnprobe.gradient_alignment` and ``attnprobe align`` use unless told otherwise."""
