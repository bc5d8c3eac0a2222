"""Closing short gaps between words: every short gap goes to the word asked for, long pauses and
the silence around the utterance stay, and labels keep their order."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnprobe.alignment import Alignment, alignment_from_label_frames, close_word_gaps

SHIFT = 0.01


@st.composite
def gappy_alignments(draw: st.DrawFn) -> Alignment:
    """Words of 1-3 character labels with random gaps (0-40 frames) before, between and after."""
    words = draw(st.lists(st.integers(1, 3), min_size=1, max_size=6))
    frame, spans, tokens = draw(st.integers(0, 40)), [], []
    for letters in words:
        for index in range(letters):
            length = draw(st.integers(1, 5))
            spans.append((frame, frame + length))
            tokens.append(("▁" if index == 0 else "") + "ab"[index % 2])
            frame += length + draw(st.integers(0, 2))
        frame += draw(st.integers(0, 40))
    return alignment_from_label_frames(np.array(spans), tokens, frame_shift_s=SHIFT,
                                       num_frames=frame + 1, method="gradient_viterbi",
                                       word_style="sentencepiece")


@settings(max_examples=60, deadline=None)
@given(alignment=gappy_alignments(), max_gap=st.integers(0, 30),
       assign=st.sampled_from(["following", "preceding", "middle"]))
def test_short_gaps_close_towards_the_chosen_word(alignment: Alignment, max_gap: int,
                                                  assign: str) -> None:
    closed = close_word_gaps(alignment, max_gap_s=max_gap * SHIFT, assign=assign)
    assert closed.words[0].start_frame == alignment.words[0].start_frame
    assert closed.words[-1].end_frame == alignment.words[-1].end_frame
    pairs = zip(alignment.words, alignment.words[1:], closed.words, closed.words[1:])
    for before, after, new_before, new_after in pairs:
        gap = after.start_frame - before.end_frame
        if 0 < gap <= max_gap:
            assert new_before.end_frame == new_after.start_frame
            boundary = {"following": before.end_frame, "preceding": after.start_frame,
                        "middle": before.end_frame + gap // 2}[assign]
            assert new_before.end_frame == boundary
        else:
            assert (new_before.end_frame, new_after.start_frame) == (before.end_frame,
                                                                      after.start_frame)
    for old, new in zip(alignment.labels, closed.labels):
        assert new.start_frame < new.end_frame
        assert new.start_s == pytest.approx(new.start_frame * SHIFT)
        assert new.end_s == pytest.approx(new.end_frame * SHIFT)
        assert new.start_frame <= old.start_frame and new.end_frame >= old.end_frame
    ends = [label.end_frame for label in closed.labels]
    starts = [label.start_frame for label in closed.labels]
    assert all(end <= start for end, start in zip(ends, starts[1:]))
    for word in closed.words:
        own = closed.labels[word.label_start:word.label_end]
        assert (word.start_frame, word.end_frame) == (own[0].start_frame, own[-1].end_frame)


def test_no_gap_limit_means_no_change_and_bad_options_are_named() -> None:
    alignment = alignment_from_label_frames(np.array([[2, 5], [9, 12]]), ["▁a", "▁b"],
                                            frame_shift_s=SHIFT, num_frames=20,
                                            method="gradient_viterbi")
    assert close_word_gaps(alignment, max_gap_s=0.0).words == alignment.words
    assert close_word_gaps(alignment, max_gap_s=0.04).words[1].start_frame == 5
    with pytest.raises(ValueError, match="following"):
        close_word_gaps(alignment, assign="next")
    with pytest.raises(ValueError, match="max_gap_s"):
        close_word_gaps(alignment, max_gap_s=-1)
