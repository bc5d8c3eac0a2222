"""Hugging Face Speech2Text: ``Speech2TextForConditionalGeneration``, ``Speech2TextModel`` and
``Speech2TextEncoder``.

Sites: ``encoder.frontend`` (input: the filter-bank features ``(batch, frames, features)``; output:
what enters the first block, after the convolutional subsampler, embedding scale and sinusoidal
positions), ``encoder.{i}``, ``encoder.{i}.self_attn``, ``encoder.{i}.ffn``, ``decoder.{i}``,
``decoder.{i}.self_attn`` (causal), ``decoder.{i}.cross_attn``, ``decoder.{i}.ffn``. The
feed-forward branch is inline code: its input is ``fc1``'s input and its output ``fc2``'s output.

Lengths: feature frames from ``attention_mask``, encoder frames through the model's own
``_get_feat_extract_output_lengths``; the decoder's keys of cross-attention from the frame-level
mask it receives; decoder positions from ``decoder_attention_mask`` when given.

Runner: ``run`` and ``label_log_probs`` take ``batch.inputs`` as filter banks ``(batch,
frames, features)``, zero past each ``input_lengths`` (the extractor's padding value: the
convolutions read past the last valid frame, so this keeps a padded batch equal to each utterance
alone) with the matching ``attention_mask``. The decoder prompt is ``runner.prompt_ids``, the
decoder start token by default; multilingual checkpoints want the target language token after it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from attnprobe.batch import SpeechBatch
from attnprobe.errors import CapabilityError
from attnprobe.lengths import lengths_from_mask, zero_padding

from .hf_common import (
    MBART_DECODER_BRANCHES,
    MBART_ENCODER_BRANCHES,
    EncoderDecoderStacks,
    HuggingFaceSiteMap,
    argument,
    decoder_lengths,
    encoder_decoder_stacks,
)
from .hf_runner import model_input, require_rank, require_size
from .hf_seq2seq import HuggingFaceEncoderDecoderRunner
from .site_map import LengthEntry, SiteBinding, register_builtin

FAMILY = "hf-speech2text"
FBANK_SHIFT_SECONDS = 0.01
"""Frame shift of Speech2TextFeatureExtractor: Kaldi filter banks every 160 samples at 16 kHz."""


def speech2text_stacks(model: nn.Module) -> EncoderDecoderStacks | None:
    """Speech2Text's encoder and decoder in ``model`` (either may be missing), or ``None``."""
    return encoder_decoder_stacks(model, "Speech2TextEncoder", "Speech2TextDecoder")


class Speech2TextRunner(HuggingFaceEncoderDecoderRunner):
    """Runs Speech2Text on filter banks ``(batch, frames, features)``."""

    family = FAMILY
    generation_class = "Speech2TextForConditionalGeneration"
    locate = staticmethod(speech2text_stacks)
    frame_shift_seconds = FBANK_SHIFT_SECONDS

    def default_prompt_ids(self) -> list[int]:
        return [self.generation_setting("decoder_start_token_id")]

    def encoder_inputs(self, batch: SpeechBatch) -> dict[str, torch.Tensor]:
        config = self.model.config
        features = batch.inputs
        require_rank(features, 3, "filter banks (batch, frames, features)", self.family,
                     "extract them with Speech2TextFeatureExtractor")
        require_size(features, config.input_feat_per_channel * config.input_channels,
                     "filter-bank features", self.family)
        features, mask = zero_padding(model_input(self.model, features), batch.input_lengths)
        return {"input_features": features, "attention_mask": mask}

    @property
    def subsampling(self) -> int:
        """Feature frames per encoder frame: the product of the convolution strides (2 each)."""
        encoder = self.stacks().encoder
        if encoder is None:
            raise CapabilityError(f"{type(self.model).__name__} has no encoder; load "
                                  f"{self.generation_class}")
        return math.prod(conv.stride[0] for conv in encoder.conv.conv_layers)


@register_builtin
class Speech2TextSites(HuggingFaceSiteMap):
    family = FAMILY
    description = "Hugging Face Speech2Text (Speech2TextForConditionalGeneration, ...Model)"
    family_modules = ("transformers.models.speech_to_text.modeling_speech_to_text",)
    runner_class = Speech2TextRunner

    @classmethod
    def locate(cls, model: nn.Module) -> EncoderDecoderStacks | None:
        return speech2text_stacks(model)

    def bindings(self) -> list[SiteBinding]:
        stacks = self.locate(self.model)
        assert stacks is not None
        found: list[SiteBinding] = []
        if stacks.encoder is not None:
            found.append(self.frontend_binding(stacks.encoder.conv, stacks.encoder.layers[0],
                                               lambda features: features))
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
                mask = argument(args, kwargs, 1, "attention_mask")
                if isinstance(mask, torch.Tensor) and mask.dim() > 2:
                    # generate() repeats the mask over the feature axis, as the model undoes too
                    mask = mask[:, :, -1]
                frames = lengths_from_mask(mask, features.shape[0], features.shape[1])
                return {"features": frames,
                        "encoder": encoder._get_feat_extract_output_lengths(frames)}

            entries.append(LengthEntry(encoder, encoder_lengths))
        if stacks.decoder is not None:
            def lengths_seen_by_decoder(args: tuple, kwargs: Mapping[str, Any]
                                        ) -> dict[str, torch.Tensor]:
                found = {}
                decoder = decoder_lengths(args, kwargs, mask_position=1, cache_position=4)
                if decoder is not None:
                    found["decoder"] = decoder
                encoded = argument(args, kwargs, 2, "encoder_hidden_states")
                if isinstance(encoded, torch.Tensor):
                    found["encoder"] = lengths_from_mask(
                        argument(args, kwargs, 3, "encoder_attention_mask"),
                        encoded.shape[0], encoded.shape[1])
                return found

            entries.append(LengthEntry(stacks.decoder, lengths_seen_by_decoder))
        return entries
