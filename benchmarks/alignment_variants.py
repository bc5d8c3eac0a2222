"""The alignment settings the evaluation compares, and the held-out choice among them.

A :class:`Variant` turns stored score matrices (:mod:`benchmarks.alignment_cache`) into word
times: which input was scored, how the blank state scores frames, whether each label's log scores
are normalised over time, and whether short gaps between words are closed
(:func:`attnprobe.alignment.close_word_gaps`). :func:`choose_on` picks the variant with the lowest
word-boundary TSE on one part of the corpus (the tuning part), so that the figure reported for it
comes from utterances it was not chosen on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from attnprobe.alignment import (
    Alignment,
    AlignmentSettings,
    BlankScore,
    TimestampErrors,
    aggregate_timestamp_errors,
    align_score_matrix,
    close_word_gaps,
    timestamp_errors,
)
from benchmarks.corpus.manifest import Utterance

from .alignment_cache import UtteranceScores

FRAME_SHIFT_S = 0.01
"""Whisper's log-mel hop."""

# Constant blank for 20 ms frames: the paper's -6 at 10 ms and -4 at 60 ms, linear in log frame
# length, since no tuned value for 20 ms exists.
BLANK_20MS = BlankScore("constant", -6.0 + 2.0 * math.log(20 / 10) / math.log(60 / 10))

Scored = tuple[Utterance, UtteranceScores]


@dataclass(frozen=True)
class Variant:
    """One way from a stored score matrix to word times.

    Attributes:
        input: ``"features"`` (10 ms log-mel) or ``"encoder_input"`` (20 ms).
        blank: the blank state's frame scores.
        log_softmax_over_time: normalise each label's log scores over time first.
        max_gap_s: close gaps between words up to this long (``None``: keep the Viterbi's).
        assign: which word a closed gap goes to.
    """

    input: str
    blank: BlankScore
    log_softmax_over_time: bool = True
    max_gap_s: float | None = None
    assign: str = "following"

    @property
    def name(self) -> str:
        frames = "log-mel features (10 ms)" if self.input == "features" else \
            "encoder input (20 ms)"
        if self.blank.kind == "constant":
            blank = f"blank {self.blank.value:g}"
        else:
            blank = f"percentile blank ({self.blank.reduction}, P{self.blank.percentile:g})"
        gaps = "" if self.max_gap_s is None else \
            f", gaps <= {self.max_gap_s * 1000:.0f} ms to the {self.assign} word"
        softmax = "" if self.log_softmax_over_time else ", no log-softmax"
        return f"gradient, {frames}, {blank}{softmax}{gaps}"

    def align(self, scored: UtteranceScores) -> Alignment:
        settings = AlignmentSettings(blank=self.blank,
                                     log_softmax_over_time=self.log_softmax_over_time,
                                     max_gap_s=0.0)
        alignment = align_score_matrix(
            scored.scores[self.input], scored.tokens, frame_shift_s=FRAME_SHIFT_S,
            subsampling=scored.subsampling[self.input], settings=settings, word_style="byte_bpe")
        if self.max_gap_s is not None:
            alignment = close_word_gaps(alignment, max_gap_s=self.max_gap_s, assign=self.assign)
        return alignment


PAPER_VARIANTS = (
    Variant("features", BlankScore("constant", -6.0)),
    Variant("features", BlankScore("percentile", reduction="mean", percentile=80.0)),
    Variant("features", BlankScore("percentile", reduction="log_mean_exp", percentile=60.0)),
    Variant("encoder_input", BLANK_20MS),
)
"""The paper's settings as published: no choice made on this corpus."""


def tuning_grid() -> list[Variant]:
    """Blank constants and percentiles, with and without closing gaps, on both inputs."""
    blanks = [BlankScore("constant", value) for value in (-4.0, -5.0, -6.0, -7.0, -8.0)]
    blanks += [BlankScore("percentile", reduction=reduction, percentile=percentile)
               for reduction in ("mean", "log_mean_exp") for percentile in (40, 50, 60, 70, 80)]
    gaps: list[tuple[float | None, str]] = [(None, "following")]
    gaps += [(0.3, assign) for assign in ("following", "middle", "preceding")]
    return [Variant(scored_input, blank, True, max_gap, assign)
            for scored_input in ("features", "encoder_input") for blank in blanks
            for max_gap, assign in gaps]


def variant_errors(variant: Variant, items: Sequence[Scored]) -> TimestampErrors:
    """Corpus TSE of ``variant`` over ``items`` (all words pooled)."""
    return aggregate_timestamp_errors(
        timestamp_errors(variant.align(scored).words, reference_words(utterance))
        for utterance, scored in items)


def choose_on(items: Sequence[Scored], variants: Sequence[Variant]) -> tuple[Variant, float]:
    """The variant with the lowest word-boundary TSE on ``items``, and that TSE."""
    results = [(variant_errors(variant, items).tse_boundaries_ms, index)
               for index, variant in enumerate(variants)]
    best, index = min(results)
    return variants[index], best


def reference_words(utterance: Utterance) -> list[tuple[str, float, float]]:
    return [(word.word, word.start, word.end) for word in utterance.words]
