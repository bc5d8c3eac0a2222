"""Hugging Face Parakeet (FastConformer): ``ParakeetForCTC``, ``ParakeetEncoder``, and the other
Parakeet models built on a ``ParakeetEncoder`` (RNN-T / TDT: their LSTM decoder has no sites).

Sites: ``encoder.frontend`` (input: the mel features ``(batch, frames, mel)``; output: what enters
the first block, after the 2-D convolutional subsampling and the input scaling), ``encoder.{i}``,
``encoder.{i}.ffn1``, ``encoder.{i}.self_attn`` (relative positions: the probabilities include the
position term, as the model's own), ``encoder.{i}.conv``, ``encoder.{i}.ffn2`` (half-step branches
before their 0.5 scaling).

Lengths: feature frames from ``attention_mask``, encoder frames through the model's own
``_get_subsampling_output_length``. Parakeet masks padded frames as queries too: their attention
rows are uniform over all keys and mean nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .base import LengthEntry, SiteBinding, register_builtin
from .hf_common import Branch, HuggingFaceAdapter, argument, find_module, valid_lengths

BRANCHES = (Branch("ffn1", "ffn", "feed_forward1"),
            Branch("self_attn", "self_attn", "self_attn"),
            Branch("conv", "conv", "conv"),
            Branch("ffn2", "ffn", "feed_forward2"))


@register_builtin
class ParakeetAdapter(HuggingFaceAdapter):
    family = "hf-parakeet"
    description = "Hugging Face Parakeet (ParakeetForCTC, ParakeetEncoder)"
    family_modules = ("transformers.models.parakeet.modeling_parakeet",)

    @classmethod
    def locate(cls, model: nn.Module) -> nn.Module | None:
        return find_module(model, ["ParakeetEncoder"])

    def bindings(self) -> list[SiteBinding]:
        encoder = self.locate(self.model)
        assert encoder is not None
        return [self.frontend_binding(encoder.subsampling, encoder.layers[0],
                                      lambda features: features),
                *self.stack_bindings("encoder", encoder.layers, BRANCHES)]

    def length_entries(self) -> list[LengthEntry]:
        encoder = self.locate(self.model)
        assert encoder is not None

        def lengths(args: tuple, kwargs: Mapping[str, Any]) -> dict[str, torch.Tensor]:
            features = argument(args, kwargs, 0, "input_features")
            if not isinstance(features, torch.Tensor):
                return {}
            mask = argument(args, kwargs, 1, "attention_mask")
            frames = valid_lengths(mask, features.shape[0], features.shape[1])
            return {"features": frames,
                    "encoder": encoder._get_subsampling_output_length(frames).long()}

        return [LengthEntry(encoder, lengths)]
