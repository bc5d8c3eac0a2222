"""Time-stamp error (TSE) of predicted word times against reference word times, in ms.

Per word (paper definition):

- boundary error: ``(|start - start_ref| + |end - end_ref|) / 2``;
- position error: ``|centre - centre_ref|``.

Both are averaged over words; a corpus figure averages over all words of all utterances (not over
utterance means). Also reported: the share of word boundaries (every start and every end counts
as one) within 20 ms and 50 ms of the reference, and the mean signed offsets, which show a constant
shift that the absolute errors hide.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .result import WordSpan

WordTime = WordSpan | tuple[str, float, float]


@dataclass(frozen=True)
class TimestampErrors:
    """Signed per-word offsets (predicted minus reference) in ms, and TSE figures from them.

    Attributes:
        start_offsets_ms: ``(words,)`` predicted start minus reference start.
        end_offsets_ms: ``(words,)`` predicted end minus reference end.
    """

    start_offsets_ms: np.ndarray
    end_offsets_ms: np.ndarray

    @property
    def num_words(self) -> int:
        return len(self.start_offsets_ms)

    @property
    def boundary_errors_ms(self) -> np.ndarray:
        """``(words,)`` mean of the absolute start and end errors of every word."""
        return (np.abs(self.start_offsets_ms) + np.abs(self.end_offsets_ms)) / 2

    @property
    def centre_errors_ms(self) -> np.ndarray:
        """``(words,)`` absolute error of every word's centre."""
        return np.abs(self.start_offsets_ms + self.end_offsets_ms) / 2

    @property
    def tse_boundaries_ms(self) -> float:
        return float(self.boundary_errors_ms.mean())

    @property
    def tse_position_ms(self) -> float:
        return float(self.centre_errors_ms.mean())

    def share_of_boundaries_within(self, tolerance_ms: float) -> float:
        """Share of word starts and ends (each one boundary) within ``tolerance_ms``."""
        boundaries = np.abs(np.concatenate([self.start_offsets_ms, self.end_offsets_ms]))
        return float((boundaries <= tolerance_ms).mean())

    @property
    def within_20ms(self) -> float:
        return self.share_of_boundaries_within(20.0)

    @property
    def within_50ms(self) -> float:
        return self.share_of_boundaries_within(50.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_words": self.num_words,
            "tse_boundaries_ms": self.tse_boundaries_ms,
            "tse_position_ms": self.tse_position_ms,
            "within_20ms": self.within_20ms,
            "within_50ms": self.within_50ms,
            "mean_start_offset_ms": float(self.start_offsets_ms.mean()),
            "mean_end_offset_ms": float(self.end_offsets_ms.mean()),
        }

    def summary(self) -> str:
        return (
            f"TSE over {self.num_words} words: boundaries {self.tse_boundaries_ms:.1f} ms, "
            f"position {self.tse_position_ms:.1f} ms; boundaries within 20 ms "
            f"{100 * self.within_20ms:.1f}%, within 50 ms {100 * self.within_50ms:.1f}%; "
            f"mean offset start {self.start_offsets_ms.mean():+.1f} ms, "
            f"end {self.end_offsets_ms.mean():+.1f} ms"
        )

    def __str__(self) -> str:
        return self.summary()


def timestamp_errors(
    predicted: Sequence[WordTime],
    reference: Sequence[WordTime],
    *,
    check_words: bool = True,
) -> TimestampErrors:
    """TSE of one utterance.

    Args:
        predicted: predicted words, :class:`WordSpan` or ``(text, start_s, end_s)``.
        reference: reference words in the same order, same kinds accepted.
        check_words: compare the texts (case, punctuation and spacing ignored) and raise on the
            first mismatch; turn off when the two sides spell words differently.
    """
    if len(predicted) != len(reference):
        raise ValueError(
            f"{len(predicted)} predicted words but {len(reference)} reference words; TSE compares "
            f"the same words in the same order: align the reference transcript, or drop words "
            f"missing from the reference"
        )
    if not predicted:
        raise ValueError("no words to compare; drop empty utterances before scoring")
    predicted_times = [_text_start_end(word) for word in predicted]
    reference_times = [_text_start_end(word) for word in reference]
    if check_words:
        for index, ((guess, _, _), (truth, _, _)) in enumerate(
            zip(predicted_times, reference_times)
        ):
            if _normalised(guess) != _normalised(truth):
                raise ValueError(
                    f"word {index} differs: predicted {guess!r}, reference {truth!r}; pass the "
                    f"reference transcript to the aligner, or check_words=False if only the "
                    f"spelling differs"
                )
    predicted_array = np.array(
        [(start, end) for _, start, end in predicted_times], dtype=np.float64
    )
    reference_array = np.array(
        [(start, end) for _, start, end in reference_times], dtype=np.float64
    )
    offsets_ms = (predicted_array - reference_array) * 1000.0
    return TimestampErrors(start_offsets_ms=offsets_ms[:, 0], end_offsets_ms=offsets_ms[:, 1])


def aggregate_timestamp_errors(per_utterance: Iterable[TimestampErrors]) -> TimestampErrors:
    """Corpus TSE: all words of all utterances pooled, so long utterances weigh more."""
    errors = list(per_utterance)
    if not errors:
        raise ValueError("no utterances to aggregate; pass at least one TimestampErrors")
    return TimestampErrors(
        start_offsets_ms=np.concatenate([error.start_offsets_ms for error in errors]),
        end_offsets_ms=np.concatenate([error.end_offsets_ms for error in errors]),
    )


def _text_start_end(word: WordTime) -> tuple[str, float, float]:
    if isinstance(word, WordSpan):
        if word.start_s is None or word.end_s is None:
            raise ValueError(f"word {word.text!r} has frames but no times (the frame shift was "
                             f"unknown); align with a runner that knows frame_shift_seconds")
        return word.text, word.start_s, word.end_s
    text, start, end = word
    return str(text), float(start), float(end)


def _normalised(text: str) -> str:
    return "".join(
        char for char in text.casefold() if unicodedata.category(char)[0] not in ("P", "Z")
    )
