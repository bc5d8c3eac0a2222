"""Time-stamp error: the paper's per-word definitions, boundary shares, pooling over a corpus."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnprobe.alignment.decoding import (
    WordSpan,
    aggregate_timestamp_errors,
    alignment_from_label_frames,
    timestamp_errors,
)

SETTINGS = settings(max_examples=25, deadline=None)


def test_hand_computed_example():
    reference = [("the", 0.10, 0.30), ("cat", 0.40, 0.80)]
    predicted = [("the", 0.12, 0.27), ("cat", 0.50, 0.80)]
    errors = timestamp_errors(predicted, reference)
    # the: |20| and |-30| ms -> boundaries 25, centre |(20 - 30) / 2| = 5.
    # cat: |100| and |0| ms -> boundaries 50, centre 50.
    assert errors.boundary_errors_ms == pytest.approx([25.0, 50.0])
    assert errors.centre_errors_ms == pytest.approx([5.0, 50.0])
    assert errors.tse_boundaries_ms == pytest.approx(37.5)
    assert errors.tse_position_ms == pytest.approx(27.5)
    # Boundaries 20, 30, 100, 0 ms: two of four within 20 ms, three within 50 ms.
    assert errors.within_20ms == pytest.approx(0.5)
    assert errors.within_50ms == pytest.approx(0.75)
    summary = errors.to_dict()
    assert summary["num_words"] == 2 and summary["mean_start_offset_ms"] == pytest.approx(60.0)
    assert "boundaries 37.5 ms" in errors.summary()


@SETTINGS
@given(
    st.lists(st.tuples(st.floats(0, 10), st.floats(0.01, 2)), min_size=1, max_size=10),
    st.floats(-0.5, 0.5),
)
def test_a_constant_shift_moves_every_error_by_the_shift(words, shift):
    reference = [
        (f"w{index}", start, start + length) for index, (start, length) in enumerate(words)
    ]
    shifted = [(text, start + shift, end + shift) for text, start, end in reference]
    errors = timestamp_errors(shifted, reference)
    assert errors.tse_boundaries_ms == pytest.approx(abs(shift) * 1000, abs=1e-6)
    assert errors.tse_position_ms == pytest.approx(abs(shift) * 1000, abs=1e-6)
    assert timestamp_errors(reference, reference).tse_boundaries_ms == 0.0


@SETTINGS
@given(st.lists(st.integers(1, 6), min_size=1, max_size=5), st.integers(0, 2**31 - 1))
def test_corpus_figure_pools_words_not_utterance_means(sizes, seed):
    rng = np.random.default_rng(seed)
    per_utterance = []
    for size in sizes:
        reference = [(f"w{i}", float(i), float(i) + 0.5) for i in range(size)]
        noise = rng.normal(scale=0.05, size=(size, 2))
        predicted = [(t, s + a, e + b) for (t, s, e), (a, b) in zip(reference, noise)]
        per_utterance.append(timestamp_errors(predicted, reference))
    pooled = aggregate_timestamp_errors(per_utterance)
    assert pooled.num_words == sum(sizes)
    every_word = np.concatenate([errors.boundary_errors_ms for errors in per_utterance])
    assert pooled.tse_boundaries_ms == pytest.approx(every_word.mean())
    weighted = sum(e.within_50ms * e.num_words for e in per_utterance) / sum(sizes)
    assert pooled.within_50ms == pytest.approx(weighted)


def test_word_spans_from_an_alignment_are_accepted():
    alignment = alignment_from_label_frames(
        np.array([[1, 3], [4, 6]]),
        ["▁Hello,", "▁World"],
        frame_shift_s=0.01,
        subsampling=6,
        num_frames=8,
        method="test",
    )
    errors = timestamp_errors(alignment.words, [("hello", 0.06, 0.18), ("world", 0.24, 0.36)])
    assert errors.tse_boundaries_ms == pytest.approx(0.0, abs=1e-9)
    assert isinstance(alignment.words[0], WordSpan)


def test_mismatches_are_refused_with_a_fix():
    reference = [("a", 0.0, 0.1), ("b", 0.1, 0.2)]
    with pytest.raises(ValueError, match="1 predicted words but 2 reference words"):
        timestamp_errors(reference[:1], reference)
    with pytest.raises(ValueError, match="word 1 differs.*check_words=False"):
        timestamp_errors([("a", 0.0, 0.1), ("c", 0.1, 0.2)], reference)
    relaxed = timestamp_errors([("a", 0.0, 0.1), ("c", 0.1, 0.2)], reference, check_words=False)
    assert relaxed.num_words == 2
    with pytest.raises(ValueError, match="no utterances"):
        aggregate_timestamp_errors([])
