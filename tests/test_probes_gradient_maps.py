"""Gradient maps G_i: equal to one backward per label, monotone for an aligning decoder, turning at
a planted reversal, padding-independent, and clear about what they need."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import attnprobe
from attnprobe.errors import CapabilityError, GradientUnavailableError, InputError
from attnprobe.probes import GradientMaps, gradient_maps
from attnprobe.testing import plant_reversal
from tests.test_probes_models import DECODER_STRIDE, conformer_aed, monotone_decoder, speech_batch

MODEL = conformer_aed()
BLOCKS = 3


@st.composite
def aligned_batches(draw: st.DrawFn) -> attnprobe.SpeechBatch:
    """1-3 sequences whose labels fit the monotone decoder's stride."""
    frames = draw(st.lists(st.integers(8, 13), min_size=1, max_size=3))
    labels = [draw(st.integers(4, (length - 1) // DECODER_STRIDE + 1)) for length in frames]
    return speech_batch(frames, labels, seed=draw(st.integers(0, 100)))


def test_maps_equal_one_backward_per_label() -> None:
    batch = speech_batch([7, 5], [5, 4])
    maps = gradient_maps(MODEL, batch)
    assert maps.sites == ["encoder.frontend", "encoder.0", "encoder.1", "encoder.2"]
    inputs = batch.inputs.clone().requires_grad_(True)
    with attnprobe.trace(MODEL, kind=("frontend", "block"), capture={"output"},
                         attach=True) as trace:
        log_probs = MODEL.label_log_probs(inputs, batch.input_lengths, batch.labels,
                                          batch.label_lengths)
    hidden = [trace[site].output for site in maps.sites]
    for sequence, (labels, frames) in enumerate([(5, 7), (4, 5)]):
        assert maps.maps[sequence].shape == (4, labels, frames)
        for label in range(labels):
            grads = torch.autograd.grad(log_probs[sequence, label], hidden, retain_graph=True)
            expected = np.stack([grad[sequence, :frames].norm(dim=-1).numpy() for grad in grads])
            assert np.allclose(maps.maps[sequence][:, label], expected, rtol=1e-4, atol=1e-7)


@settings(max_examples=8, deadline=None)
@given(batch=aligned_batches(), backwards=st.booleans())
def test_an_aligning_decoder_without_reversal_is_not_reversed(batch: attnprobe.SpeechBatch,
                                                             backwards: bool) -> None:
    with monotone_decoder(MODEL, backwards=backwards):
        maps = gradient_maps(MODEL, batch)
    orientation = -1.0 if backwards else 1.0
    # The decoder reads one frame of the last block exactly; earlier blocks pass that frame's
    # evidence through random self-attention and convolutions, which may blur one label's
    # centre of mass past its neighbour's, so there the order only has to hold clearly.
    assert maps.scores[-1] == pytest.approx(orientation)
    assert np.all(orientation * maps.scores >= maps.threshold)
    assert maps.aligned and maps.reversed_at is None and maps.verdict == "not reversed"


@settings(max_examples=8, deadline=None)
@given(batch=aligned_batches(), block=st.integers(0, BLOCKS - 1))
def test_the_maps_turn_at_the_planted_reversal(batch: attnprobe.SpeechBatch, block: int) -> None:
    with monotone_decoder(MODEL, backwards=True), plant_reversal(MODEL, block):
        maps = gradient_maps(MODEL, batch)
    assert maps.reversed_at == block
    assert np.all(maps.scores[:1 + block] >= maps.threshold)
    assert np.all(maps.scores[1 + block:] <= -maps.threshold)
    assert maps.scores[-1] == pytest.approx(-1.0)


@settings(max_examples=6, deadline=None)
@given(batch=aligned_batches())
def test_padded_batch_maps_equal_each_sequence_alone(batch: attnprobe.SpeechBatch) -> None:
    together = gradient_maps(MODEL, batch, chunk_size=2)
    for index in range(batch.batch_size):
        alone = gradient_maps(MODEL, batch.item(index))
        assert np.allclose(alone.maps[0], together.maps[index], rtol=1e-4, atol=1e-6)
        assert np.allclose(alone.per_sequence[0], together.per_sequence[index])


@pytest.mark.parametrize(("scores", "reversed_at", "verdict"), [
    ([0.9, 0.8, -0.7, -0.9], 1, "reversed at block 1"),
    ([-0.9, -0.8, 0.7, 0.9], 1, "reversed at block 1"),
    ([0.9, -0.8, 0.9, 0.9], None, "not reversed"),
    ([0.2, -0.9, -0.9, -0.9], None, "undetermined"),
])
def test_verdict_follows_the_order_of_g0(scores: list[float], reversed_at: int | None,
                                          verdict: str) -> None:
    maps = GradientMaps(["encoder.frontend", "encoder.0", "encoder.1", "encoder.2"], [],
                        np.array([scores]))
    assert maps.reversed_at == reversed_at
    assert maps.verdict.startswith(verdict)


def test_missing_decoder_labels_or_gradients_fail_with_the_fix() -> None:
    with pytest.raises(CapabilityError, match="frame_mapping"):
        gradient_maps(MODEL.encoder, speech_batch([6], [4]))
    with pytest.raises(InputError, match="labels"):
        gradient_maps(MODEL, speech_batch([6]))
    with pytest.raises(InputError, match=r"3 valid labels.*at least 4"):
        gradient_maps(MODEL, speech_batch([6], [3]))
    with torch.inference_mode(), pytest.raises(GradientUnavailableError, match="inference_mode"):
        gradient_maps(MODEL, speech_batch([6], [4]))
