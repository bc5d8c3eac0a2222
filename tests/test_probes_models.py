"""Tiny models and batches for the probe tests, and the planting helpers' own contract: they
change what they say, and leave the model exactly as it was."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import attnprobe
from attnprobe import SpeechBatch
from attnprobe.adapters import registry
from attnprobe.models import ConformerAED, ConformerAEDConfig
from attnprobe.probes import ReversalReport, reversal_report
from attnprobe.testing import (
    attention_pattern,
    force_attention,
    plant_permutation,
    plant_reversal,
    scale_branch,
)
from tests.toy_model import all_hooks

VOCAB = 12
POOL = 2
CONFIG = ConformerAEDConfig.tiny(
    vocab_size=VOCAB, blocks=3, d_model=16, heads=2, ff_dim=32, conv_kernel=3, embed_dim=8,
    lstm_dim=16, attention_dim=16, readout_dim=16, frontend_channels=(4,), time_pools=(POOL,),
    n_mels=8)
WHISPER_FRAMES = 8
DECODER_STRIDE = 2
"""Label ``s`` of a monotone decoder reads encoder frame ``DECODER_STRIDE * s``."""


def conformer_aed(seed: int = 0, blocks: int = 3) -> ConformerAED:
    """attnprobe's Conformer AED, tiny, random weights, eval mode."""
    torch.manual_seed(seed)
    return ConformerAED(ConformerAEDConfig.tiny(**{**CONFIG.to_dict(), "blocks": blocks})).eval()


def speech_batch(encoder_frames: list[int], labels: list[int] | None = None, seed: int = 0
                 ) -> SpeechBatch:
    """Features for ``encoder_frames`` encoder frames per sequence, with large garbage in the
    padding (a probe that reads padding shows), and random labels when ``labels`` is given."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(encoder_frames) * POOL
    features = torch.randn(len(encoder_frames), int(lengths.max()), CONFIG.n_mels,
                           generator=generator)
    padding = torch.arange(features.shape[1])[None, :] >= lengths[:, None]
    features = features.masked_fill(padding[..., None], 50.0)
    if labels is None:
        return SpeechBatch(features, lengths)
    label_ids = torch.randint(2, VOCAB, (len(labels), max(labels)), generator=generator)
    return SpeechBatch(features, lengths, label_ids, torch.tensor(labels))


@contextmanager
def monotone_decoder(model: ConformerAED, backwards: bool = False) -> Iterator[None]:
    """Make the AED decoder really attend (one-hot) encoder frame ``DECODER_STRIDE * s`` for label
    position ``s`` (clipped to the last valid frame), or its mirror ``L-1-...`` when ``backwards``:
    a stand-in for a trained decoder that aligns, without training."""
    attention = model.decoder.cross_attn
    step = [0]

    def restart(_module: nn.Module, _args: tuple) -> None:
        step[0] = 0

    def force(_module: nn.Module, args: tuple, _output: Any) -> tuple[torch.Tensor, torch.Tensor]:
        memory = args[1]
        lengths = memory.valid.sum(-1)
        frame = torch.clamp(torch.full_like(lengths, DECODER_STRIDE * step[0]), max=lengths - 1)
        if backwards:
            frame = lengths - 1 - frame
        step[0] += 1
        weights = nn.functional.one_hot(frame, memory.values.shape[1]).to(memory.values.dtype)
        return (weights[:, None, :] @ memory.values).squeeze(1), weights

    handles = [model.decoder.register_forward_pre_hook(restart),
               attention.register_forward_hook(force)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


# ----------------------------------------------------------------------------- other families
def tiny_wav2vec2(seed: int = 0, layers: int = 3) -> nn.Module:
    """Hugging Face ``Wav2Vec2ForCTC``; layer-norm feature extractor, so padding does not leak."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    torch.manual_seed(seed)
    config = Wav2Vec2Config(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=24, pad_token_id=0, conv_dim=(8, 8), conv_stride=(5, 2),
        conv_kernel=(10, 3), num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2,
        feat_extract_norm="layer", hidden_dropout=0.0, attention_dropout=0.0,
        activation_dropout=0.0, feat_proj_dropout=0.0, layerdrop=0.0, mask_time_prob=0.0,
        attn_implementation="eager")
    return Wav2Vec2ForCTC(config).eval()


def waveform_batch(encoder_frames: list[int], seed: int = 0) -> SpeechBatch:
    """Waveforms giving ``encoder_frames`` frames after the tiny Wav2Vec2 extractor."""
    samples = [10 * frames + 10 for frames in encoder_frames]
    generator = torch.Generator().manual_seed(seed)
    waveform = torch.randn(len(samples), max(samples), generator=generator)
    return SpeechBatch(waveform, torch.tensor(samples))


def tiny_whisper(seed: int = 0, layers: int = 2) -> nn.Module:
    """Hugging Face ``WhisperForConditionalGeneration``: 16 mel frames -> 8 encoder frames."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(seed)
    config = WhisperConfig(
        vocab_size=VOCAB, num_mel_bins=8, d_model=16, encoder_layers=layers,
        decoder_layers=layers, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=24, decoder_ffn_dim=24, max_source_positions=WHISPER_FRAMES,
        max_target_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        decoder_start_token_id=1, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        attn_implementation="eager")
    return WhisperForConditionalGeneration(config).eval()


def whisper_batch(labels: list[int], seed: int = 0) -> SpeechBatch:
    """Full-length log-mel ``(batch, 2 * WHISPER_FRAMES, 8)`` (Whisper has no padding mask)."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(len(labels), 2 * WHISPER_FRAMES, 8, generator=generator)
    label_ids = torch.randint(3, VOCAB, (len(labels), max(labels)), generator=generator)
    return SpeechBatch(features, torch.full((len(labels),), 2 * WHISPER_FRAMES), label_ids,
                       torch.tensor(labels))


def tiny_torchaudio_conformer(seed: int = 0, layers: int = 3) -> nn.Module:
    """``torchaudio.models.Conformer``, width 8, in eval mode."""
    from torchaudio.models import Conformer

    torch.manual_seed(seed)
    return Conformer(input_dim=8, num_heads=2, ffn_dim=16, num_layers=layers,
                     depthwise_conv_kernel_size=3).eval()


def feature_batch(frames: list[int], width: int = 8, seed: int = 0) -> SpeechBatch:
    generator = torch.Generator().manual_seed(seed)
    return SpeechBatch(torch.randn(len(frames), max(frames), width, generator=generator),
                       torch.tensor(frames))


# ----------------------------------------------------------------------------- report checks
def report_with(model: nn.Module, batch: SpeechBatch, block: int | None) -> ReversalReport:
    """The report of ``model``, with its encoder output reversed after ``block`` if given."""
    if block is None:
        return reversal_report(model, batch, projections=1)
    with plant_reversal(model, block):
        return reversal_report(model, batch, projections=1)


def assert_reversed_at(report: ReversalReport, block: int | None, frames: list[int]) -> None:
    """The verdict, and every block's frame map: anti-diagonal from the planted block on."""
    assert report.reversed_at == block
    assert report.verdict == ("not reversed" if block is None else f"reversed at block {block}")
    mapping = report.frame_mapping
    for sequence, length in enumerate(frames):
        for layer in mapping.layers:
            flipped = block is not None and layer >= block
            expected = np.arange(length)[::-1] if flipped else np.arange(length)
            assert mapping.recovered_permutation(layer, sequence).tolist() == expected.tolist()



# ----------------------------------------------------------------------------- planting contract
def encoder_output(model: ConformerAED, batch: SpeechBatch) -> torch.Tensor:
    with torch.no_grad():
        return model(batch.inputs, batch.input_lengths).encoder_out


def test_planted_reversal_reverses_valid_frames_only_and_is_removed() -> None:
    model = conformer_aed(blocks=1)
    batch = speech_batch([7, 5])
    hooks = all_hooks(model)
    before = encoder_output(model, batch)
    with plant_reversal(model, after_block=0):
        during = encoder_output(model, batch)
    assert torch.allclose(during[0], before[0].flip(0), atol=1e-6)
    assert torch.allclose(during[1, :5], before[1, :5].flip(0), atol=1e-6)
    assert torch.equal(encoder_output(model, batch), before)
    assert all_hooks(model) == hooks


def test_planted_permutation_applies_per_length_and_rejects_non_permutations() -> None:
    model = conformer_aed(blocks=1)
    batch = speech_batch([6])
    before = encoder_output(model, batch)
    order = torch.tensor([2, 0, 1, 5, 3, 4])
    with plant_permutation(model, 0, lambda length: order[:length]):
        during = encoder_output(model, batch)
    assert torch.allclose(during[0], before[0, order], atol=1e-6)
    with pytest.raises(ValueError, match="not a permutation"):
        with plant_permutation(model, 0, lambda length: torch.zeros(length, dtype=torch.long)):
            encoder_output(model, batch)
    assert torch.equal(encoder_output(model, batch), before)


def test_scaled_branch_scales_what_the_block_adds_and_is_removed_after_errors() -> None:
    model = conformer_aed(blocks=1)
    batch = speech_batch([6])
    hooks = all_hooks(model)
    with pytest.raises(RuntimeError, match="inside"):
        with scale_branch(model, "encoder.0.conv", 3.0):
            with attnprobe.trace(model, "encoder.0.conv") as traced:
                encoder_output(model, batch)
            raise RuntimeError("inside")
    with attnprobe.trace(model, "encoder.0.conv") as plain:
        encoder_output(model, batch)
    assert torch.allclose(traced["encoder.0.conv"].output, 3.0 * plain["encoder.0.conv"].output,
                          atol=1e-5)
    assert all_hooks(model) == hooks


@pytest.mark.parametrize("pattern", ["diagonal", "anti-diagonal", "uniform"])
def test_forced_attention_is_what_traces_see_and_the_registry_is_restored(pattern: str) -> None:
    model = conformer_aed(blocks=1)
    batch = speech_batch([7, 4])
    adapters = list(registry.site_maps)
    before = encoder_output(model, batch)
    with force_attention(model, pattern):
        with attnprobe.trace(model, kind="self_attn") as traced:
            during = encoder_output(model, batch)
    assert torch.equal(during, before)
    assert registry.site_maps == adapters
    expected = attention_pattern(pattern, 7, 7, torch.tensor([7, 4]), torch.tensor([7, 4]))
    seen = traced["encoder.0.self_attn"].attention
    assert torch.equal(seen, expected[:, None].expand_as(seen))


def test_attention_patterns_are_distributions_over_valid_keys() -> None:
    for pattern in ("diagonal", "anti-diagonal", "uniform"):
        probabilities = attention_pattern(pattern, 5, 9, torch.tensor([5, 3]), torch.tensor([9, 4]))
        assert torch.allclose(probabilities.sum(-1), torch.ones(2, 5))
        assert torch.all(probabilities[1, :, 4:] == 0)
    diagonal = attention_pattern("diagonal", 3, 5, torch.tensor([3]), torch.tensor([5]))
    assert diagonal[0].argmax(-1).tolist() == [0, 2, 4]
