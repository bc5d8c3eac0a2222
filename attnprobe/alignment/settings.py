"""The alignment defaults: how gradient scores become word times, one rule per model family.

:data:`DEFAULT_SETTINGS` is the recipe for any model: what the held-out evaluation on synthetic
speech chose (``python -m benchmarks.alignment_eval``): each label's log scores normalised over
time, the percentile-mirrored blank (mean over labels, 50th percentile), which adapts to any
model's score scale, and gaps of up to 300 ms between words handed to the following word, whose
onset the gradient evidence tends to miss. The input gradients it takes work even where an encoder
reverses time internally, which attnprobe exists to detect.

:data:`WHISPER_SETTINGS` is the recipe for Whisper (``settings_for("hf-whisper")``), chosen on
human word boundaries (TIMIT, tuning speakers; ``python -m benchmarks.alignment_timit``): the
transcript spelled as single characters, gradients at the output of the last encoder block, a
constant blank raised on quiet frames. Whisper's encoder keeps time in order, so its last block is
safe to read. :func:`settings_for` is the one rule that picks between them;
:func:`attnprobe.gradient_alignment`, ``attnprobe align``, the demo and the benchmarks all read
them from here. :meth:`AlignmentSettings.paper` is the recipe as the paper published it.
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

GradientInput = str
"""Where the gradients are taken: the model input frames (``"features"``, e.g. 10 ms log-mel),
the output of the ``encoder.frontend`` site (``"encoder_input"``, subsampled frames), the output
of an encoder block (``"encoder.<i>"``, e.g. ``"encoder.3"``, or ``"encoder.last"``), or
``"auto"``: the features when they are frames of at least 5 ms, the encoder input when the model
reads raw samples. An encoder block's output is only meaningful where the encoder keeps time in
order up to that block (not in a reversed encoder)."""

Targets = Literal["tokens", "characters"]
"""What is teacher-forced when a transcript is aligned from its text: the tokenizer's own
``"tokens"``, or the transcript spelled as single-character ``"characters"`` of the same
vocabulary (byte-level BPE models such as Whisper; grouped back into words after the Viterbi)."""

LAST_ENCODER_BLOCK = "encoder.last"

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
        targets: see :data:`Targets` (used where the text is at hand:
            :func:`attnprobe.alignment.align_transcript`, ``attnprobe align``).
        silence_weight: added to the blank score in proportion to how quiet a frame is (0 at
            the loud frames, 1 at the quietest, from the model's input features): pauses go to
            the blank. 0 switches it off.
        window_margin_s: for encoders that pad every input to a fixed window (Whisper's 30 s):
            ``None`` runs the full window; a number runs the encoder on the audio plus this many
            seconds of padding (cheaper, but Whisper was trained on 30 s windows).
        fit_decoder_only: with ``window_margin_s``, the encoder still reads the full window and
            only the decoder reads the fitted part of its output: most of the saving (the
            batched backward runs through the decoder), the encoder's context unchanged.
    """

    gradient_input: GradientInput = "auto"
    blank: BlankScore | None = BlankScore("percentile", reduction="mean", percentile=50.0)
    log_softmax_over_time: bool = True
    max_gap_s: float = 0.3
    p: float = 2.0
    targets: Targets = "tokens"
    silence_weight: float = 0.0
    window_margin_s: float | None = None
    fit_decoder_only: bool = False

    def __post_init__(self) -> None:
        if not (self.gradient_input in ("auto", "features", "encoder_input")
                or encoder_block(self.gradient_input) is not None):
            raise ValueError(f"gradient_input={self.gradient_input!r}; use 'auto', 'features', "
                             f"'encoder_input', 'encoder.<i>' (a block index) or 'encoder.last'")
        if self.targets not in ("tokens", "characters"):
            raise ValueError(f"targets={self.targets!r}; use 'tokens' or 'characters'")
        if not (math.isfinite(self.silence_weight) and self.silence_weight >= 0):
            raise ValueError(f"silence_weight={self.silence_weight}; use 0 (off) or a positive "
                             f"number such as 1.0")
        if self.window_margin_s is not None and not self.window_margin_s >= 0:
            raise ValueError(f"window_margin_s={self.window_margin_s}; use None (the model's full "
                             f"window) or seconds >= 0, such as 1.0")
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

    def scored_input(self, frame_shift_seconds: float | None, input_rank: int = 3) -> str:
        """``gradient_input`` with ``"auto"`` resolved for inputs ``frame_shift_seconds`` apart;
        where the shift is unknown, by the rank of ``batch.inputs``: waveforms ``(batch,
        samples)`` are scored at the encoder input, features ``(batch, frames, features)`` as
        they are. Any other value (``"features"``, ``"encoder.<i>"``, ...) comes back as it is."""
        if self.gradient_input != "auto":
            return self.gradient_input
        if frame_shift_seconds is None:
            return "encoder_input" if input_rank == 2 else "features"
        return ("features" if frame_shift_seconds >= FRAME_INPUT_SHORTEST_SHIFT_S
                else "encoder_input")

    def replace(self, **changes: object) -> AlignmentSettings:
        """A copy with some settings changed."""
        return replace(self, **changes)  # type: ignore[arg-type]


def encoder_block(gradient_input: str) -> int | str | None:
    """The block of ``"encoder.<i>"`` (an int), ``"last"`` for ``"encoder.last"``, else ``None``."""
    prefix, _, block = str(gradient_input).partition(".")
    if prefix != "encoder" or not block:
        return None
    if block == "last":
        return "last"
    return int(block) if block.isdigit() else None


DEFAULT_SETTINGS = AlignmentSettings()
"""What :func:`attnprobe.gradient_alignment` and ``attnprobe align`` use for models without a
recipe of their own (see :func:`settings_for`)."""

WHISPER_SETTINGS = AlignmentSettings(
    gradient_input=LAST_ENCODER_BLOCK, targets="characters",
    blank=BlankScore("constant", -4.0), silence_weight=1.0)
"""Whisper's recipe, chosen on TIMIT's tuning speakers for tiny.en and base alike
(``benchmarks/results/alignment_timit.md``)."""

FAMILY_SETTINGS = {"hf-whisper": WHISPER_SETTINGS}


def settings_for(family: str) -> AlignmentSettings:
    """The defaults for a model family (an adapter's ``family``): the family's own recipe where it
    has one (:data:`FAMILY_SETTINGS`), else :data:`DEFAULT_SETTINGS`."""
    return FAMILY_SETTINGS.get(family, DEFAULT_SETTINGS)
