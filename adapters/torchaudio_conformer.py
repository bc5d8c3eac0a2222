"""torchaudio's Conformer encoder (``torchaudio.models.Conformer``).

Sites, for each ``ConformerLayer`` ``conformer_layers.{i}`` (time-major inside: ``(frames, batch,
dim)``; records are batch-first as everywhere in attnprobe):

- ``encoder.{i}`` (block): input and output are the residual stream. The output is after the
  layer's final LayerNorm.
- ``encoder.{i}.ffn1`` / ``encoder.{i}.ffn2`` (ffn): input is the residual stream; output is what
  the layer adds to it, ``0.5 * ffn(x)``. torchaudio applies the half-step factor outside the
  module (``x * 0.5 + residual``), so the output is derived from the module's output by a
  :class:`~attnprobe.adapters.recompute.DerivedTap`: it has the right values but is not on the
  autograd path (gradient probes must use the block sites, which are).
- ``encoder.{i}.self_attn``: input is the residual stream, taken where ``self_attn_layer_norm``
  receives it (like the other branches, whose LayerNorm sits inside their module); output is
  ``self_attn_dropout(attention)``, exactly what is added; attention probabilities come from the
  ``nn.MultiheadAttention`` itself (:mod:`attnprobe.adapters.torch_mha`).
- ``encoder.{i}.conv``: input is the residual stream, output is what is added (the module ends with
  its own dropout).

Sites are listed in forward order, which depends on ``convolution_first``.

There is no ``encoder.frontend`` site: torchaudio's Conformer takes features that were already
subsampled and projected, ``(batch, frames, input_dim)``, and feeds them unchanged to the first
layer. The encoder input is therefore the model input itself, recorded as the input of
``encoder.0``.

Lengths: the ``lengths`` argument gives the valid frames, both for the (absent) frontend input and
for every encoder site, since the Conformer does not subsample.
"""

from __future__ import annotations

import sys

from torch import nn

from attnprobe.sites import Site

from .recompute import DerivedTap
from .site_map import SiteBinding, register_builtin
from .torch_mha import MultiheadAttentionCapture
from .torchaudio_common import LengthsArgumentRunner, LengthsArgumentSites

HALF_STEP = 0.5


class TorchaudioConformerRunner(LengthsArgumentRunner):
    family = "torchaudio-conformer"


@register_builtin
class TorchaudioConformerSites(LengthsArgumentSites):
    family = "torchaudio-conformer"
    description = "torchaudio.models.Conformer"
    runner_class = TorchaudioConformerRunner

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        # A torchaudio model can only exist if torchaudio was imported; never import it here.
        module = sys.modules.get("torchaudio.models.conformer")
        return module is not None and isinstance(model, module.Conformer)

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.notes.append("torchaudio Conformer has no frontend: the model input is the encoder "
                          "input, recorded as the input of encoder.0")
        self.notes.append("ffn1/ffn2 outputs are 0.5 * FFN(x), what the residual stream receives; "
                          "they are derived values, not on the autograd path")

    def bindings(self) -> list[SiteBinding]:
        found = []
        for layer, block in enumerate(self.model.conformer_layers):
            path = f"conformer_layers.{layer}"
            found.append(SiteBinding(Site(f"encoder.{layer}", "block", "encoder", layer, path),
                                     block, input_name="input", batch_first=False))
            middle = [self._self_attention(layer, block, path),
                      self._convolution(layer, block, path)]
            if block.convolution_first:
                middle.reverse()
            found += [self._feed_forward(layer, block, path, "ffn1"), *middle,
                      self._feed_forward(layer, block, path, "ffn2")]
        return found

    def _feed_forward(self, layer: int, block: nn.Module, path: str, child: str) -> SiteBinding:
        module = getattr(block, child)
        half_step = DerivedTap(module, lambda _args, _kwargs, output: HALF_STEP * output)
        return SiteBinding(Site(f"encoder.{layer}.{child}", "ffn", "encoder", layer,
                                f"{path}.{child}"),
                           module, output_module=half_step, input_name="input", batch_first=False)

    @staticmethod
    def _self_attention(layer: int, block: nn.Module, path: str) -> SiteBinding:
        return SiteBinding(Site(f"encoder.{layer}.self_attn", "self_attn", "encoder", layer,
                                f"{path}.self_attn"),
                           block.self_attn_layer_norm, output_module=block.self_attn_dropout,
                           input_name="input", batch_first=False,
                           attention=MultiheadAttentionCapture(block.self_attn))

    @staticmethod
    def _convolution(layer: int, block: nn.Module, path: str) -> SiteBinding:
        # The layer transposes to (batch, frames, dim) before calling the convolution module.
        return SiteBinding(Site(f"encoder.{layer}.conv", "conv", "encoder", layer,
                                f"{path}.conv_module"),
                           block.conv_module, input_name="input", batch_first=True)
