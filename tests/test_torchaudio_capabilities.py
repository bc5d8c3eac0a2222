"""torchaudio adapters run a SpeechBatch and give CTC log-probabilities where the model has a head."""

from __future__ import annotations

import pytest
import torch

from attnprobe import CapabilityError, SpeechBatch
from attnprobe.adapters import resolve_adapter

torchaudio = pytest.importorskip("torchaudio")


def tiny_wav2vec2(aux: int | None) -> torch.nn.Module:
    torch.manual_seed(0)
    return torchaudio.models.wav2vec2_model(
        extractor_mode="group_norm", extractor_conv_layer_config=[(8, 10, 5), (8, 3, 2)],
        extractor_conv_bias=False, encoder_embed_dim=16, encoder_projection_dropout=0.0,
        encoder_pos_conv_kernel=4, encoder_pos_conv_groups=2, encoder_num_layers=2,
        encoder_num_heads=2, encoder_attention_dropout=0.0, encoder_ff_interm_features=32,
        encoder_ff_interm_dropout=0.0, encoder_dropout=0.0, encoder_layer_norm_first=False,
        encoder_layer_drop=0.0, aux_num_out=aux).eval()


def test_wav2vec2_ctc_log_probs_and_subsampling() -> None:
    model = tiny_wav2vec2(aux=7)
    adapter = resolve_adapter(model).runner
    batch = SpeechBatch(torch.randn(2, 400), torch.tensor([400, 300]))
    log_probs, frames = adapter.ctc_log_probs(batch)
    logits, expected_frames = model(batch.inputs, batch.input_lengths)
    assert torch.allclose(log_probs, logits.log_softmax(-1))
    assert torch.equal(frames, expected_frames)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(log_probs.shape[:2]))
    assert adapter.subsampling == 10
    assert adapter.frame_shift_seconds == 1 / 16000


def test_wav2vec2_without_head_names_the_fix() -> None:
    adapter = resolve_adapter(tiny_wav2vec2(aux=None)).runner
    with pytest.raises(CapabilityError, match="aux_num_out"):
        adapter.ctc_log_probs(SpeechBatch(torch.randn(1, 400), torch.tensor([400])))


def test_conformer_runs_a_batch() -> None:
    torch.manual_seed(0)
    model = torchaudio.models.Conformer(input_dim=8, num_heads=2, ffn_dim=16, num_layers=2,
                                        depthwise_conv_kernel_size=3).eval()
    batch = SpeechBatch(torch.randn(2, 9, 8), torch.tensor([9, 6]))
    output, lengths = resolve_adapter(model).runner.run(batch)
    expected, _ = model(batch.inputs, batch.input_lengths)
    assert torch.equal(output, expected) and torch.equal(lengths, batch.input_lengths)
    with pytest.raises(CapabilityError, match="teacher-forced"):
        resolve_adapter(model).runner.label_log_probs(batch)
