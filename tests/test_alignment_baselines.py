"""Baselines: Whisper-style cross-attention DTW, the evenly-spaced floor, CTC forced alignment."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from attnprobe.alignment.baselines import (
    cross_attention_alignment,
    cross_attention_matrix,
    ctc_forced_alignment,
    ctc_forced_alignment_batch,
    ctc_label_frames,
    dtw_align,
    evenly_spaced_alignment,
    evenly_spaced_label_frames,
)

SETTINGS = settings(max_examples=20, deadline=None)


def _whisper_dtw(x: np.ndarray) -> np.ndarray:
    """openai-whisper ``timing.dtw_cpu`` + ``backtrace``, transcribed as the reference."""
    n, m = x.shape
    cost = np.ones((n + 1, m + 1)) * np.inf
    trace = -np.ones((n + 1, m + 1))
    cost[0, 0] = 0
    for j in range(1, m + 1):
        for i in range(1, n + 1):
            c0, c1, c2 = cost[i - 1, j - 1], cost[i - 1, j], cost[i, j - 1]
            if c0 < c1 and c0 < c2:
                c, t = c0, 0
            elif c1 < c0 and c1 < c2:
                c, t = c1, 1
            else:
                c, t = c2, 2
            cost[i, j] = x[i - 1, j - 1] + c
            trace[i, j] = t
    i, j = n, m
    trace[0, :] = 2
    trace[:, 0] = 1
    result = []
    while i > 0 or j > 0:
        result.append((i - 1, j - 1))
        if trace[i, j] == 0:
            i, j = i - 1, j - 1
        elif trace[i, j] == 1:
            i -= 1
        else:
            j -= 1
    return np.array(result[::-1]).T


def _whisper_matrix(weights: torch.Tensor, width: int) -> torch.Tensor:
    """openai-whisper ``find_alignment`` normalisation and ``median_filter``."""
    std, mean = torch.std_mean(weights, dim=-2, keepdim=True, unbiased=False)
    weights = (weights - mean) / std
    pad = width // 2
    padded = F.pad(weights[None], (pad, pad, 0, 0), mode="reflect")[0]
    filtered = padded.unfold(-1, width, 1).sort()[0][..., width // 2]
    return filtered.mean(dim=0)


@SETTINGS
@given(st.integers(1, 7), st.integers(1, 9), st.integers(0, 2**31 - 1))
def test_dtw_matches_whisper_reference_exactly(rows, columns, seed):
    cost = np.random.default_rng(seed).normal(size=(rows, columns))
    labels, frames = dtw_align(cost)
    np.testing.assert_array_equal(np.stack([labels, frames]), _whisper_dtw(cost))
    steps = np.diff(np.stack([labels, frames], axis=1), axis=0)
    assert {tuple(step) for step in steps} <= {(1, 1), (1, 0), (0, 1)}
    assert (labels[0], frames[0], labels[-1], frames[-1]) == (0, 0, rows - 1, columns - 1)


def test_dtw_breaks_ties_like_whisper():
    # Costs of 0 and 1 tie often; a different tie rule gives a different (equally cheap) path.
    rng = np.random.default_rng(0)
    for _ in range(200):
        cost = rng.integers(0, 2, size=(rng.integers(2, 8), rng.integers(2, 10)))
        np.testing.assert_array_equal(np.stack(dtw_align(cost)), _whisper_dtw(cost))


def test_alignment_matrix_matches_whisper_normalisation_and_filter():
    torch.manual_seed(0)
    attention = torch.randn(3, 5, 20).softmax(dim=-1)
    ours = cross_attention_matrix(attention, median_filter_width=7)
    np.testing.assert_allclose(ours, _whisper_matrix(attention.double(), 7).numpy(), atol=1e-12)


def test_cross_attention_dtw_recovers_planted_attention():
    # Two heads attend label s to frames [3s, 3s + 3): a staircase DTW must follow.
    spans = np.array([[0, 3], [3, 6], [6, 9], [9, 12]])
    logits = torch.full((2, 4, 12), -5.0)
    for label, (start, end) in enumerate(spans):
        logits[:, label, start:end] = 5.0
    alignment = cross_attention_alignment(
        logits.softmax(dim=-1),
        ["Ġthe", "Ġca", "t", "Ġsat"],
        frame_shift_s=0.01,
        subsampling=2,
        median_filter_width=1,
    )
    frames = np.array([[label.start_frame, label.end_frame] for label in alignment.labels])
    np.testing.assert_array_equal(frames, spans)
    assert [w.text for w in alignment.words] == ["the", "cat", "sat"]
    times = [time for word in alignment.words for time in (word.start_s, word.end_s)]
    assert times == pytest.approx([0.0, 0.06, 0.06, 0.18, 0.18, 0.24])
    assert alignment.method == "cross_attention_dtw"


def test_cross_attention_cuts_padding_and_selects_rows():
    torch.manual_seed(1)
    attention = torch.randn(2, 6, 30).softmax(dim=-1)
    alignment = cross_attention_alignment(
        attention,
        ["▁a", "▁b", "▁c"],
        frame_shift_s=0.01,
        subsampling=2,
        num_frames=10,
        aligned_rows=slice(2, 5),
    )
    assert alignment.num_frames == 10 and alignment.scores.shape == (3, 10)
    expected = cross_attention_matrix(attention[..., :10])[2:5]
    np.testing.assert_allclose(alignment.scores, expected)
    with pytest.raises(ValueError, match="aligned_rows"):
        cross_attention_alignment(attention, ["▁a"], frame_shift_s=0.01)


@SETTINGS
@given(st.integers(1, 20), st.integers(0, 30))
def test_evenly_spaced_tiles_the_frames(labels, extra_frames):
    frames = labels + extra_frames
    spans = evenly_spaced_label_frames(labels, frames)
    assert spans[0, 0] == 0 and spans[-1, 1] == frames
    np.testing.assert_array_equal(spans[1:, 0], spans[:-1, 1])
    lengths = spans[:, 1] - spans[:, 0]
    assert lengths.min() >= 1 and lengths.max() - lengths.min() <= 1


def test_evenly_spaced_alignment_and_its_error():
    alignment = evenly_spaced_alignment(["▁a", "▁b"], 10, frame_shift_s=0.01, subsampling=4)
    times = [time for word in alignment.words for time in (word.start_s, word.end_s)]
    assert times == pytest.approx([0.0, 0.2, 0.2, 0.4])
    with pytest.raises(ValueError, match="3 labels over 2 frames"):
        evenly_spaced_label_frames(3, 2)


@st.composite
def planted_ctc_paths(draw):
    """Targets (repeats allowed) and a frame labelling with blanks between repeats."""
    targets = draw(st.lists(st.integers(1, 3), min_size=1, max_size=5))
    frame_tokens: list[int] = [0] * draw(st.integers(0, 2))
    spans = []
    for index, token in enumerate(targets):
        repeat = index > 0 and targets[index - 1] == token
        frame_tokens += [0] * draw(st.integers(1 if repeat else 0, 2))
        start = len(frame_tokens)
        frame_tokens += [token] * draw(st.integers(1, 3))
        spans.append((start, len(frame_tokens)))
    frame_tokens += [0] * draw(st.integers(0, 2))
    return targets, np.array(frame_tokens), np.array(spans), draw(st.integers(0, 2**31 - 1))


def _planted_log_probs(frame_tokens: np.ndarray, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(len(frame_tokens), 4, generator=generator)
    logits[torch.arange(len(frame_tokens)), torch.from_numpy(frame_tokens)] += 10.0
    return logits.log_softmax(dim=-1)


@SETTINGS
@given(planted_ctc_paths())
def test_ctc_forced_alignment_recovers_planted_path(planted):
    pytest.importorskip("torchaudio")
    targets, frame_tokens, spans, seed = planted
    tokens = [f"{'abc'[token - 1]}" for token in targets]
    alignment = ctc_forced_alignment(
        _planted_log_probs(frame_tokens, seed),
        targets,
        tokens,
        frame_shift_s=0.01,
        subsampling=4,
        word_style="characters",
    )
    frames = np.array([[label.start_frame, label.end_frame] for label in alignment.labels])
    np.testing.assert_array_equal(frames, spans)
    np.testing.assert_array_equal(alignment.path[:, 1], np.flatnonzero(frame_tokens))
    np.testing.assert_array_equal(ctc_label_frames(frame_tokens, len(targets)), spans)


def test_ctc_batch_matches_single_calls_and_refuses_impossible_targets():
    pytest.importorskip("torchaudio")
    first = np.array([0, 1, 1, 0, 1, 2, 0])
    second = np.array([3, 0, 2, 2])
    log_probs = torch.zeros(2, 7, 4)
    log_probs[0] = _planted_log_probs(first, 0)
    log_probs[1, :4] = _planted_log_probs(second, 1)
    targets = torch.tensor([[1, 1, 2], [3, 2, 0]])
    tokens = [["▁a", "▁a", "b"], ["▁c", "b"]]
    timing = {"frame_shift_s": 0.01, "subsampling": 4}
    batch = ctc_forced_alignment_batch(
        log_probs, targets, tokens, frame_lengths=[7, 4], target_lengths=[3, 2], **timing
    )
    single = ctc_forced_alignment(log_probs[1, :4], targets[1, :2], tokens[1], **timing)
    assert batch[1].words == single.words and batch[1].path_score == single.path_score
    assert [(w.text, w.start_frame, w.end_frame) for w in batch[0].words] == [
        ("a", 1, 3),
        ("ab", 4, 6),
    ]
    with pytest.raises(ValueError, match="needs 3 \\(a blank between repeats\\)"):
        ctc_forced_alignment(
            log_probs[0, :2], [1, 1], ["a", "a"], word_style="characters", **timing
        )
