"""How much to trust each word's times, from the scores the Viterbi decoded, and the warning an
alignment carries when it seems to hold no speech.

A label whose gradient evidence peaks well above the blank inside its span was found; one that
never rises above the blank was only placed there because every label must get a frame. A word's
*margin* is the mean over its labels of ``max_t (label score - blank score)`` over the label's
Viterbi span (log units); its confidence is ``sigmoid(margin)``: 0.5 where the labels just reach
the blank, near 1 where they stand far above it.

:data:`LOW_CONFIDENCE` and :data:`NO_SPEECH_WARNING`: an alignment whose median word confidence is
below the threshold is flagged in ``Alignment.warnings`` with a line starting with
:data:`NO_SPEECH_WARNING` (digital silence, noise, or a transcript that does not belong to the
audio). The threshold was measured on Whisper tiny.en and base: TIMIT speech, the shipped
utterance and synthetic speech stay above it, silence and white or pink noise fall below
(``tests/test_alignment_confidence.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .result import WordSpan

LOW_CONFIDENCE = 0.5
NO_SPEECH_WARNING = "low confidence"


def word_confidences(words: Sequence[WordSpan], label_frames: np.ndarray,
                     label_log_scores: np.ndarray, blank_log_scores: np.ndarray) -> list[float]:
    """One confidence in ``(0, 1)`` per word.

    Args:
        words: the words, with ``label_start`` / ``label_end``.
        label_frames: ``(labels, 2)`` Viterbi spans ``[start, end)``.
        label_log_scores: ``(labels, frames)`` what the Viterbi decoded.
        blank_log_scores: ``(frames,)`` the blank's scores.
    """
    margins = np.array([
        float(np.max(label_log_scores[label, start:end] - blank_log_scores[start:end]))
        for label, (start, end) in enumerate(label_frames)])
    confidences = []
    for word in words:
        margin = float(margins[word.label_start:word.label_end].mean())
        confidences.append(1.0 / (1.0 + math.exp(-max(min(margin, 50.0), -50.0))))
    return confidences


def low_confidence_warning(confidences: Sequence[float | None]) -> str | None:
    """The warning for an alignment whose words have these confidences, or ``None``."""
    known = [value for value in confidences if value is not None]
    if not known:
        return None
    median = float(np.median(known))
    if median >= LOW_CONFIDENCE:
        return None
    return (f"{NO_SPEECH_WARNING}: the words barely stand out of the blank (median confidence "
            f"{median:.2f} < {LOW_CONFIDENCE}); the audio may hold no speech, or not this "
            f"transcript, and the times may mean nothing")
