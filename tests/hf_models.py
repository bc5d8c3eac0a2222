"""Tiny randomly initialised Hugging Face speech models for tests: built from config classes, no hub
access, fixed seed, dropout and layer drop off (so eval and train compute the same thing).

Each :class:`Family` knows how to build its model under an attention implementation, how to make a
padded batch for it, which sites its adapter must find, and where each attention module keeps its
value and output projections (to rebuild the module's output from the captured probabilities).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

HIDDEN = 16
HEADS = 2
LAYERS = 2
VOCAB = 24
MEL = 8
WHISPER_SOURCE_POSITIONS = 12
NO_DROPOUT = dict(hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                  feat_proj_dropout=0.0, layerdrop=0.0, mask_time_prob=0.0)


@dataclass
class Batch:
    """Keyword arguments of one forward call, plus the valid lengths the adapter must report."""

    inputs: dict[str, torch.Tensor]
    feature_lengths: list[int]
    encoder_lengths: list[int]
    decoder_lengths: list[int] | None = None


@dataclass
class Family:
    name: str
    build: Callable[[str], nn.Module]
    batch: Callable[[list[int], list[int] | None, int], Batch]
    branches: tuple[str, ...]
    decoder_branches: tuple[str, ...] = ()
    projections: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Attention class name -> (value projection, output projection) attribute names."""
    length_range: tuple[int, int] = (1, 1)
    """Smallest and largest valid input length a batch may have."""
    implementations: tuple[str, ...] = ("eager", "sdpa")
    """Attention implementations transformers lets this family load with."""

    def expected_sites(self) -> list[tuple[str, str]]:
        """``(name, kind)`` of every site, in forward order."""
        sites = [("encoder.frontend", "frontend")]
        for layer in range(LAYERS):
            sites.append((f"encoder.{layer}", "block"))
            sites += [(f"encoder.{layer}.{branch}", _kind(branch)) for branch in self.branches]
        for layer in range(LAYERS if self.decoder_branches else 0):
            sites.append((f"decoder.{layer}", "block"))
            sites += [(f"decoder.{layer}.{branch}", _kind(branch))
                      for branch in self.decoder_branches]
        return sites


def _kind(branch: str) -> str:
    return branch.rstrip("12")  # the two half-step feed-forward branches ffn1 / ffn2 are "ffn"


def _seeded(build: Callable[[str], nn.Module]) -> Callable[[str], nn.Module]:
    def seeded(attn_implementation: str) -> nn.Module:
        torch.manual_seed(0)
        return build(attn_implementation).eval()

    return seeded


def _padding_mask(lengths: list[int]) -> torch.Tensor:
    return (torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]).long()


def _decoder_inputs(lengths: list[int] | None, batch: int, seed: int
                    ) -> tuple[dict[str, torch.Tensor], list[int]]:
    lengths = lengths or [4] * batch
    generator = torch.Generator().manual_seed(seed + 1)
    ids = torch.randint(3, VOCAB, (batch, max(lengths)), generator=generator)
    return ({"decoder_input_ids": ids, "decoder_attention_mask": _padding_mask(lengths)},
            lengths)


# ----------------------------------------------------------------------------- Whisper
def _whisper(attn_implementation: str) -> nn.Module:
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    config = WhisperConfig(
        vocab_size=VOCAB, num_mel_bins=MEL, d_model=HIDDEN, encoder_layers=LAYERS,
        decoder_layers=LAYERS, encoder_attention_heads=HEADS, decoder_attention_heads=HEADS,
        encoder_ffn_dim=24, decoder_ffn_dim=24, max_source_positions=WHISPER_SOURCE_POSITIONS,
        max_target_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        decoder_start_token_id=1, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        attn_implementation=attn_implementation)
    return WhisperForConditionalGeneration(config)


def _whisper_batch(lengths: list[int], decoder_lengths: list[int] | None, seed: int) -> Batch:
    # Whisper takes a fixed number of mel frames and has no padding mask: every frame is valid.
    frames = 2 * WHISPER_SOURCE_POSITIONS
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(len(lengths), MEL, frames, generator=generator)
    decoder, decoder_lengths = _decoder_inputs(decoder_lengths, len(lengths), seed)
    return Batch({"input_features": features, **decoder}, [frames] * len(lengths),
                 [WHISPER_SOURCE_POSITIONS] * len(lengths), decoder_lengths)


# ----------------------------------------------------------------------------- Speech2Text
def _speech2text(attn_implementation: str) -> nn.Module:
    from transformers import Speech2TextConfig, Speech2TextForConditionalGeneration

    config = Speech2TextConfig(
        vocab_size=VOCAB, d_model=HIDDEN, encoder_layers=LAYERS, decoder_layers=LAYERS,
        encoder_attention_heads=HEADS, decoder_attention_heads=HEADS, encoder_ffn_dim=24,
        decoder_ffn_dim=24, input_feat_per_channel=MEL, input_channels=1, conv_channels=8,
        conv_kernel_sizes=(3, 3), num_conv_layers=2, max_source_positions=64,
        max_target_positions=32, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        decoder_start_token_id=2, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        attn_implementation=attn_implementation)
    return Speech2TextForConditionalGeneration(config)


def _speech2text_batch(lengths: list[int], decoder_lengths: list[int] | None, seed: int) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(len(lengths), max(lengths), MEL, generator=generator)
    decoder, decoder_lengths = _decoder_inputs(decoder_lengths, len(lengths), seed)
    encoder_lengths = [((length - 1) // 2 + 1 - 1) // 2 + 1 for length in lengths]
    return Batch({"input_features": features, "attention_mask": _padding_mask(lengths), **decoder},
                 lengths, encoder_lengths, decoder_lengths)


# ----------------------------------------------------------------------------- Wav2Vec2 family
WAV2VEC2_CONVOLUTIONS = dict(conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3),
                             num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2,
                             feat_extract_norm="layer")


def _wav2vec2_like(config_class: str, model_class: str, **options: Any
                   ) -> Callable[[str], nn.Module]:
    def build(attn_implementation: str) -> nn.Module:
        import transformers

        config = getattr(transformers, config_class)(
            vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
            num_attention_heads=HEADS, intermediate_size=24, pad_token_id=0,
            attn_implementation=attn_implementation, **WAV2VEC2_CONVOLUTIONS, **NO_DROPOUT,
            **options)
        return getattr(transformers, model_class)(config)

    return build


def _waveform_batch(lengths: list[int], _decoder_lengths: list[int] | None, seed: int) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    waveform = torch.randn(len(lengths), max(lengths), generator=generator)
    frames = [((length - 10) // 5 + 1 - 3) // 2 + 1 for length in lengths]
    return Batch({"input_values": waveform, "attention_mask": _padding_mask(lengths)}, lengths,
                 frames)


# ----------------------------------------------------------------------------- Parakeet
def _parakeet(attn_implementation: str) -> nn.Module:
    from transformers import ParakeetCTCConfig, ParakeetForCTC

    config = ParakeetCTCConfig(vocab_size=VOCAB, pad_token_id=VOCAB - 1, encoder_config=dict(
        hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=24, subsampling_factor=4, subsampling_conv_channels=4,
        num_mel_bins=MEL, conv_kernel_size=3, dropout=0.0, layerdrop=0.0,
        activation_dropout=0.0, attention_dropout=0.0))
    config.encoder_config._attn_implementation = attn_implementation
    config._attn_implementation = attn_implementation
    return ParakeetForCTC(config)


def _parakeet_batch(lengths: list[int], _decoder_lengths: list[int] | None, seed: int) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(len(lengths), max(lengths), MEL, generator=generator)
    encoder_lengths = [((length - 1) // 2 + 1 - 1) // 2 + 1 for length in lengths]
    return Batch({"input_features": features, "attention_mask": _padding_mask(lengths)}, lengths,
                 encoder_lengths)


MBART_PROJECTIONS = ("v_proj", "out_proj")
FAMILIES = {
    "whisper": Family("whisper", _seeded(_whisper), _whisper_batch, ("self_attn", "ffn"),
                      ("self_attn", "cross_attn", "ffn"),
                      {"WhisperAttention": MBART_PROJECTIONS}, (1, 1)),
    "speech2text": Family("speech2text", _seeded(_speech2text), _speech2text_batch,
                          ("self_attn", "ffn"), ("self_attn", "cross_attn", "ffn"),
                          {"Speech2TextAttention": MBART_PROJECTIONS}, (5, 40),
                          # transformers refuses sdpa for Speech2Text (_supports_sdpa is False)
                          implementations=("eager",)),
    "wav2vec2": Family("wav2vec2", _seeded(_wav2vec2_like("Wav2Vec2Config", "Wav2Vec2ForCTC")),
                       _waveform_batch, ("self_attn", "ffn"),
                       projections={"Wav2Vec2Attention": MBART_PROJECTIONS},
                       length_range=(40, 220)),
    "hubert": Family("hubert", _seeded(_wav2vec2_like("HubertConfig", "HubertForCTC",
                                                      do_stable_layer_norm=True)),
                     _waveform_batch, ("self_attn", "ffn"),
                     projections={"HubertAttention": MBART_PROJECTIONS}, length_range=(40, 220)),
    "conformer-relative": Family(
        "conformer-relative",
        _seeded(_wav2vec2_like("Wav2Vec2ConformerConfig", "Wav2Vec2ConformerForCTC",
                               position_embeddings_type="relative", conv_depthwise_kernel_size=3,
                               max_source_positions=64)),
        _waveform_batch, ("ffn1", "self_attn", "conv", "ffn2"),
        projections={"Wav2Vec2ConformerSelfAttention": ("linear_v", "linear_out")},
        length_range=(40, 220)),
    "conformer-rotary": Family(
        "conformer-rotary",
        _seeded(_wav2vec2_like("Wav2Vec2ConformerConfig", "Wav2Vec2ConformerModel",
                               position_embeddings_type="rotary", conv_depthwise_kernel_size=3)),
        _waveform_batch, ("ffn1", "self_attn", "conv", "ffn2"),
        projections={"Wav2Vec2ConformerSelfAttention": ("linear_v", "linear_out")},
        length_range=(40, 220)),
    "parakeet": Family("parakeet", _seeded(_parakeet), _parakeet_batch,
                       ("ffn1", "self_attn", "conv", "ffn2"),
                       projections={"ParakeetEncoderAttention": ("v_proj", "o_proj")},
                       length_range=(4, 40)),
}
CASES = [(name, implementation) for name, family in FAMILIES.items()
         for implementation in family.implementations]


def main_output(output: Any) -> torch.Tensor:
    """The tensor a model's forward call is about (logits or last hidden state)."""
    for name in ("logits", "last_hidden_state"):
        value = getattr(output, name, None)
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(f"no logits or last_hidden_state in {type(output).__name__}")
