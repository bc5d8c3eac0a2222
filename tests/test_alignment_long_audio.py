"""Audio of any length: windows stitched without losing or duplicating a word, whatever the window
edges, the speaking rate or the aligner's errors (a stand-in aligner with known answers)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnprobe.alignment.long_audio import LongAudioPlan, align_long


@st.composite
def recordings(draw):
    """Words with true times (pauses and speaking rate vary), a plan, and aligner noise."""
    count = draw(st.integers(1, 60))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    words = ["".join(rng.choice(list("abcdefghij"), size=rng.integers(1, 9))) for _ in range(count)]
    durations = rng.uniform(0.1, 0.8, size=count)
    pauses = rng.exponential(draw(st.floats(0.02, 2.0)), size=count)
    starts = np.cumsum(pauses + np.concatenate([[0.0], durations[:-1]]))
    truth = [(float(s), float(s + d)) for s, d in zip(starts, durations)]
    total = truth[-1][1] + float(rng.uniform(0.0, 3.0))
    window = draw(st.floats(4.0, 30.0))
    overlap = draw(st.floats(0.5, window / 2))
    lead_in = draw(st.floats(0.0, min(2.0, window - overlap - 0.1)))
    max_labels = draw(st.one_of(st.none(), st.integers(10, 200)))
    plan = LongAudioPlan(window_s=window, overlap_s=overlap, lead_in_s=lead_in,
                         max_labels=max_labels, rate_margin=draw(st.floats(0.5, 2.0)))
    return words, truth, total, plan, draw(st.floats(0.0, 0.3)), draw(st.integers(0, 99))


def stand_in_aligner(truth, words, jitter, seed, calls):
    """Places the words it is given where they are, when they lie in the window; words that do not
    fit are squeezed at the window's end, as a forced aligner does; times jitter."""
    rng = np.random.default_rng(seed)
    position = {"next": 0}

    def align(start, end, piece):
        calls.append((start, end, list(piece)))
        # Which words these are: the aligner is handed a contiguous slice of the transcript.
        first = position["next"]
        while words[first:first + len(piece)] != list(piece):
            first += 1
        placed = []
        cursor = start
        for index in range(first, first + len(piece)):
            word_start, word_end = truth[index]
            noise = rng.uniform(-jitter, jitter)
            if word_start >= start and word_end <= end:
                word_start, word_end = word_start + noise, word_end + noise
            else:
                word_start, word_end = max(cursor, end - 0.05), end
            word_start = min(max(word_start, cursor, start), end)
            word_end = min(max(word_end, word_start + 1e-3), end)
            placed.append((word_start, word_end))
            cursor = word_start
        position["next"] = first
        return placed

    return align


@settings(max_examples=60, deadline=None)
@given(recordings())
def test_every_word_once_in_order_whatever_the_windows(case):
    words, truth, total, plan, jitter, seed = case
    calls = []
    times, windows = align_long(words, total, stand_in_aligner(truth, words, jitter, seed, calls),
                                plan)
    # One span per word: none lost, none duplicated, committed in order by contiguous windows.
    assert len(times) == len(words)
    assert [w.first_word for w in windows] == [0] + [w.end_word for w in windows[:-1]]
    assert windows[-1].end_word == len(words)
    assert all(w.end_word > w.first_word for w in windows)
    # Spans are ordered, non-empty or empty but never reversed, and inside the recording.
    starts = np.array([s for s, _ in times])
    ends = np.array([e for _, e in times])
    assert (ends >= starts).all() and (np.diff(starts) >= 0).all()
    assert (starts[1:] >= ends[:-1] - 1e-9).all()
    assert starts.min() >= 0 and ends.max() <= total + 1e-9
    # Every window fits the plan.
    for start, end, piece in calls:
        assert 0 <= start < end <= total + 1e-9 and end - start <= plan.window_s + 1e-9
        if plan.max_labels is not None and len(piece) > 1:
            assert sum(len(word) + 1 for word in piece) <= plan.max_labels


@settings(max_examples=30, deadline=None)
@given(recordings())
def test_a_perfect_aligner_gives_the_true_times(case):
    words, truth, total, plan, _, seed = case
    # Generous windows for the words' lengths: every word fits some window whole.
    if max(end - start for start, end in truth) > plan.overlap_s:
        return
    times, _ = align_long(words, total, stand_in_aligner(truth, words, 0.0, seed, []), plan)
    committed_wrongly = [index for index, (got, want) in enumerate(zip(times, truth))
                         if not np.allclose(got, want)]
    # Only words squeezed into a window they do not fit could be off; with overlap at least a
    # word long, the window that commits a word holds it whole.
    assert not committed_wrongly, (committed_wrongly, plan)


def test_plan_rejects_windows_that_cannot_advance():
    with pytest.raises(ValueError, match="overlap"):
        LongAudioPlan(window_s=10, overlap_s=10)
    with pytest.raises(ValueError, match="lead-in"):
        LongAudioPlan(window_s=10, overlap_s=5, lead_in_s=6)
