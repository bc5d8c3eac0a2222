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

Runner: ``run`` takes ``batch.inputs`` as waveforms ``(batch, samples)``, zero past each
``input_lengths`` (the extractor's padding value), with the matching ``attention_mask`` (labels are
not used: these are CTC or pre-training models). ``ctc_log_probs`` needs a ``...ForCTC`` model.
``subsampling`` counts samples per encoder frame (320 for the released checkpoints). A padded batch
computes what each utterance computes alone, except where the model itself mixes padding in: the
group-normalised frontend (``feat_extract_norm="group"``) normalises over padded samples, and
Wav2Vec2-Conformer's convolution modules read the padded frames next to the last valid one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from attnprobe.batch import SpeechBatch
from attnprobe.errors import CapabilityError
from attnprobe.lengths import lengths_from_mask, zero_padding

from .hf_common import Branch, HuggingFaceSiteMap, argument, find_module
from .hf_runner import HuggingFaceRunner, model_input, no_decoder_error, require_rank
from .site_map import LengthEntry, SiteBinding, register_builtin

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


def stacks_under(base_classes: tuple[str, ...]) -> Any:
    """A function finding the :class:`Wav2Vec2Stacks` under a module of one of ``base_classes``."""
    def locate(model: nn.Module) -> Wav2Vec2Stacks | None:
        base = find_module(model, base_classes)
        if base is None:
            return None
        return Wav2Vec2Stacks(base, base.feature_extractor, base.encoder)

    return locate


class Wav2Vec2LikeRunner(HuggingFaceRunner):
    """Runs a Wav2Vec2-like model on waveforms ``(batch, samples)``; CTC posteriors of a
    ``...ForCTC`` model. Subclasses set ``family``, ``locate`` and ``ctc_class``."""

    ctc_class: ClassVar[str] = ""
    frame_shift_seconds = 1 / SAMPLING_RATE

    @property
    def subsampling(self) -> int:
        """Samples per encoder frame: the product of the convolution strides."""
        return math.prod(self.stacks().base.config.conv_stride)

    def run(self, batch: SpeechBatch) -> Any:
        """One forward pass on the waveforms ``batch.inputs`` ``(batch, samples)``."""
        fix = ("drop the channel axis: batch.inputs.squeeze(-1)"
               if batch.inputs.dim() == 3 and batch.inputs.shape[-1] == 1 else
               "pass mono 16 kHz waveforms, as Wav2Vec2FeatureExtractor returns them")
        require_rank(batch.inputs, 2, "waveforms (batch, samples)", self.family, fix)
        waveform, mask = zero_padding(model_input(self.model, batch.inputs), batch.input_lengths)
        return self.model(waveform, attention_mask=mask)

    def ctc_log_probs(self, batch: SpeechBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(batch, frames, vocab)`` CTC log-posteriors and ``(batch,)`` valid frames."""
        if not self._has_ctc_head():
            raise CapabilityError(f"{type(self.model).__name__} has no CTC head; load "
                                  f"{self.ctc_class} (a fine-tuned checkpoint) for CTC posteriors")
        log_probs = self.run(batch).logits.float().log_softmax(-1)
        lengths = self.model._get_feat_extract_output_lengths(
            batch.input_lengths.to(log_probs.device)).long()
        return log_probs, lengths

    def label_log_probs(self, batch: SpeechBatch) -> torch.Tensor:
        raise no_decoder_error(self.model, self.ctc_class, self._has_ctc_head())

    def _has_ctc_head(self) -> bool:
        return type(self.model).__name__.endswith("ForCTC")


class Wav2Vec2LikeSites(HuggingFaceSiteMap):
    """The site map the three families share; subclasses set ``family``, ``family_modules``,
    ``base_classes``, ``runner_class`` and possibly ``branches``."""

    base_classes: ClassVar[tuple[str, ...]] = ()
    branches: ClassVar[tuple[Branch, ...]] = TRANSFORMER_BRANCHES

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.notes.append("encoder.frontend input is the waveform, (batch, samples, 1): its "
                          "lengths count samples")
        config = self._stacks().base.config
        if config.feat_extract_norm == "group":
            self.notes.append("group-normalised frontend: it normalises over the padded "
                              "waveform, so a padded batch differs from each utterance alone")
        if getattr(config, "add_adapter", False):
            self.notes.append("adapter layers after the encoder subsample further: CTC frames "
                              "are coarser than the encoder frames of the sites")

    @classmethod
    def locate(cls, model: nn.Module) -> Wav2Vec2Stacks | None:
        return stacks_under(cls.base_classes)(model)

    def bindings(self) -> list[SiteBinding]:
        stacks = self._stacks()
        layers = stacks.encoder.layers
        return [self.frontend_binding(stacks.feature_extractor, layers[0],
                                      lambda waveform: waveform.unsqueeze(-1)),
                *self.stack_bindings("encoder", layers, self.branches)]

    def length_entries(self) -> list[LengthEntry]:
        stacks = self._stacks()

        def sample_lengths(args: tuple, kwargs: Mapping[str, Any]) -> dict[str, torch.Tensor]:
            waveform = argument(args, kwargs, 0, "input_values")
            if not isinstance(waveform, torch.Tensor):
                return {}
            mask = argument(args, kwargs, 1, "attention_mask")
            return {"features": lengths_from_mask(mask, waveform.shape[0], waveform.shape[1])}

        def frame_lengths(args: tuple, kwargs: Mapping[str, Any]) -> dict[str, torch.Tensor]:
            hidden = argument(args, kwargs, 0, "hidden_states")
            if not isinstance(hidden, torch.Tensor):
                return {}
            mask = argument(args, kwargs, 1, "attention_mask")
            return {"encoder": lengths_from_mask(mask, hidden.shape[0], hidden.shape[1])}

        return [LengthEntry(stacks.base, sample_lengths),
                LengthEntry(stacks.encoder, frame_lengths)]

    def _stacks(self) -> Wav2Vec2Stacks:
        stacks = self.locate(self.model)
        assert stacks is not None
        return stacks


class Wav2Vec2Runner(Wav2Vec2LikeRunner):
    family = "hf-wav2vec2"
    locate = staticmethod(stacks_under(("Wav2Vec2Model",)))
    ctc_class = "Wav2Vec2ForCTC"


@register_builtin
class Wav2Vec2Sites(Wav2Vec2LikeSites):
    family = "hf-wav2vec2"
    description = "Hugging Face Wav2Vec2 (Wav2Vec2ForCTC, Wav2Vec2Model, ...)"
    family_modules = ("transformers.models.wav2vec2.modeling_wav2vec2",)
    base_classes = ("Wav2Vec2Model",)
    runner_class = Wav2Vec2Runner


class HubertRunner(Wav2Vec2LikeRunner):
    family = "hf-hubert"
    locate = staticmethod(stacks_under(("HubertModel",)))
    ctc_class = "HubertForCTC"


@register_builtin
class HubertSites(Wav2Vec2LikeSites):
    family = "hf-hubert"
    description = "Hugging Face HuBERT (HubertForCTC, HubertModel, ...)"
    family_modules = ("transformers.models.hubert.modeling_hubert",)
    base_classes = ("HubertModel",)
    runner_class = HubertRunner


class Wav2Vec2ConformerRunner(Wav2Vec2LikeRunner):
    family = "hf-wav2vec2-conformer"
    locate = staticmethod(stacks_under(("Wav2Vec2ConformerModel",)))
    ctc_class = "Wav2Vec2ConformerForCTC"


@register_builtin
class Wav2Vec2ConformerSites(Wav2Vec2LikeSites):
    family = "hf-wav2vec2-conformer"
    description = "Hugging Face Wav2Vec2-Conformer (Wav2Vec2ConformerForCTC, ...Model, ...)"
    family_modules = ("transformers.models.wav2vec2_conformer.modeling_wav2vec2_conformer",)
    base_classes = ("Wav2Vec2ConformerModel",)
    runner_class = Wav2Vec2ConformerRunner
    branches = CONFORMER_BRANCHES

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.notes.append("the convolution modules do not mask padding: in a padded batch the "
                          "frames next to each sequence's end see padded frames; run one "
                          "utterance at a time for exact per-utterance results")
