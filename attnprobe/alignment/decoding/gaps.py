"""Short blanks between words -> word time: connected speech has no pause there.

The Viterbi of the paper lets a blank run between any two labels. Between two words of connected
speech such a run is rarely a pause: it is where neither word's gradient evidence is strong,
usually the onset of the next word (a decoder recognises a word from its middle and end, so its
gradient is weak at the start). :func:`close_word_gaps` hands every gap of at most ``max_gap_s``
between two consecutive words to one of them; longer gaps (real pauses) and the silence before
the first and after the last word stay blank.

Usage::

    alignment = align_score_matrix(scores, tokens, frame_shift_s=0.01)
    alignment = close_word_gaps(alignment, max_gap_s=0.3, assign="following")
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from .result import Alignment, LabelSpan, WordSpan
from .words import frame_to_seconds

GapOwner = Literal["following", "preceding", "middle"]
GAP_OWNERS: tuple[GapOwner, ...] = ("following", "preceding", "middle")


def close_word_gaps(alignment: Alignment, *, max_gap_s: float = 0.3,
                    assign: GapOwner = "following") -> Alignment:
    """A copy of ``alignment`` whose gaps of at most ``max_gap_s`` between consecutive words belong
    to a word: the ``"following"`` one (its first label starts earlier), the ``"preceding"`` one
    (its last label ends later), or split in the ``"middle"`` (the earlier half to the left).

    Label and word spans change together (a word still runs from its first label's start to its
    last label's end); the path and scores stay those of the aligner.
    """
    if assign not in GAP_OWNERS:
        raise ValueError(f"assign={assign!r}; use one of {GAP_OWNERS}")
    if not max_gap_s >= 0:
        raise ValueError(f"max_gap_s={max_gap_s}; use a duration in seconds >= 0 (e.g. 0.3)")
    alignment.require_seconds("closing gaps of at most max_gap_s seconds")
    assert alignment.seconds_per_frame is not None
    max_gap_frames = max_gap_s / alignment.seconds_per_frame + 1e-9
    labels = list(alignment.labels)

    def close(left: int, right: int, share: float) -> None:
        """Close the gap between labels ``left`` and ``right = left + 1``; ``share`` of it goes
        to the left label, the rest to the right one."""
        gap = labels[right].start_frame - labels[left].end_frame
        if 0 < gap <= max_gap_frames:
            boundary = labels[left].end_frame + int(gap * share)
            labels[left] = _moved(labels[left], alignment, end_frame=boundary)
            labels[right] = _moved(labels[right], alignment, start_frame=boundary)

    # Separator labels (a character model's spaces) may sit between two words: "following"
    # closes the gap right before the next word, "preceding" the one right after the previous
    # word, "middle" splits both (one and the same gap when the words are adjacent).
    for before, after in zip(alignment.words, alignment.words[1:]):
        if assign in ("preceding", "middle"):
            close(before.label_end - 1, before.label_end, 1.0 if assign == "preceding" else 0.5)
        if assign == "following" or (assign == "middle" and after.label_start > before.label_end):
            close(after.label_start - 1, after.label_start, 0.0 if assign == "following" else 0.5)
    words = [_word_over(word, labels, alignment) for word in alignment.words]
    return replace(alignment, labels=labels, words=words)


def _moved(label: LabelSpan, alignment: Alignment, *, start_frame: int | None = None,
           end_frame: int | None = None) -> LabelSpan:
    start = label.start_frame if start_frame is None else start_frame
    end = label.end_frame if end_frame is None else end_frame
    return replace(label, start_frame=start, end_frame=end,
                   start_s=_seconds(start, alignment), end_s=_seconds(end, alignment))


def _word_over(word: WordSpan, labels: list[LabelSpan], alignment: Alignment) -> WordSpan:
    own = labels[word.label_start:word.label_end]
    start = min(label.start_frame for label in own)
    end = max(label.end_frame for label in own)
    return replace(word, start_frame=start, end_frame=end, start_s=_seconds(start, alignment),
                   end_s=_seconds(end, alignment))


def _seconds(frame: int, alignment: Alignment) -> float | None:
    return frame_to_seconds(frame, alignment.frame_shift_s, alignment.subsampling)
