"""Cross-attention monotonicity and self-attention diagonality: expected values on forced patterns,
padding, and the errors a user can hit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import attnprobe
from attnprobe.errors import CapabilityError, InputError
from attnprobe.probes import cross_attention_monotonicity, self_attention_diagonality
from attnprobe.probes.cross_attention import monotonicity_of_call
from attnprobe.probes.statistics import rank_correlation_with_position
from attnprobe.records import Captured
from attnprobe.testing import force_attention
from tests.test_probes_models import conformer_aed, speech_batch

MODEL = conformer_aed()
EXPECTED = {"diagonal": 1.0, "anti-diagonal": -1.0, "uniform": 0.0}


def traced(batch: attnprobe.SpeechBatch, kinds: tuple[str, ...] = ("self_attn", "cross_attn")
           ) -> attnprobe.Trace:
    with attnprobe.trace(MODEL, kind=kinds) as trace, torch.no_grad():
        MODEL(batch.inputs, batch.input_lengths, batch.labels, batch.label_lengths)
    return trace


@st.composite
def batches(draw: st.DrawFn) -> attnprobe.SpeechBatch:
    """1-3 sequences of 5-10 encoder frames, each with 4 labels up to frames - 1."""
    frames = draw(st.lists(st.integers(5, 10), min_size=1, max_size=3))
    labels = [draw(st.integers(4, length - 1)) for length in frames]
    return speech_batch(frames, labels, seed=draw(st.integers(0, 1000)))


@settings(max_examples=15, deadline=None)
@given(values=st.lists(st.integers(-10**6, 10**6), min_size=2, max_size=30, unique=True))
def test_rank_correlation_follows_order_only(values: list[int]) -> None:
    # Positions closer than 1e-6 frames rank as ties (TIE_DECIMALS); these are 1e-3 apart.
    increasing = np.sort(np.array(values)) / 1e3
    assert rank_correlation_with_position(increasing) == pytest.approx(1.0)
    assert rank_correlation_with_position(increasing[::-1]) == pytest.approx(-1.0)
    assert rank_correlation_with_position(np.sinh(increasing / 100)) == pytest.approx(1.0)
    assert -1.0 <= rank_correlation_with_position(np.array(values)) <= 1.0
    assert rank_correlation_with_position(np.full(len(values), 2.5)) == 0.0


@settings(max_examples=12, deadline=None)
@given(batch=batches(), pattern=st.sampled_from(sorted(EXPECTED)))
def test_forced_patterns_give_their_expected_scores(batch: attnprobe.SpeechBatch,
                                                    pattern: str) -> None:
    with force_attention(MODEL, pattern, sites=["encoder.*.self_attn", "decoder.*.cross_attn"]):
        trace = traced(batch)
    diagonality = self_attention_diagonality(trace)
    cross = cross_attention_monotonicity(trace)
    assert np.allclose(diagonality.per_sequence, EXPECTED[pattern], atol=1e-6)
    assert np.allclose(cross.per_sequence, EXPECTED[pattern], atol=1e-9)
    expected_verdict = {"diagonal": "monotone", "anti-diagonal": "reversed",
                        "uniform": "not monotone"}[pattern]
    assert cross.verdict == expected_verdict
    assert diagonality.verdicts == [{"diagonal": "diagonal", "anti-diagonal": "anti-diagonal",
                                     "uniform": "neither"}[pattern]] * 3
    assert np.allclose(diagonality.offset_histogram.sum(-1), 1.0, atol=1e-6)


def test_offset_histogram_of_forced_patterns() -> None:
    batch = speech_batch([6, 9], [4, 4])
    with force_attention(MODEL, "diagonal"):
        diagonal = self_attention_diagonality(traced(batch), max_offset=4)
    with force_attention(MODEL, "anti-diagonal"):
        anti = self_attention_diagonality(traced(batch), max_offset=4)
    assert diagonal.offsets.tolist() == [-4, -3, -2, -1, 0, 1, 2, 3, 4]
    assert np.allclose(diagonal.histogram[..., 4], 1.0, atol=1e-6)
    # Six frames reversed: query t attends key 5 - t, offsets 5, 3, 1, -1, -3, -5 (ends clipped).
    expected = np.array([1, 1, 0, 1, 0, 1, 0, 1, 1]) / 6
    assert np.allclose(anti.offset_histogram[0, 0, 0], expected, atol=1e-6)
    assert diagonal.reversed_at is None
    assert anti.reversed_at == 0


@settings(max_examples=10, deadline=None)
@given(batch=batches())
def test_padded_batch_scores_equal_each_sequence_alone(batch: attnprobe.SpeechBatch) -> None:
    together = traced(batch)
    cross = cross_attention_monotonicity(together)
    diagonality = self_attention_diagonality(together)
    for index in range(batch.batch_size):
        alone = traced(batch.item(index))
        assert np.allclose(cross_attention_monotonicity(alone).per_sequence[0],
                           cross.per_sequence[index], atol=1e-6)
        single = self_attention_diagonality(alone)
        assert np.allclose(single.per_sequence[0], diagonality.per_sequence[index], atol=1e-5)
        assert np.allclose(single.offset_histogram[0], diagonality.offset_histogram[index],
                           atol=1e-5)


def test_prompt_positions_before_the_first_label_are_not_ranked() -> None:
    # Position 0 (a prompt token) attends the last frame; positions 1-5 attend frames 0-4.
    attention = torch.zeros(1, 1, 6, 8)
    attention[0, 0, 0, 7] = 1.0
    attention[0, 0, torch.arange(1, 6), torch.arange(5)] = 1.0
    captured = Captured(attention, torch.tensor([6]), torch.tensor([8]))
    assert monotonicity_of_call(captured, first_label_position=1)[0][0, 0] == pytest.approx(1.0)
    assert monotonicity_of_call(captured, first_label_position=0)[0][0, 0] < 0.5


def test_cross_attention_on_a_model_without_decoder_says_what_to_use() -> None:
    trace = traced(speech_batch([6]))
    with pytest.raises(CapabilityError, match="frame_mapping"):
        cross_attention_monotonicity(trace)
    with pytest.raises(CapabilityError, match="self_attn"):
        self_attention_diagonality(traced(speech_batch([6], [4]), kinds=("cross_attn",)))


def test_too_few_labels_or_frames_name_the_minimum() -> None:
    with pytest.raises(InputError, match=r"sequence 1 has 3 valid label positions.*at least 4"):
        cross_attention_monotonicity(traced(speech_batch([6, 6], [4, 3])))
    with pytest.raises(InputError, match=r"3 valid frames.*at least 4"):
        self_attention_diagonality(traced(speech_batch([6, 3])))
    with pytest.raises(InputError, match=r"band 2 needs at least 6"):
        self_attention_diagonality(traced(speech_batch([6, 5])), band=2)


def test_summary_and_json_carry_the_verdict() -> None:
    with force_attention(MODEL, "anti-diagonal", sites="decoder.*.cross_attn"):
        cross = cross_attention_monotonicity(traced(speech_batch([8], [5])))
    assert "reversed" in cross.summary()
    values = cross.to_dict()
    assert values["verdict"] == "reversed" and values["overall"] == pytest.approx(-1.0)
    assert values["sites"] == ["decoder.0.cross_attn"]
