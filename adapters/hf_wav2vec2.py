"""Hugging Face Wav2Vec2, HuBERT and Wav2Vec2-Conformer: the task models (``...ForCTC``,
``...ForPreTraining``, ``...ForSequenceClassification``, ...) and the bare ``...Model`` classes.

The three share one structure: a convolutional ``feature_extractor`` over the waveform, a
``feature_projection``, and an ``encoder`` whose ``layers`` are the blocks.

Sites: ``encoder.frontend`` (input: the waveform ``(batch, samples, 1)``, one frame per sample;
output: what enters the first block, after the feature projection and whatever the encoder does
before its first layer: positional convolution, normalisation), ``encoder.{i}`` and

- Wav2Vec2 / HuBERT (post-norm and stable-layer-norm blocks): ``encoder.{i}.self_attn``,
  ``encoder.{i}.ffn``;
- Wav2Vec2-Conformer (rotary, relative or no position embeddings): ``encoder.{i}.ffn1``,
  ``encoder.{i}.self_attn``, ``encoder.{i}.conv``, ``encoder.{i}.ffn2`` (the half-step
  feed-forward branches before their 0.5 scaling).

Lengths: samples from ``attention_mask`` (all samples without one), encoder frames from the
frame-level mask the model derives from it (``_get_feature_vector_attention_mask``), as the encoder
receives it. Adapter layers that some checkpoints insert after the encoder are not sites.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import nn

from .base import LengthEntry, SiteBinding, register_builtin
from .hf_common import Branch, HuggingFaceAdapter, argument, find_module, valid_lengths

TRANSFORMER_BRANCHES = (Branch("self_attn", "self_attn", "attention"),
                        Branch("ffn", "ffn", "feed_forward"))
CONFORMER_BRANCHES = (Branch("ffn1", "ffn", "ffn1"),
                      Branch("self_attn", "self_attn", "self_attn"),
                      Branch("conv", "conv", "conv_module"),
                      Branch("ffn2", "ffn", "ffn2"))
SAMPLING_RATE = 16000
"""Every Wav2Vec2 / HuBERT checkpoint is trained on 16 kHz audio (the feature extractor's rate)."""


class Wav2Vec2Stacks(NamedTuple):
    base: nn.Module
    feature_extractor: nn.Module
    encoder: nn.Module


class _Wav2Vec2LikeAdapter(HuggingFaceAdapter):
    base_classes: tuple[str, ...] = ()
    branches: tuple[Branch, ...] = TRANSFORMER_BRANCHES

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.notes.append("encoder.frontend input is the waveform, (batch, samples, 1): its "
                          "lengths count samples")

    @classmethod
    def locate(cls, model: nn.Module) -> Wav2Vec2Stacks | None:
        base = find_module(model, cls.base_classes)
        if base is None:
            return None
        return Wav2Vec2Stacks(base, base.feature_extractor, base.encoder)

    def bindings(self) -> list[SiteBinding]:
        stacks = self.locate(self.model)
        assert stacks is not None
        layers = stacks.encoder.layers
        return [self.frontend_binding(stacks.feature_extractor, layers[0],
                                      lambda waveform: waveform.unsqueeze(-1)),
                *self.stack_bindings("encoder", layers, self.branches)]

    def length_entries(self) -> list[LengthEntry]:
        stacks = self.locate(self.model)
        assert stacks is not None

        def sample_lengths(args: tuple, kwargs: Mapping[str, Any]) -> dict[str, torch.Tensor]:
            waveform = argument(args, kwargs, 0, "input_values")
            if not isinstance(waveform, torch.Tensor):
                return {}
            mask = argument(args, kwargs, 1, "attention_mask")
            return {"features": valid_lengths(mask, waveform.shape[0], waveform.shape[1])}

        def frame_lengths(args: tuple, kwargs: Mapping[str, Any]) -> dict[str, torch.Tensor]:
            hidden = argument(args, kwargs, 0, "hidden_states")
            if not isinstance(hidden, torch.Tensor):
                return {}
            mask = argument(args, kwargs, 1, "attention_mask")
            return {"encoder": valid_lengths(mask, hidden.shape[0], hidden.shape[1])}

        return [LengthEntry(stacks.base, sample_lengths),
                LengthEntry(stacks.encoder, frame_lengths)]

    @property
    def frame_shift_seconds(self) -> float:
        return 1 / SAMPLING_RATE


@register_builtin
class Wav2Vec2Adapter(_Wav2Vec2LikeAdapter):
    family = "hf-wav2vec2"
    description = "Hugging Face Wav2Vec2 (Wav2Vec2ForCTC, Wav2Vec2Model, ...)"
    family_modules = ("transformers.models.wav2vec2.modeling_wav2vec2",)
    base_classes = ("Wav2Vec2Model",)


@register_builtin
class HubertAdapter(_Wav2Vec2LikeAdapter):
    family = "hf-hubert"
    description = "Hugging Face HuBERT (HubertForCTC, HubertModel, ...)"
    family_modules = ("transformers.models.hubert.modeling_hubert",)
    base_classes = ("HubertModel",)


@register_builtin
class Wav2Vec2ConformerAdapter(_Wav2Vec2LikeAdapter):
    family = "hf-wav2vec2-conformer"
    description = "Hugging Face Wav2Vec2-Conformer (Wav2Vec2ConformerForCTC, ...Model, ...)"
    family_modules = ("transformers.models.wav2vec2_conformer.modeling_wav2vec2_conformer",)
    base_classes = ("Wav2Vec2ConformerModel",)
    branches = CONFORMER_BRANCHES
