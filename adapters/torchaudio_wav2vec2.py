"""torchaudio's wav2vec 2.0 and HuBERT (``torchaudio.models.Wav2Vec2Model``, as built by
``wav2vec2_model``, ``wav2vec2_base`` / ``_large``, ``hubert_base`` / ``_large`` / ``_xlarge``).

Their ``SelfAttention`` computes attention with ``scaled_dot_product_attention`` and never holds
the probabilities, so they are recomputed as ``softmax(q k^T * scaling + mask)`` from the outputs of
the module's own ``q_proj`` and ``k_proj`` and the ``attention_mask`` it received
(:class:`~attnprobe.adapters.recompute.RecomputedAttention`): the probabilities before attention
dropout, not on the model's autograd path. Padded keys get exactly 0 (the mask adds -10000).

Sites (all batch-first):

- ``encoder.frontend``: input is the convolutional feature extractor's output
  ``(batch, frames, extractor_channels)``, taken where ``encoder.feature_projection`` receives it;
  output is what the first block receives: the projection plus the convolutional positional
  embedding (then LayerNorm and dropout, as the model applies them), taken at
  ``encoder.transformer.dropout``. So ``t["encoder.frontend"].output`` equals
  ``t["encoder.0"].input``.
- ``encoder.{i}`` (block, ``encoder.transformer.layers.{i}``): input and output are the residual
  stream.
- ``encoder.{i}.self_attn``: input is the residual stream the branch reads (for LayerNorm-first
  models, where ``layer_norm`` receives it, before the normalisation); output is the attention
  output after the layer's dropout, exactly what is added to the residual stream.
- ``encoder.{i}.ffn``: likewise, input is the residual stream (before ``final_layer_norm`` in
  LayerNorm-first models), output is the feed-forward output, what is added.

Lengths: the ``lengths`` argument (valid waveform samples) passes through the feature extractor's
convolutions, which give the valid frames of every site.

WavLM (``wavlm_model``), whose attention adds a gated relative-position bias, is not covered: its
attention modules are not ``SelfAttention``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from attnprobe.batch import SpeechBatch
from attnprobe.capture import pick_argument
from attnprobe.errors import CapabilityError
from attnprobe.sites import Site

from .recompute import RecomputedAttention
from .runner import Runner
from .site_map import LengthEntry, SiteBinding, SiteMap, register_builtin

FAMILY = "torchaudio-wav2vec2"


class TorchaudioWav2Vec2Runner(Runner):
    """Runs ``model(waveforms (batch, samples), input_lengths)``; CTC posteriors of its ``aux``
    head."""

    family = FAMILY

    def run(self, batch: SpeechBatch) -> Any:
        """``model(waveforms (batch, samples), input_lengths)`` -> ``(features, frame_lengths)``."""
        return self.model(batch.inputs, batch.input_lengths)

    def ctc_log_probs(self, batch: SpeechBatch) -> tuple[torch.Tensor, torch.Tensor]:
        if getattr(self.model, "aux", None) is None:
            raise CapabilityError("this torchaudio wav2vec2 model has no output head (aux); build "
                                  "it with aux_num_out=<vocabulary size> for CTC probabilities")
        logits, frame_lengths = self.model(batch.inputs, batch.input_lengths)
        return logits.log_softmax(-1), frame_lengths

    @property
    def subsampling(self) -> int:
        factor = 1
        for block in self.model.feature_extractor.conv_layers:
            factor *= block.stride
        return factor

    @property
    def frame_shift_seconds(self) -> float:
        return 1 / 16000


@register_builtin
class TorchaudioWav2Vec2Sites(SiteMap):
    family = FAMILY
    description = "torchaudio.models.Wav2Vec2Model (wav2vec 2.0, HuBERT)"
    runner_class = TorchaudioWav2Vec2Runner

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        # A torchaudio model can only exist if torchaudio was imported; never import it here.
        models = sys.modules.get("torchaudio.models.wav2vec2.model")
        components = sys.modules.get("torchaudio.models.wav2vec2.components")
        if models is None or components is None or not isinstance(model, models.Wav2Vec2Model):
            return False
        return all(isinstance(layer.attention, components.SelfAttention)
                   for layer in model.encoder.transformer.layers)

    def bindings(self) -> list[SiteBinding]:
        encoder = self.model.encoder
        transformer = encoder.transformer
        found = [SiteBinding(Site("encoder.frontend", "frontend", "encoder", None,
                                  "encoder.feature_projection"),
                             encoder.feature_projection, output_module=transformer.dropout,
                             input_name="x")]
        for layer, block in enumerate(transformer.layers):
            path = f"encoder.transformer.layers.{layer}"
            attention = block.attention
            # LayerNorm-first layers normalise the stream before each branch, outside the branch.
            pre_norm = block.layer_norm_first
            found += [
                SiteBinding(Site(f"encoder.{layer}", "block", "encoder", layer, path), block,
                            input_name="x"),
                SiteBinding(Site(f"encoder.{layer}.self_attn", "self_attn", "encoder", layer,
                                 f"{path}.attention"),
                            block.layer_norm if pre_norm else attention,
                            output_module=block.dropout, input_name=None,
                            attention=RecomputedAttention(
                                attention, attention.q_proj, attention.k_proj,
                                attention.num_heads, attention.scaling, mask=_attention_mask)),
                SiteBinding(Site(f"encoder.{layer}.ffn", "ffn", "encoder", layer,
                                 f"{path}.feed_forward"),
                            block.final_layer_norm if pre_norm else block.feed_forward,
                            output_module=block.feed_forward, input_name=None),
            ]
        return found

    def length_entries(self) -> list[LengthEntry]:
        extractor = self.model.feature_extractor

        def lengths(args: tuple, kwargs: Mapping[str, Any]) -> dict[str, torch.Tensor]:
            samples = pick_argument(args, kwargs, 1, "length")
            if samples is None:
                return {}
            frames = extracted_frames(extractor, samples)
            return {"features": frames, "encoder": frames}

        return [LengthEntry(extractor, lengths)]


def extracted_frames(extractor: nn.Module, samples: torch.Tensor) -> torch.Tensor:
    """Valid frames after the feature extractor's convolutions, ``(batch,)`` int64.

    The same arithmetic as torchaudio's ``ConvLayerBlock``: ``floor((n - kernel) / stride) + 1``
    per convolution, never below 0.
    """
    frames = samples.long()
    for block in extractor.conv_layers:
        frames = torch.div(frames - block.kernel_size, block.stride, rounding_mode="floor") + 1
        frames = frames.clamp(min=0)
    return frames


def _attention_mask(args: tuple, kwargs: Mapping[str, Any]) -> torch.Tensor | None:
    """The additive ``(batch, 1, frames, frames)`` mask ``SelfAttention`` received, if any."""
    return pick_argument(args, kwargs, 1, "attention_mask")
