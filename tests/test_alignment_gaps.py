"""Closing short gaps between words: every short gap goes to the word asked for, long pauses and
the silence around the utterance stay, and labels keep their order."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnprobe.alignment.decoding import Alignment, alignment_from_label_frames, close_word_gaps

SHIFT = 0.01


@st.composite
def gappy_alignments(draw: st.DrawFn) -> Alignment:
    """Words of 1-3 labels with random gaps (0-40 frames) before, between and after; a character
    model's space labels between the words when ``separators`` is drawn."""
    separators = draw(st.booleans())
    words = draw(st.lists(st.integers(1, 3), min_size=1, max_size=6))
    frame, spans, tokens = draw(st.integers(0, 40)), [], []

    def label(token: str, most_after: int) -> None:
        nonlocal frame
        length = draw(st.integers(1, 5))
        spans.append((frame, frame + length))
        tokens.append(token)
        frame += length + draw(st.integers(0, most_after))

    for number, letters in enumerate(words):
        if separators and number:
            label(" ", 20)
        for index in range(letters):
            marker = "" if separators or index else "▁"
            label(marker + "ab"[index % 2], 40 if index == letters - 1 else 2)
    style = "characters" if separators else "sentencepiece"
    return alignment_from_label_frames(np.array(spans), tokens, frame_shift_s=SHIFT,
                                       num_frames=frame + 1, method="gradient_viterbi",
                                       word_style=style)


def gap_before(labels: list, index: int) -> int:
    return labels[index].start_frame - labels[index - 1].end_frame


@settings(max_examples=80, deadline=None)
@given(alignment=gappy_alignments(), max_gap=st.integers(0, 30),
       assign=st.sampled_from(["following", "preceding", "middle"]))
def test_short_gaps_close_towards_the_chosen_word(alignment: Alignment, max_gap: int,
                                                  assign: str) -> None:
    closed = close_word_gaps(alignment, max_gap_s=max_gap * SHIFT, assign=assign)
    old, new = alignment.labels, closed.labels
    assert closed.words[0].start_frame == alignment.words[0].start_frame
    assert closed.words[-1].end_frame == alignment.words[-1].end_frame
    touched = set()
    for before, after in zip(alignment.words, alignment.words[1:]):
        gaps = {"following": [after.label_start], "preceding": [before.label_end],
                "middle": sorted({before.label_end, after.label_start})}[assign]
        for right in gaps:
            touched.add(right)
            gap = gap_before(old, right)
            if 0 < gap <= max_gap:
                assert gap_before(new, right) == 0
                share = {"following": 0, "preceding": gap, "middle": gap // 2}[assign]
                assert new[right].start_frame == old[right - 1].end_frame + share
            else:
                assert gap_before(new, right) == gap
    for right in set(range(1, len(old))) - touched:
        assert gap_before(new, right) == gap_before(old, right)
    for before_closing, label in zip(old, new):
        assert label.start_frame < label.end_frame
        assert label.start_s == pytest.approx(label.start_frame * SHIFT)
        assert label.end_s == pytest.approx(label.end_frame * SHIFT)
        assert label.start_frame <= before_closing.start_frame
        assert label.end_frame >= before_closing.end_frame
    assert all(gap_before(new, right) >= 0 for right in range(1, len(new)))
    for word in closed.words:
        own = new[word.label_start:word.label_end]
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
