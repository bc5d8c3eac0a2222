"""The probes on other families (tiny, random): Hugging Face Wav2Vec2 (encoder-only) and Whisper
(encoder-decoder), torchaudio's Conformer."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from attnprobe import SpeechBatch
from attnprobe.adapters import resolve_adapter
from attnprobe.errors import InputError
from attnprobe.probes import reversal_report, streaming_probes
from attnprobe.testing import force_attention, scale_branch
from tests.test_probes_models import (
    WHISPER_FRAMES,
    assert_reversed_at,
    feature_batch,
    report_with,
    tiny_torchaudio_conformer,
    tiny_wav2vec2,
    tiny_whisper,
    waveform_batch,
    whisper_batch,
)


class Family(NamedTuple):
    model: nn.Module
    batch: Callable[[list[int]], SpeechBatch]
    branches: list[str]


FAMILIES = {
    "hf-wav2vec2": Family(tiny_wav2vec2(), waveform_batch, ["self_attn", "ffn"]),
    "torchaudio-conformer": Family(tiny_torchaudio_conformer(), feature_batch,
                                   ["ffn1", "self_attn", "conv", "ffn2"]),
}
frame_lists = st.lists(st.integers(4, 9), min_size=1, max_size=3)


@pytest.mark.parametrize("name", sorted(FAMILIES))
@settings(max_examples=6, deadline=None)
@given(frames=frame_lists, block=st.one_of(st.none(), st.integers(0, 2)))
def test_reversal_is_reported_at_its_block(name: str, frames: list[int],
                                           block: int | None) -> None:
    model, make_batch, _ = FAMILIES[name]
    report = report_with(model, make_batch(frames), block)
    assert report.family == name
    assert_reversed_at(report, block, frames)


@pytest.mark.parametrize("name", sorted(FAMILIES))
@pytest.mark.parametrize("pattern", ["diagonal", "anti-diagonal", "uniform"])
def test_forced_self_attention_gives_its_expected_diagonality(name: str, pattern: str) -> None:
    model, make_batch, _ = FAMILIES[name]
    with force_attention(model, pattern):
        results = streaming_probes(model, make_batch([7, 4]))
    assert results.diagonality is not None
    expected = {"diagonal": 1.0, "anti-diagonal": -1.0, "uniform": 0.0}[pattern]
    assert np.allclose(results.diagonality.per_sequence, expected, atol=1e-6)


@pytest.mark.parametrize("name", sorted(FAMILIES))
@settings(max_examples=5, deadline=None)
@given(data=st.data(), factor=st.floats(0.25, 4.0))
def test_a_scaled_branch_moves_its_ratio_by_the_factor(name: str, data: st.DataObject,
                                                      factor: float) -> None:
    model, make_batch, branches = FAMILIES[name]
    # torchaudio's half-step feed-forward outputs are derived values: scale the real modules.
    scalable = [branch for branch in branches if not branch.startswith("ffn")] \
        if name.startswith("torchaudio") else branches
    branch, block = data.draw(st.sampled_from(scalable)), data.draw(st.integers(0, 2))
    batch = make_batch([6, 4])
    before = streaming_probes(model, batch).dominance
    with scale_branch(model, f"encoder.{block}.{branch}", factor):
        after = streaming_probes(model, batch).dominance
    assert before is not None and after is not None and after.branches == branches
    column = branches.index(branch)
    assert np.allclose(after.per_sequence_ratio[:, block, column],
                       factor * before.per_sequence_ratio[:, block, column], rtol=1e-4)


def test_scaling_a_derived_branch_output_is_refused() -> None:
    with pytest.raises(ValueError, match="derived by the adapter"):
        with scale_branch(FAMILIES["torchaudio-conformer"].model, "encoder.0.ffn1", 2.0):
            pass


@settings(max_examples=4, deadline=None)
@given(frames=st.lists(st.integers(4, 8), min_size=2, max_size=3))
def test_wav2vec2_padded_batch_equals_each_sequence_alone(frames: list[int]) -> None:
    """(torchaudio's Conformer lets padding into valid frames through its depthwise convolution,
    so only Wav2Vec2 is expected to pass this.)"""
    model, make_batch, _ = FAMILIES["hf-wav2vec2"]
    batch = make_batch(frames)
    together = reversal_report(model, batch, projections=1)
    for index in range(len(frames)):
        alone = reversal_report(model, batch.item(index), projections=1)
        assert np.allclose(alone.frame_mapping.maps[0], together.frame_mapping.maps[index],
                           rtol=1e-4, atol=1e-6)
        assert alone.diagonality is not None and together.diagonality is not None
        assert np.allclose(alone.diagonality.per_sequence[0],
                           together.diagonality.per_sequence[index], atol=1e-5)
        assert alone.dominance is not None and together.dominance is not None
        assert np.allclose(alone.dominance.per_sequence_ratio[0],
                           together.dominance.per_sequence_ratio[index], rtol=1e-4)


WHISPER = tiny_whisper()


@settings(max_examples=5, deadline=None)
@given(labels=st.lists(st.integers(4, 8), min_size=1, max_size=3),
       block=st.one_of(st.none(), st.integers(0, 1)))
def test_whisper_reversal_and_decoder_probes(labels: list[int], block: int | None) -> None:
    report = report_with(WHISPER, whisper_batch(labels), block)
    assert_reversed_at(report, block, [WHISPER_FRAMES] * len(labels))
    assert report.gradient_maps is not None and report.cross_attention is not None
    assert [item.shape for item in report.gradient_maps.maps] == [
        (3, count, WHISPER_FRAMES) for count in labels]
    assert report.cross_attention.per_sequence.shape == (len(labels), 2, 2)


def test_whisper_prompt_positions_are_not_ranked() -> None:
    """After a two-token prompt, the first decoder position predicts the second prompt token:
    only the positions that predict labels are ranked."""
    adapter = resolve_adapter(WHISPER)
    adapter.runner.prompt_ids = [1, 3]
    with pytest.raises(InputError, match="sequence 1 has 3 valid label positions"):
        streaming_probes(WHISPER, whisper_batch([4, 3]), adapter=adapter)
    with force_attention(WHISPER, "anti-diagonal", sites="decoder.*.cross_attn", adapter=adapter):
        results = streaming_probes(WHISPER, whisper_batch([4, 5]))
    assert results.cross_attention is not None
    assert results.cross_attention.verdict == "reversed"
