"""Hugging Face Whisper: ``WhisperForConditionalGeneration``, ``WhisperModel``, ``WhisperEncoder``
(and the other Whisper classes holding an encoder or a decoder).

Sites: ``encoder.frontend`` (input: the log-mel features as ``conv1`` receives them, transposed to
``(batch, frames, mel)``; output: what enters the first block, after both convolutions and the
positional embedding), ``encoder.{i}``, ``encoder.{i}.self_attn``, ``encoder.{i}.ffn``,
``decoder.{i}``, ``decoder.{i}.self_attn`` (causal), ``decoder.{i}.cross_attn``,
``decoder.{i}.ffn``. The feed-forward branch is inline code: its input is ``fc1``'s input and its
output ``fc2``'s output (before dropout and the residual addition).

Lengths: Whisper's encoder always sees 30 s of audio, ``2 * max_source_positions`` mel frames
(3000) turned into ``max_source_positions`` encoder frames (1500), and has no padding mask: shorter
audio is padded with log-mel silence that the encoder attends to like any other frame. Every
encoder frame is therefore valid, and the records say so (lengths 3000 and 1500, not the audio's
duration); the ``attention_mask`` a Whisper feature extractor returns is ignored by the model and
by attnprobe. Decoder lengths come from ``decoder_attention_mask`` when given, else every position
decoded so far is valid.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .base import LengthEntry, SiteBinding, register_builtin
from .hf_common import (
    MBART_DECODER_BRANCHES,
    MBART_ENCODER_BRANCHES,
    EncoderDecoderStacks,
    HuggingFaceAdapter,
    argument,
    decoder_lengths,
    find_module,
)


@register_builtin
class WhisperAdapter(HuggingFaceAdapter):
    family = "hf-whisper"
    description = ("Hugging Face Whisper (WhisperForConditionalGeneration, WhisperModel, "
                   "WhisperEncoder)")
    family_modules = ("transformers.models.whisper.modeling_whisper",)

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.notes.append("Whisper's encoder has no padding mask: it always sees 3000 mel frames "
                          "(1500 encoder frames), all of them valid, silence padding included")

    @classmethod
    def locate(cls, model: nn.Module) -> EncoderDecoderStacks | None:
        stacks = EncoderDecoderStacks(find_module(model, ["WhisperEncoder"]),
                               find_module(model, ["WhisperDecoder"]))
        return stacks if stacks.encoder is not None or stacks.decoder is not None else None

    def bindings(self) -> list[SiteBinding]:
        stacks = self.locate(self.model)
        assert stacks is not None
        found: list[SiteBinding] = []
        if stacks.encoder is not None:
            found.append(self.frontend_binding(stacks.encoder.conv1, stacks.encoder.layers[0],
                                               lambda features: features.transpose(1, 2)))
            found += self.stack_bindings("encoder", stacks.encoder.layers, MBART_ENCODER_BRANCHES)
        if stacks.decoder is not None:
            found += self.stack_bindings("decoder", stacks.decoder.layers, MBART_DECODER_BRANCHES)
        return found

    def length_entries(self) -> list[LengthEntry]:
        stacks = self.locate(self.model)
        assert stacks is not None
        entries = []
        if stacks.encoder is not None:
            encoder = stacks.encoder

            def encoder_lengths(args: tuple, kwargs: Mapping[str, Any]) -> dict[str, torch.Tensor]:
                features = argument(args, kwargs, 0, "input_features")
                if not isinstance(features, torch.Tensor):
                    return {}
                frames = torch.full((features.shape[0],), features.shape[-1], dtype=torch.long)
                return {"features": frames,
                        "encoder": encoder._get_feat_extract_output_lengths(frames)}

            entries.append(LengthEntry(encoder, encoder_lengths))
        if stacks.decoder is not None:
            def lengths_seen_by_decoder(args: tuple, kwargs: Mapping[str, Any]
                                        ) -> dict[str, torch.Tensor]:
                found = {}
                decoder = decoder_lengths(args, kwargs, mask_position=1, cache_position=3)
                if decoder is not None:
                    found["decoder"] = decoder
                encoded = argument(args, kwargs, 2, "encoder_hidden_states")
                if isinstance(encoded, torch.Tensor):
                    found["encoder"] = torch.full((encoded.shape[0],), encoded.shape[1],
                                                  dtype=torch.long)
                return found

            entries.append(LengthEntry(stacks.decoder, lengths_seen_by_decoder))
        return entries
