"""Streaming reducers give exactly the full-tensor results while the trace stores nothing."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import attnprobe
from attnprobe.probes import (
    BranchDominanceReducer,
    CrossAttentionMonotonicityReducer,
    SelfAttentionDiagonalityReducer,
    branch_dominance,
    cross_attention_monotonicity,
    self_attention_diagonality,
    streaming_probes,
)
from attnprobe.probes.result import ProbeResult
from tests.test_probes_models import (
    conformer_aed,
    speech_batch,
    tiny_wav2vec2,
    waveform_batch,
)

MODEL = conformer_aed()
KINDS = ("block", "ffn", "self_attn", "conv", "cross_attn")
CAPTURE = {"input", "output", "attention"}


def assert_same(streamed: ProbeResult, stored: ProbeResult) -> None:
    """Field by field, arrays compared exactly (NaN where the other has NaN)."""
    assert type(streamed) is type(stored)
    for name, value in vars(stored).items():
        other = vars(streamed)[name]
        if isinstance(value, np.ndarray):
            assert np.array_equal(other, value, equal_nan=True), name
        else:
            assert other == value, name


@settings(max_examples=8, deadline=None)
@given(frames=st.lists(st.integers(5, 10), min_size=1, max_size=3), seed=st.integers(0, 100),
       passes=st.integers(1, 2))
def test_streaming_equals_stored_and_stores_nothing(frames: list[int], seed: int,
                                                    passes: int) -> None:
    batch = speech_batch(frames, [4] * len(frames), seed=seed)
    reducers = [CrossAttentionMonotonicityReducer(), SelfAttentionDiagonalityReducer(),
                BranchDominanceReducer()]
    with torch.no_grad():
        with attnprobe.trace(MODEL, kind=KINDS, capture=CAPTURE, reducers=reducers,
                             store=False) as streaming:
            for _ in range(passes):
                MODEL(batch.inputs, batch.input_lengths, batch.labels, batch.label_lengths)
        with attnprobe.trace(MODEL, kind=KINDS, capture=CAPTURE) as stored:
            for _ in range(passes):
                MODEL(batch.inputs, batch.input_lengths, batch.labels, batch.label_lengths)
    assert streaming.stored_bytes == 0
    assert all(record.calls == 0 for record in streaming)
    cross, diagonality, dominance = (reducer.result() for reducer in reducers)
    assert_same(cross, cross_attention_monotonicity(stored))
    assert_same(diagonality, self_attention_diagonality(stored))
    assert_same(dominance, branch_dominance(stored))
    assert cross.per_sequence.shape[0] == passes * len(frames)


def test_streaming_probes_runs_one_pass_per_family() -> None:
    batch = speech_batch([8, 5], [4, 4])
    results = streaming_probes(MODEL, batch)
    with attnprobe.trace(MODEL, kind=KINDS, capture=CAPTURE) as stored, torch.no_grad():
        MODEL(batch.inputs, batch.input_lengths, batch.labels, batch.label_lengths)
    assert results.cross_attention is not None and results.unavailable == {}
    assert_same(results.cross_attention, cross_attention_monotonicity(stored))
    assert results.diagonality is not None and results.dominance is not None
    assert_same(results.diagonality, self_attention_diagonality(stored))

    model = tiny_wav2vec2()
    waveform = waveform_batch([6, 4])
    encoder_only = streaming_probes(model, waveform)
    assert encoder_only.cross_attention is None
    assert "no attention decoder" in encoder_only.unavailable["cross_attention"]
    assert encoder_only.diagonality is not None and encoder_only.dominance is not None
    assert encoder_only.dominance.branches == ["self_attn", "ffn"]
    assert encoder_only.diagonality.per_sequence.shape == (2, 3, 2)
