"""attnprobe's own Conformer encoder-decoder (:class:`attnprobe.models.ConformerAED`) and its
encoder alone (:class:`attnprobe.models.ConformerEncoder`).

Attention probabilities come from the model's own taps, which it fills only while a trace wants
them; its output always comes from the fast SDPA path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from attnprobe.batch import SpeechBatch
from attnprobe.capture import TapAttention, pick_argument
from attnprobe.errors import CapabilityError
from attnprobe.sites import Site

from .runner import Runner
from .site_map import LengthEntry, SiteBinding, SiteMap, register_builtin

BRANCHES = (("ffn1", "ffn"), ("self_attn", "self_attn"), ("conv", "conv"), ("ffn2", "ffn"))
FAMILY = "attnprobe-conformer"


def _encoder(model: nn.Module) -> nn.Module:
    return getattr(model, "encoder", model)


class ConformerRunner(Runner):
    """Runs a ConformerAED teacher-forced (or a bare ConformerEncoder) on 10 ms log-mel features."""

    family = FAMILY
    frame_shift_seconds = 0.01

    def run(self, batch: SpeechBatch) -> Any:
        if _encoder(self.model) is self.model:
            return self.model(batch.inputs, batch.input_lengths)
        return self.model(batch.inputs, batch.input_lengths, batch.labels, batch.label_lengths)

    def label_log_probs(self, batch: SpeechBatch) -> torch.Tensor:
        if _encoder(self.model) is self.model:
            raise CapabilityError("a bare ConformerEncoder has no decoder to teacher-force; trace "
                                  "the ConformerAED that holds it")
        if batch.labels is None or batch.label_lengths is None:
            raise CapabilityError("teacher forcing needs reference labels: give SpeechBatch(..., "
                                  "labels=..., label_lengths=...)")
        return self.model.label_log_probs(batch.inputs, batch.input_lengths, batch.labels,
                                          batch.label_lengths)

    @property
    def subsampling(self) -> int:
        """Encoder frames are this many input frames apart."""
        return math.prod(_encoder(self.model).frontend.time_pools)


@register_builtin
class ConformerSites(SiteMap):
    family = FAMILY
    description = "attnprobe.models.ConformerAED / ConformerEncoder"
    runner_class = ConformerRunner

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return (type(model).__module__.startswith("attnprobe.models")
                and type(model).__name__ in ("ConformerAED", "ConformerEncoder"))

    def bindings(self) -> list[SiteBinding]:
        encoder = _encoder(self.model)
        prefix = "encoder." if encoder is not self.model else ""
        found = [SiteBinding(Site("encoder.frontend", "frontend", "encoder", None,
                                  f"{prefix}frontend"), encoder.frontend, input_name="features")]
        for layer, block in enumerate(encoder.blocks):
            path = f"{prefix}blocks.{layer}"
            found.append(SiteBinding(Site(f"encoder.{layer}", "block", "encoder", layer, path),
                                     block, input_name="x"))
            for child, kind in BRANCHES:
                module = getattr(block, child)
                attention = (TapAttention(module.attention.attention_tap)
                             if kind == "self_attn" else None)
                found.append(SiteBinding(
                    Site(f"encoder.{layer}.{child}", kind, "encoder", layer, f"{path}.{child}"),
                    module, input_name="x", attention=attention))
        decoder = getattr(self.model, "decoder", None)
        if decoder is not None:
            cross = decoder.cross_attn
            found.append(SiteBinding(
                Site("decoder.0.cross_attn", "cross_attn", "decoder", 0, "decoder.cross_attn"),
                cross, output_module=cross.context_tap,
                attention=TapAttention(cross.attention_tap)))
        return found

    def length_entries(self) -> list[LengthEntry]:
        encoder = _encoder(self.model)

        def lengths(args: tuple, kwargs: Mapping[str, Any]) -> dict[str, torch.Tensor]:
            feature_lengths = pick_argument(args, kwargs, 1, "feature_lengths")
            if feature_lengths is None:
                feature_lengths = pick_argument(args, kwargs, 1, "lengths")
            found: dict[str, torch.Tensor] = {}
            if feature_lengths is not None:
                found["features"] = feature_lengths
                found["encoder"] = encoder.output_lengths(feature_lengths)
            label_lengths = pick_argument(args, kwargs, 3, "label_lengths")
            if label_lengths is not None:
                # Teacher forcing predicts every label plus the end-of-sentence symbol.
                found["decoder"] = label_lengths + 1
            return found

        entries = [LengthEntry(self.model, lengths)]
        if encoder is not self.model:
            entries.append(LengthEntry(encoder, lengths))
        return entries
