"""Blank scoring and Viterbi forced alignment: optimality, planted recovery, batching, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnprobe.alignment import AlignmentSettings, BlankScore
from attnprobe.alignment.decoding import (
    align_score_matrix,
    align_score_matrix_batch,
    blank_log_scores,
    label_log_scores,
    viterbi_align,
    viterbi_align_batch,
)

SETTINGS = settings(max_examples=25, deadline=None)


def _valid_paths(num_labels: int, num_frames: int):
    """Every state path the aligner may choose (brute force, tiny problems only)."""
    last = 2 * num_labels

    def extend(path):
        if len(path) == num_frames:
            if path[-1] >= last - 1:
                yield path
            return
        state = path[-1]
        moves = [state, state + 1]
        if state % 2 == 1 and state + 2 <= last:
            moves.append(state + 2)
        for nxt in moves:
            if nxt <= last:
                yield from extend(path + [nxt])

    for first in (0, 1):
        yield from extend([first])


def _path_score(path, labels: np.ndarray, blank: np.ndarray) -> float:
    return sum(
        blank[t] if state % 2 == 0 else labels[(state - 1) // 2, t] for t, state in enumerate(path)
    )


@st.composite
def small_problems(draw):
    num_labels = draw(st.integers(1, 3))
    num_frames = draw(st.integers(num_labels, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    return rng.normal(size=(num_labels, num_frames)), rng.normal(size=num_frames)


@SETTINGS
@given(small_problems())
def test_viterbi_equals_brute_force_optimum(problem):
    labels, blank = problem
    best = max(_path_score(p, labels, blank) for p in _valid_paths(*labels.shape))
    result = viterbi_align(torch.from_numpy(labels), torch.from_numpy(blank))
    assert result.path_score == pytest.approx(best, abs=1e-9)
    assert list(result.state_path) in list(_valid_paths(*labels.shape))
    assert _path_score(result.state_path, labels, blank) == pytest.approx(best, abs=1e-9)


@st.composite
def planted_segments(draw):
    num_labels = draw(st.integers(1, 6))
    gaps = draw(st.lists(st.integers(0, 3), min_size=num_labels + 1, max_size=num_labels + 1))
    lengths = draw(st.lists(st.integers(1, 4), min_size=num_labels, max_size=num_labels))
    seed = draw(st.integers(0, 2**31 - 1))
    spans, cursor = [], gaps[0]
    for length, gap in zip(lengths, gaps[1:]):
        spans.append((cursor, cursor + length))
        cursor += length + gap
    return np.array(spans), cursor, seed


@SETTINGS
@given(planted_segments())
def test_viterbi_recovers_planted_segments(planted):
    spans, num_frames, seed = planted
    rng = np.random.default_rng(seed)
    labels = rng.uniform(-20.0, -12.0, size=(len(spans), num_frames))
    for label, (start, end) in enumerate(spans):
        labels[label, start:end] = rng.uniform(-1.0, 0.0, size=end - start)
    blank = np.full(num_frames, -6.0)
    result = viterbi_align(labels, blank)
    np.testing.assert_array_equal(result.label_frames, spans)
    in_gaps = np.ones(num_frames, dtype=bool)
    for start, end in spans:
        in_gaps[start:end] = False
    assert (result.state_path[in_gaps] % 2 == 0).all()


def test_every_label_gets_a_contiguous_nonempty_span_even_for_repeated_rows():
    torch.manual_seed(0)
    row = torch.randn(1, 12)
    labels = row.repeat(5, 1)  # five copies of one token: positions, not ids
    result = viterbi_align(labels, torch.full((12,), -3.0))
    starts, ends = result.label_frames[:, 0], result.label_frames[:, 1]
    assert (ends > starts).all()
    assert (starts[1:] >= ends[:-1]).all()
    for label, (start, end) in enumerate(result.label_frames):
        assert (result.state_path[start:end] == 2 * label + 1).all()


@SETTINGS
@given(st.integers(0, 2**31 - 1))
def test_batched_equals_per_item(seed):
    rng = np.random.default_rng(seed)
    batch = 4
    label_lengths = rng.integers(1, 5, size=batch)
    frame_lengths = label_lengths + rng.integers(0, 6, size=batch)
    padded_labels = rng.uniform(50.0, 100.0, size=(batch, 4, frame_lengths.max()))
    padded_blank = rng.uniform(50.0, 100.0, size=(batch, frame_lengths.max()))
    items = []
    for item in range(batch):
        labels = rng.normal(size=(label_lengths[item], frame_lengths[item]))
        blank = rng.normal(size=frame_lengths[item])
        padded_labels[item, : labels.shape[0], : labels.shape[1]] = labels
        padded_blank[item, : blank.shape[0]] = blank
        items.append(viterbi_align(labels, blank))
    batched = viterbi_align_batch(padded_labels, padded_blank, label_lengths, frame_lengths)
    for single, together in zip(items, batched):
        np.testing.assert_array_equal(single.state_path, together.state_path)
        np.testing.assert_array_equal(single.label_frames, together.label_frames)
        assert single.path_score == pytest.approx(together.path_score)


def test_too_few_frames_names_both_counts_and_the_fix():
    with pytest.raises(ValueError, match="57 labels but only 40 frames.*subsampling"):
        viterbi_align(torch.zeros(57, 40), torch.zeros(40))


def test_empty_labels_and_nan_scores_are_refused_with_a_fix():
    with pytest.raises(ValueError, match="empty label sequence.*drop"):
        viterbi_align(torch.zeros(0, 5), torch.zeros(5))
    scores = torch.zeros(2, 5)
    scores[1, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN.*float32"):
        viterbi_align(scores, torch.zeros(5))


def test_label_log_scores_shift_and_softmax():
    torch.manual_seed(1)
    norms = torch.rand(3, 7) * 5
    logs = label_log_scores(norms)
    assert logs.max().item() == pytest.approx(0.0)
    torch.testing.assert_close(logs, norms.log() - norms.log().max())
    normalised = label_log_scores(norms, log_softmax_over_time=True)
    torch.testing.assert_close(normalised.exp().sum(dim=-1), torch.ones(3))
    zero = label_log_scores(torch.zeros(2, 3))
    assert torch.isfinite(zero).all()


def test_percentile_blank_mirrors_the_frame_summary_around_its_percentile():
    torch.manual_seed(2)
    logs = label_log_scores(torch.rand(4, 9))
    for reduction, summary in [
        ("mean", logs.mean(dim=0)),
        ("max", logs.amax(dim=0)),
        ("log_mean_exp", torch.logsumexp(logs, dim=0) - np.log(4)),
    ]:
        rule = BlankScore("percentile", reduction=reduction, percentile=60.0)
        centre = np.percentile(summary.numpy(), 60.0)
        expected = 2 * centre - summary
        torch.testing.assert_close(blank_log_scores(logs, rule), expected.float())
    assert (blank_log_scores(logs, BlankScore("constant", value=-4.0)) == -4.0).all()


def test_padded_batch_scores_match_unpadded_items():
    torch.manual_seed(3)
    first, second = torch.rand(3, 8), torch.rand(2, 5)
    padded = torch.full((2, 3, 8), 1e6)
    padded[0] = first
    padded[1, :2, :5] = second
    lengths = {"label_lengths": torch.tensor([3, 2]), "frame_lengths": torch.tensor([8, 5])}
    rule = BlankScore("percentile", reduction="log_mean_exp", percentile=60.0)
    logs = label_log_scores(padded, log_softmax_over_time=True, **lengths)
    blank = blank_log_scores(logs, rule, **lengths)
    for item, single in enumerate([first, second]):
        single_logs = label_log_scores(single, log_softmax_over_time=True)
        rows, cols = single.shape
        torch.testing.assert_close(logs[item, :rows, :cols], single_logs)
        torch.testing.assert_close(blank[item, :cols], blank_log_scores(single_logs, rule))
    assert torch.isinf(logs[1, 2]).all() and torch.isinf(blank[1, 5:]).all()


def test_gradient_norm_pipeline_recovers_planted_words():
    # 60 ms frames: "▁the" frames 2-3, "▁ca" 5, "t" 6-7 (gap 4 and 8-9 are silence).
    norms = torch.full((3, 10), 1e-4)
    norms[0, 2:4], norms[1, 5], norms[2, 6:8] = 1.0, 0.8, 0.9
    alignment = align_score_matrix(
        norms,
        ["▁the", "▁ca", "t"],
        frame_shift_s=0.01,
        subsampling=6,
        settings=AlignmentSettings.paper().replace(blank=BlankScore("constant", -4.0)),
    )
    assert [(w.text, w.start_frame, w.end_frame) for w in alignment.words] == [
        ("the", 2, 4),
        ("cat", 5, 8),
    ]
    assert alignment.words[1].start_s == pytest.approx(0.30)
    assert alignment.words[1].end_s == pytest.approx(0.48)
    batch = align_score_matrix_batch(
        torch.stack([norms, norms]),
        [["▁the", "▁ca", "t"], ["▁the", "▁cat"]],
        label_lengths=[3, 2],
        frame_lengths=[10, 8],
        frame_shift_s=0.01,
        subsampling=6,
        settings=AlignmentSettings.paper().replace(blank=BlankScore("constant", -4.0)),
    )
    assert batch[0].words == alignment.words
    assert batch[1].num_frames == 8 and len(batch[1].labels) == 2
