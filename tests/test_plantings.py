"""The paper-like plantings of :mod:`attnprobe.testing.flips` do exactly what they document, on
valid frames only, and leave the model as it was; their stated answers follow from the rule."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import attnprobe
from attnprobe.probes.statistics import rank_correlation_with_position
from attnprobe.testing import (
    cumulative_pairs,
    pin_cross_attention,
    plant_branch_reversal,
    plant_channel_reversal,
    plant_partial_reversal,
    scale_branch,
)
from tests.test_probes_models import conformer_aed, encoder_output, speech_batch
from tests.toy_model import all_hooks

BRANCHES = ("ffn1", "self_attn", "conv", "ffn2")


@settings(max_examples=60, deadline=None)
@given(length=st.integers(1, 60), shares=st.lists(st.floats(0, 1), min_size=2, max_size=2))
def test_partial_reversals_swap_mirror_pairs_nested_by_share(length: int, shares: list[float]
                                                             ) -> None:
    low, high = sorted(shares)
    fewer, more = cumulative_pairs(length, low), cumulative_pairs(length, high)
    for order, share in ((fewer, low), (more, high)):
        assert sorted(order.tolist()) == list(range(length))
        assert (order[order] == np.arange(length)).all()                 # swaps: an involution
        moved = order != np.arange(length)
        assert (order[moved] == length - 1 - np.arange(length)[moved]).all()   # onto the mirror
        assert moved.sum() == 2 * round(share * (length // 2))
    assert set(np.flatnonzero(fewer != np.arange(length))) <= \
        set(np.flatnonzero(more != np.arange(length)))
    assert (cumulative_pairs(length, 1.0) == np.arange(length)[::-1]).all()


@contextlib.contextmanager
def per_frame_blocks(model):
    """Every branch of every block off: each block is then its final LayerNorm, a per-frame map,
    so a planted frame order reaches the encoder output unchanged."""
    with contextlib.ExitStack() as stack:
        for block in range(len(model.encoder.blocks)):
            for branch in BRANCHES:
                stack.enter_context(scale_branch(model, f"encoder.{block}.{branch}", 0.0))
        yield


@settings(max_examples=12, deadline=None)
@given(frames=st.lists(st.integers(4, 15), min_size=1, max_size=3),
       shares=st.lists(st.sampled_from([0.0, 0.3, 0.5, 0.8, 1.0]), min_size=3, max_size=3))
def test_a_spread_partial_reversal_leaves_its_cumulative_order_on_valid_frames(
        frames: list[int], shares: list[float]) -> None:
    model = conformer_aed(blocks=3)
    batch = speech_batch(frames)
    hooks = all_hooks(model)
    with per_frame_blocks(model):
        before = encoder_output(model, batch)
        with plant_partial_reversal(model, dict(enumerate(shares))) as planted:
            during = encoder_output(model, batch)
    for sequence, length in enumerate(frames):
        order = torch.from_numpy(cumulative_pairs(length, shares[-1]))
        assert torch.allclose(during[sequence, :length], before[sequence, order], atol=1e-5)
        assert torch.equal(during[sequence, length:], before[sequence, length:])
    assert planted.lengths == frames
    expected = [np.mean([rank_correlation_with_position(cumulative_pairs(length, share))
                         for length in frames]) for share in shares]
    assert planted.ideal_scores() == pytest.approx(expected)
    assert all_hooks(model) == hooks


@settings(max_examples=12, deadline=None)
@given(frames=st.lists(st.integers(4, 12), min_size=1, max_size=3),
       fraction=st.floats(0.05, 1.0), block=st.integers(0, 2))
def test_a_channel_reversal_reverses_exactly_those_channels_on_valid_frames(
        frames: list[int], fraction: float, block: int) -> None:
    model = conformer_aed(blocks=3)
    batch = speech_batch(frames)
    with attnprobe.trace(model, f"encoder.{block}") as plain:
        encoder_output(model, batch)
    with plant_channel_reversal(model, block, fraction) as planted, \
            attnprobe.trace(model, f"encoder.{block}") as traced:
        encoder_output(model, batch)
    before, after = plain[f"encoder.{block}"].output, traced[f"encoder.{block}"].output
    channels = round(fraction * before.shape[-1])
    energy = reversed_energy = 0.0
    for sequence, length in enumerate(frames):
        valid = before[sequence, :length]
        assert torch.equal(after[sequence, :length, :channels], valid[:, :channels].flip(0))
        assert torch.equal(after[sequence, :length, channels:], valid[:, channels:])
        assert torch.equal(after[sequence, length:], before[sequence, length:])
        energy += float(valid.pow(2).sum())
        reversed_energy += float(valid[:, :channels].pow(2).sum())
    assert planted.shares[block] == pytest.approx(reversed_energy / energy, rel=1e-5)
    assert planted.answer() == (block if planted.shares[block] > 0.5 else None)


@settings(max_examples=12, deadline=None)
@given(frames=st.lists(st.integers(4, 12), min_size=1, max_size=3), scale=st.floats(0.0, 6.0),
       spread=st.integers(1, 4), fraction=st.floats(0.1, 1.0), block=st.integers(0, 2))
def test_a_branch_reversal_is_a_scaled_anti_diagonal_average_of_the_branch_input(
        frames: list[int], scale: float, spread: int, fraction: float, block: int) -> None:
    model = conformer_aed(blocks=3)
    batch = speech_batch(frames)
    site = f"encoder.{block}.self_attn"
    hooks = all_hooks(model)
    with plant_branch_reversal(model, block, scale, spread, fraction) as planted, \
            attnprobe.trace(model, site, capture={"input", "output"}) as traced:
        encoder_output(model, batch)
    record = traced[site]
    branch_input, output = record.input, record.output
    with attnprobe.trace(model, site) as plain:
        encoder_output(model, batch)
    assert all_hooks(model) == hooks
    channels = max(1, round(fraction * output.shape[-1]))
    ratios = []
    for sequence, length in enumerate(frames):
        expected = torch.stack([
            branch_input[sequence, [frame for frame in range(mirror - (spread - 1) // 2,
                                                             mirror - (spread - 1) // 2 + spread)
                                    if 0 <= frame < length]].mean(0)
            for mirror in range(length - 1, -1, -1)]) * scale
        assert torch.allclose(output[sequence, :length, :channels], expected[:, :channels],
                              atol=1e-5)
        own = plain[site].output[sequence]
        assert torch.equal(output[sequence, :length, channels:], own[:length, channels:])
        assert torch.equal(output[sequence, length:], own[length:])
        unreversed = branch_input[sequence, :length].clone()
        unreversed[:, channels:] += output[sequence, :length, channels:]
        ratios.append(float((expected[:, :channels].norm(dim=-1)
                             / unreversed.norm(dim=-1)).mean()))
    assert planted.ratios[block] == pytest.approx(np.mean(ratios), rel=1e-4, abs=1e-6)
    assert planted.answer() == (block if planted.ratios[block] > 1.0 else None)


def test_a_branch_reversal_of_the_whole_batch_keeps_padding_and_restores_on_errors() -> None:
    model = conformer_aed(blocks=2)
    batch = speech_batch([9, 5])
    before = encoder_output(model, batch)
    hooks = all_hooks(model)
    with pytest.raises(RuntimeError, match="inside"):
        with plant_branch_reversal(model, 1, 3.0, spread=3):
            during = encoder_output(model, batch)
            raise RuntimeError("inside")
    assert not torch.allclose(during[0], before[0])
    assert torch.equal(encoder_output(model, batch), before)
    assert all_hooks(model) == hooks


def test_plantings_name_what_they_cannot_do() -> None:
    model = conformer_aed(blocks=2)
    with pytest.raises(LookupError, match="no site 'encoder.5.self_attn'"):
        with plant_branch_reversal(model, 5):
            pass
    with pytest.raises(ValueError, match="fraction"):
        with plant_channel_reversal(model, 0, 1.5):
            pass
    with pytest.raises(ValueError, match="share"):
        cumulative_pairs(6, -0.1)
    with pytest.raises(RuntimeError, match="run the model under the planting first"):
        with plant_branch_reversal(model, 0) as planted:
            planted.answer()
    with pytest.raises(TypeError, match="ConformerAED"):
        with pin_cross_attention(model.encoder):
            pass


def test_pinned_cross_attention_reads_the_diagonal_and_is_restored() -> None:
    model = conformer_aed(blocks=2)
    batch = speech_batch([10, 7], [6, 4])
    with pin_cross_attention(model, "diagonal"):
        with torch.no_grad():
            output = model(batch.inputs, batch.input_lengths, batch.labels, batch.label_lengths)
    peaks = output.cross_attention[0, :7].argmax(-1).tolist()
    assert peaks == sorted(peaks) and peaks[0] == 0 and peaks[-1] == 9
    assert model.decoder.cross_attn.hard_center_weight == 0.0


@settings(max_examples=8, deadline=None)
@given(channels=st.integers(1, 15), seed=st.integers(0, 50))
def test_a_decoder_pinned_to_a_subspace_reads_only_those_channels(channels: int, seed: int) -> None:
    """With ``channels=k`` the decoder's output is the same whatever the encoder output holds in
    channels ``k ..``, and changes with channel ``k - 1``; nothing is left behind."""
    model = conformer_aed(blocks=1)
    batch = speech_batch([9, 6], [5, 3], seed=seed)
    hooks = all_hooks(model)
    encoder_out = torch.randn(2, 9, model.config.d_model,
                              generator=torch.Generator().manual_seed(seed))
    previous = torch.cat([torch.ones_like(batch.labels[:, :1]), batch.labels], dim=1)

    def logits(values: torch.Tensor) -> torch.Tensor:
        return model.decoder(values, torch.tensor([9, 6]), previous).logits

    with pin_cross_attention(model, "diagonal", channels=channels), torch.no_grad():
        unread = encoder_out.clone()
        unread[..., channels:] = torch.randn_like(unread[..., channels:])
        read = encoder_out.clone()
        read[..., channels - 1] += 1.0
        assert torch.equal(logits(unread), logits(encoder_out))
        assert not torch.allclose(logits(read), logits(encoder_out))
    assert all_hooks(model) == hooks
    assert model.decoder.cross_attn.hard_center_weight == 0.0
    with pytest.raises(ValueError, match="channels"):
        with pin_cross_attention(model, "diagonal", channels=0):
            pass
