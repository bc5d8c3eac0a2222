"""Frame mapping: the dependency maps are Jacobian norms, they find planted reversals and
permutations, they respect padding, and they fail clearly where gradients or frames are missing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import attnprobe
from attnprobe.errors import GradientUnavailableError, InputError
from attnprobe.probes import frame_mapping
from attnprobe.testing import plant_permutation, plant_reversal
from tests.test_probes_models import conformer_aed, speech_batch
from tests.toy_model import all_hooks

MODEL = conformer_aed()
BLOCKS = 3

frame_lists = st.lists(st.integers(4, 10), min_size=1, max_size=3)


@settings(max_examples=12, deadline=None)
@given(frames=frame_lists, block=st.integers(0, BLOCKS - 1), seed=st.integers(0, 100))
def test_planted_reversal_is_found_at_its_block(frames: list[int], block: int, seed: int) -> None:
    with plant_reversal(MODEL, after_block=block):
        mapping = frame_mapping(MODEL, speech_batch(frames, seed=seed), projections=1)
    assert mapping.reversed_at == block
    assert mapping.verdict == f"reversed at block {block}"
    for sequence, length in enumerate(frames):
        for layer in range(BLOCKS):
            expected = np.arange(length)[::-1] if layer >= block else np.arange(length)
            assert mapping.recovered_permutation(layer, sequence).tolist() == expected.tolist()


@settings(max_examples=10, deadline=None)
@given(data=st.data(), frames=frame_lists, block=st.integers(0, BLOCKS - 1))
def test_planted_permutation_is_recovered(data: st.DataObject, frames: list[int],
                                          block: int) -> None:
    orders = {length: data.draw(st.permutations(range(length))) for length in set(frames)}
    with plant_permutation(MODEL, block, lambda length: torch.tensor(orders[length])):
        mapping = frame_mapping(MODEL, speech_batch(frames), projections=2)
    for sequence, length in enumerate(frames):
        for layer in range(block, BLOCKS):
            assert mapping.recovered_permutation(layer, sequence).tolist() == orders[length]


@settings(max_examples=8, deadline=None)
@given(frames=st.lists(st.integers(4, 9), min_size=2, max_size=3), seed=st.integers(0, 100))
def test_padded_batch_maps_equal_each_sequence_alone(frames: list[int], seed: int) -> None:
    batch = speech_batch(frames, seed=seed)
    together = frame_mapping(MODEL, batch, projections=2, seed=seed)
    for index, length in enumerate(frames):
        alone = frame_mapping(MODEL, batch.item(index), projections=2, seed=seed)
        assert alone.maps[0].shape == (BLOCKS, length, length)
        assert np.allclose(alone.maps[0], together.maps[index], rtol=1e-4, atol=1e-5)
        assert np.allclose(alone.per_sequence[0], together.per_sequence[index])


def test_exact_maps_are_the_frobenius_norms_of_the_jacobian_blocks() -> None:
    batch = speech_batch([4])
    exact = frame_mapping(MODEL, batch, layers=[1], projections=None)
    inputs = batch.inputs.clone().requires_grad_(True)
    with attnprobe.trace(MODEL, kind=("frontend", "block"), capture={"output"},
                         attach=True) as trace:
        MODEL(inputs, batch.input_lengths)
    encoder_input, output = trace["encoder.frontend"].output, trace["encoder.1"].output
    rows = []
    for flat in range(output[0].numel()):
        grad, = torch.autograd.grad(output[0].flatten()[flat], encoder_input, retain_graph=True)
        rows.append(grad[0])
    jacobian = torch.stack(rows).view(4, 16, 4, 16)   # (frame, width, input frame, input width)
    expected = jacobian.pow(2).sum((1, 3)).sqrt()
    assert np.allclose(exact.maps[0][0], expected.numpy(), rtol=1e-4, atol=1e-6)
    estimate = frame_mapping(MODEL, batch, layers=[1], projections=64)
    assert np.allclose(estimate.maps[0][0], expected.numpy(), rtol=0.5)


def test_training_mode_and_hooks_are_restored() -> None:
    model = conformer_aed(seed=3)
    model.train()
    model.decoder.eval()
    hooks = all_hooks(model)
    with torch.no_grad():
        trained = frame_mapping(model, speech_batch([5]), projections=1)
    assert model.training and model.encoder.training and not model.decoder.training
    assert all_hooks(model) == hooks
    model.eval()
    evaluated = frame_mapping(model, speech_batch([5]), projections=1)
    assert np.allclose(trained.maps[0], evaluated.maps[0], rtol=1e-5, atol=1e-6)


def test_inference_mode_short_sequences_and_unknown_blocks_fail_with_the_fix() -> None:
    with torch.inference_mode(), pytest.raises(GradientUnavailableError, match="inference_mode"):
        frame_mapping(MODEL, speech_batch([5]))
    with pytest.raises(InputError, match=r"sequence 1 has 3 valid encoder frames.*at least 4"):
        frame_mapping(MODEL, speech_batch([5, 3]))
    with pytest.raises(InputError, match=r"no encoder blocks \[7\].*\[0, 1, 2\]"):
        frame_mapping(MODEL, speech_batch([5]), layers=[7])


def test_summary_and_json() -> None:
    with plant_reversal(MODEL, 1):
        mapping = frame_mapping(MODEL, speech_batch([5]), projections=1)
    assert "reversed at block 1" in mapping.summary()
    values = mapping.to_dict()
    assert values["reversed_at"] == 1 and values["scores"] == pytest.approx([1.0, -1.0, -1.0])


def test_probing_some_frames_keeps_the_verdict_and_the_padding_invariance() -> None:
    from attnprobe.testing import plant_reversal

    model = _max_frames_model()
    features = torch.randn(2, 240, 16, generator=torch.Generator().manual_seed(3))
    lengths = torch.tensor([240, 180])
    with plant_reversal(model, after_block=1):
        every = frame_mapping(model, (features, lengths))
        some = frame_mapping(model, (features, lengths), max_frames=8)
        alone = frame_mapping(model, (features[1:, :180], lengths[1:]), max_frames=8)
    assert every.reversed_at == some.reversed_at == 1
    assert [m.shape[1] for m in some.maps] == [8, 8]
    assert some.output_frames is not None
    assert some.output_frames[0][0] == 0 and some.output_frames[0][-1] == 39
    assert np.allclose(some.maps[1], alone.maps[0], atol=1e-5)
    rows = some.output_frames[0]
    assert np.allclose(some.maps[0], every.maps[0][:, rows], atol=1e-5)
    with pytest.raises(ValueError, match="max_frames=None"):
        some.recovered_permutation(1)


def _max_frames_model() -> torch.nn.Module:
    from attnprobe.models import ConformerAED, ConformerAEDConfig

    torch.manual_seed(0)
    config = ConformerAEDConfig.tiny(vocab_size=12, blocks=3, d_model=16, heads=2, ff_dim=32,
                                     lstm_dim=16, attention_dim=16, readout_dim=16, embed_dim=8,
                                     frontend_channels=(2, 4), n_mels=16)
    return ConformerAED(config).eval()
