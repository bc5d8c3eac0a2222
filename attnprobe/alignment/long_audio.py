"""Audio of any length: windows the model accepts, each transcript word aligned in exactly one.

Whisper reads at most 30 s, and its decoder at most 448 positions (a spelled transcript uses one
per character), so a long recording is aligned window by window:

1. **Coarse assignment.** The next window starts at ``start`` and lasts ``window_s``; the words
   that go into it are the next uncommitted words, as many as the whole recording's speaking rate
   (characters per second) predicts for the window, a quarter more for safety, within the
   decoder's label budget.
2. **Alignment of the window** by ``align_window(start_s, end_s, words)``, which returns one
   ``(start, end)`` per word in seconds of the recording.
3. **Commit with overlap.** Words that end before the last ``overlap_s`` of the window are kept
   (all of them in the window that reaches the end of the audio, and at least the first word, so
   that every step advances); the next window starts ``lead_in_s`` before the first word not kept,
   where it is re-aligned with audio on both sides.

Every word is committed once, in order, so words that straddle a window edge are neither lost nor
duplicated (``tests/test_alignment_long_audio.py`` checks it over random window edges).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

WindowAligner = Callable[[float, float, Sequence[str]], Sequence[tuple[float, float]]]
"""``(start_s, end_s, words) -> [(word start, word end)]`` in seconds of the whole recording."""


@dataclass(frozen=True)
class LongAudioPlan:
    """How a long recording is cut.

    Attributes:
        window_s: seconds per window (at most what the model reads).
        overlap_s: words ending in a window's last ``overlap_s`` seconds are re-aligned in the next.
        lead_in_s: audio kept before the first word of the next window.
        max_labels: labels one window may hold (the decoder's positions), or ``None``.
        rate_margin: how many more words than the speaking rate predicts a window gets.
    """

    window_s: float = 20.0
    overlap_s: float = 5.0
    lead_in_s: float = 1.0
    max_labels: int | None = None
    rate_margin: float = 1.25

    def __post_init__(self) -> None:
        if not 0 < self.overlap_s < self.window_s or self.lead_in_s < 0 \
                or self.lead_in_s >= self.window_s - self.overlap_s:
            raise ValueError(f"window_s={self.window_s}, overlap_s={self.overlap_s}, lead_in_s="
                             f"{self.lead_in_s}: need 0 < overlap < window and a lead-in shorter "
                             f"than window - overlap")


@dataclass(frozen=True)
class WindowRecord:
    """One window as it was aligned: its span, and the words it committed ``[first, end)``."""

    start_s: float
    end_s: float
    first_word: int
    end_word: int


def align_long(words: Sequence[str], duration_s: float, align_window: WindowAligner,
               plan: LongAudioPlan = LongAudioPlan(),
               label_counts: Sequence[int] | None = None
               ) -> tuple[list[tuple[float, float]], list[WindowRecord]]:
    """One ``(start, end)`` per word over the whole recording, and the windows used.

    Args:
        words: the transcript's words, in order.
        duration_s: the recording's length.
        align_window: aligns a slice of words to a slice of audio (see :data:`WindowAligner`).
        plan: window sizes.
        label_counts: labels per word (for ``plan.max_labels``); one per character by default.
    """
    if not words:
        return [], []
    counts = list(label_counts) if label_counts is not None else [len(word) + 1 for word in words]
    rate = sum(len(word) + 1 for word in words) / max(duration_s, 1e-6)
    times: list[tuple[float, float]] = []
    windows: list[WindowRecord] = []
    start, first = 0.0, 0
    while first < len(words):
        end = min(duration_s, start + plan.window_s)
        last_window = end >= duration_s - 1e-9
        count = _words_for(words, counts, first, (end - start) * rate * plan.rate_margin,
                           plan.max_labels, last_window)
        placed = list(align_window(start, end, words[first:first + count]))
        if len(placed) != count:
            raise ValueError(f"the window aligner returned {len(placed)} spans for {count} words")
        keep = count if last_window and first + count == len(words) else \
            _committed(placed, end - plan.overlap_s)
        for word_start, word_end in placed[:keep]:
            # A re-aligned word may not start before the word committed before it ends.
            floor = times[-1][1] if times else 0.0
            times.append((max(word_start, floor), max(word_end, word_start, floor)))
        windows.append(WindowRecord(start, end, first, first + keep))
        first += keep
        if first < len(words):
            following = placed[keep][0] if keep < count else placed[keep - 1][1]
            start = max(start + 1e-3, min(following - plan.lead_in_s, end - plan.overlap_s))
    return times, windows


def _words_for(words: Sequence[str], counts: Sequence[int], first: int, characters: float,
               max_labels: int | None, last_window: bool) -> int:
    """How many words from ``first`` go into the next window (at least one)."""
    total_labels, total_characters, count = 0, 0, 0
    for index in range(first, len(words)):
        labels = counts[index]
        if max_labels is not None and total_labels + labels > max_labels and count:
            break
        if not last_window and total_characters > characters and count:
            break
        total_labels += labels
        total_characters += len(words[index]) + 1
        count += 1
    return max(count, 1)


def _committed(placed: Sequence[tuple[float, float]], cutoff_s: float) -> int:
    """Words (a prefix) that end before ``cutoff_s``; at least one, so that each step advances."""
    keep = 0
    while keep < len(placed) and placed[keep][1] <= cutoff_s:
        keep += 1
    return max(keep, 1)


def windows_needed(duration_s: float, plan: LongAudioPlan) -> int:
    """A lower bound on the windows a recording takes (for progress messages)."""
    if duration_s <= plan.window_s:
        return 1
    return 1 + math.ceil((duration_s - plan.window_s) / (plan.window_s - plan.overlap_s))
