"""Streaming reducers give the probes' numbers while the trace stores nothing: checked against an
independent computation from the stored full tensors (plain numpy loops written here, not the
reducers replayed), and against the stored-record API."""

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


def spearman_with_position(values: np.ndarray) -> float:
    """Spearman correlation of ``values`` with 0, 1, ...: Pearson of average ranks."""
    order = values.argsort(kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    for value in np.unique(values):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    positions = np.arange(len(values), dtype=float)
    if ranks.std() == 0:
        return 0.0
    return float(np.corrcoef(ranks, positions)[0, 1])


def oracle_cross_attention(stored: attnprobe.Trace) -> np.ndarray:
    """``(sequences, layers, heads)``: per head, Spearman of each label (the end-of-sentence
    position left out) with its attention-weighted mean encoder frame."""
    record = stored["decoder.0.cross_attn"]
    scores = []
    for call in record.attentions:
        for item in range(call.value.shape[0]):
            labels, frames = int(call.lengths[item]) - 1, int(call.key_lengths[item])
            weights = call.value[item, :, :labels, :frames].double().numpy()
            centres = (weights * np.arange(frames)).sum(-1) / weights.sum(-1)
            scores.append([[spearman_with_position(np.round(head, 6)) for head in centres]])
    return np.array(scores)


def oracle_diagonality(stored: attnprobe.Trace, band: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``(sequences, layers, heads)`` attention mass within ``band`` frames of the diagonal and
    of the anti-diagonal, averaged over the queries whose two bands do not overlap."""
    records = stored.select(kind="self_attn", stack="encoder")
    near, anti = [], []
    for call_index in range(records[0].calls):
        for item in range(records[0].attentions[call_index].value.shape[0]):
            near.append([]), anti.append([])
            for record in records:
                call = record.attentions[call_index]
                length = int(call.lengths[item])
                weights = call.value[item, :, :length, :length].double().numpy()
                diagonal, mirrored = [], []
                for query in range(length):
                    if abs(2 * query - (length - 1)) <= 2 * band:
                        continue
                    keys = np.arange(length)
                    diagonal.append(weights[:, query, abs(keys - query) <= band].sum(-1))
                    mirror = length - 1 - query
                    mirrored.append(weights[:, query, abs(keys - mirror) <= band].sum(-1))
                near[-1].append(np.mean(diagonal, axis=0))
                anti[-1].append(np.mean(mirrored, axis=0))
    return np.array(near), np.array(anti)


def oracle_dominance(stored: attnprobe.Trace) -> tuple[np.ndarray, np.ndarray]:
    """``(sequences, blocks, branches)`` branch / residual mean frame norms, and ``(sequences,
    blocks)`` mean cosine of block input and output, over valid frames."""
    blocks = stored.select(kind="block", stack="encoder")
    ratios, survival = [], []
    for call_index in range(blocks[0].calls):
        batch = blocks[0].outputs[call_index].value.shape[0]
        for item in range(batch):
            ratio_rows, survival_row = [], []
            for block in blocks:
                length = int(block.outputs[call_index].lengths[item])
                branches = stored.select(f"encoder.{block.site.layer}.*",
                                         kind=("ffn", "self_attn", "conv"))
                row = []
                for branch in branches:
                    output = branch.outputs[call_index].value[item, :length].double()
                    residual = branch.inputs[call_index].value[item, :length].double()
                    row.append(float(output.norm(dim=-1).mean() / residual.norm(dim=-1).mean()))
                ratio_rows.append(row)
                into = block.inputs[call_index].value[item, :length].double()
                out = block.outputs[call_index].value[item, :length].double()
                survival_row.append(float(torch.nn.functional.cosine_similarity(
                    into, out, dim=-1).mean()))
            ratios.append(ratio_rows)
            survival.append(survival_row)
    return np.array(ratios), np.array(survival)


@settings(max_examples=8, deadline=None)
@given(frames=st.lists(st.integers(5, 10), min_size=1, max_size=3), seed=st.integers(0, 100),
       passes=st.integers(1, 2))
def test_streaming_equals_an_independent_computation_and_stores_nothing(
        frames: list[int], seed: int, passes: int) -> None:
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
    np.testing.assert_allclose(cross.per_sequence, oracle_cross_attention(stored), atol=1e-9)
    near, anti = oracle_diagonality(stored)
    np.testing.assert_allclose(diagonality.near_diagonal, near, atol=1e-6)
    np.testing.assert_allclose(diagonality.near_anti_diagonal, anti, atol=1e-6)
    ratios, survival = oracle_dominance(stored)
    np.testing.assert_allclose(dominance.per_sequence_ratio, ratios, rtol=1e-5)
    np.testing.assert_allclose(dominance.survival, survival, atol=1e-6)
    # The stored-record API gives the same results as the live reducers.
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
