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

Runner: ``run`` takes ``batch.inputs`` as the mel features ``(batch, frames, mel)`` that
``ParakeetForCTC`` takes, zero past each ``input_lengths`` (the extractor's padding value: the first
convolution reads past the last valid frame) with the matching ``attention_mask``; RNN-T / TDT
models run their encoder only, as their prediction network has no sites. ``ctc_log_probs`` needs a
``ParakeetForCTC``.
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

from .hf_common import Branch, HuggingFaceSiteMap, argument, find_module
from .hf_runner import (
    HuggingFaceRunner,
    feature_extractor_default,
    model_input,
    no_decoder_error,
    require_rank,
    require_size,
)
from .site_map import LengthEntry, SiteBinding, register_builtin

FAMILY = "hf-parakeet"
BRANCHES = (Branch("ffn1", "ffn", "feed_forward1"),
            Branch("self_attn", "self_attn", "self_attn"),
            Branch("conv", "conv", "conv"),
            Branch("ffn2", "ffn", "feed_forward2"))


def parakeet_encoder(model: nn.Module) -> nn.Module | None:
    """The ``ParakeetEncoder`` in ``model`` (itself included), or ``None``."""
    return find_module(model, ["ParakeetEncoder"])


class ParakeetRunner(HuggingFaceRunner):
    """Runs Parakeet on mel features ``(batch, frames, mel)``; CTC posteriors of ParakeetForCTC."""

    family = FAMILY
    locate = staticmethod(parakeet_encoder)

    def run(self, batch: SpeechBatch) -> Any:
        """One forward pass on the mel features ``batch.inputs`` ``(batch, frames, mel)``."""
        encoder = self.stacks()
        features = batch.inputs
        require_rank(features, 3, "mel features (batch, frames, mel)", self.family,
                     "extract them with ParakeetFeatureExtractor")
        require_size(features, encoder.config.num_mel_bins, "mel bins", self.family)
        features, mask = zero_padding(model_input(self.model, features), batch.input_lengths)
        runs_whole_model = self.model is encoder or self._has_ctc_head()
        return (self.model if runs_whole_model else encoder)(input_features=features,
                                                             attention_mask=mask)

    def ctc_log_probs(self, batch: SpeechBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(batch, frames, vocab)`` CTC log-posteriors and ``(batch,)`` valid frames."""
        if not self._has_ctc_head():
            raise CapabilityError(f"{type(self.model).__name__} has no CTC head (RNN-T / TDT "
                                  f"outputs are not per-frame posteriors); load ParakeetForCTC")
        log_probs = self.run(batch).logits.float().log_softmax(-1)
        lengths = self.stacks()._get_subsampling_output_length(
            batch.input_lengths.to(log_probs.device)).long()
        return log_probs, lengths

    def label_log_probs(self, batch: SpeechBatch) -> torch.Tensor:
        raise no_decoder_error(self.model, "ParakeetForCTC", self._has_ctc_head())

    @property
    def subsampling(self) -> int:
        """Mel frames per encoder frame: the product of the subsampling convolutions' strides."""
        return math.prod(layer.stride[0] for layer in self.stacks().subsampling.layers
                         if isinstance(layer, nn.Conv2d))

    @property
    def frame_shift_seconds(self) -> float:
        """Hop of ParakeetFeatureExtractor's defaults: 160 samples at 16 kHz, 10 ms."""
        return (feature_extractor_default("ParakeetFeatureExtractor", "hop_length")
                / feature_extractor_default("ParakeetFeatureExtractor", "sampling_rate"))

    def _has_ctc_head(self) -> bool:
        return type(self.model).__name__ == "ParakeetForCTC"


@register_builtin
class ParakeetSites(HuggingFaceSiteMap):
    family = FAMILY
    description = "Hugging Face Parakeet (ParakeetForCTC, ParakeetEncoder)"
    family_modules = ("transformers.models.parakeet.modeling_parakeet",)
    runner_class = ParakeetRunner

    @classmethod
    def locate(cls, model: nn.Module) -> nn.Module | None:
        return parakeet_encoder(model)

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
            frames = lengths_from_mask(mask, features.shape[0], features.shape[1])
            return {"features": frames,
                    "encoder": encoder._get_subsampling_output_length(frames).long()}

        return [LengthEntry(encoder, lengths)]
