"""torchaudio's streaming Emformer encoder (``torchaudio.models.Emformer``).

How Emformer attends. ``forward(input (batch, frames + right_context_length, dim), lengths)`` cuts
the utterance into segments of ``segment_length`` frames. Each layer's attention runs once over
the whole utterance, time-major, with a block mask that makes it behave as if it streamed:

- queries, in this order: right context ``R`` rows (``right_context_length`` look-ahead frames per
  segment), utterance ``T`` rows, summary ``S`` rows (one per segment, when
  ``max_memory_size > 0``);
- keys, in this order: memory bank ``M`` rows (one per earlier segment, ``M = S - 1``), right
  context ``R`` rows, utterance ``T`` rows;
- an utterance frame attends to its own segment, to ``left_context_length`` earlier frames, to its
  segment's right-context block and to the memory of up to ``max_memory_size`` earlier segments;
  padded utterance keys get probability 0.

The attention site records the **utterance-to-utterance block** ``(batch, heads, T, T)`` of those
probabilities (queries ``R : R+T``, keys ``M+R : M+R+T``), which lines up with encoder frames and
their lengths. Its rows sum to at most 1: the rest of each row went to memory and right-context keys
(with ``right_context_length=0`` and ``max_memory_size=0`` the rows sum to 1). For the full matrix
``(batch, heads, R+T+S, M+R+T)`` in the order above, trace with
``adapter=EmformerAdapter(model, attention_block="full")``; its lengths then do not index its
rows and columns, use the layout above.

The probabilities come from the attention module's own ``_gen_attention_probs`` method, listened to
on the instance (:func:`~attnprobe.adapters.recompute.listen_to_method`): the exact tensor the layer
multiplies with the values (after attention dropout, in training mode).

Sites for each ``emformer_layers.{i}`` (records batch-first):

- ``encoder.{i}`` (block): the utterance rows of the residual stream, input and output.
- ``encoder.{i}.self_attn``: input is the residual stream (the utterance rows of what
  ``layer_norm_input`` receives); output is what the layer adds to it (after dropout).
- ``encoder.{i}.ffn``: input and output are the utterance rows of the feed-forward module's input
  (the residual stream; its LayerNorm is inside the module) and output (what is added).

Emformer's branches run over ``[right context; utterance]``; with ``right_context_length > 0``
the branch inputs and outputs are the utterance rows sliced off by a
:class:`~attnprobe.adapters.recompute.DerivedTap`, values not on the autograd path (gradient probes
must use block sites). There is no frontend site: Emformer takes features as they are.

Streaming inference (``Emformer.infer``) calls the layers' and the attention's ``infer`` methods,
which no forward hook sees: trace ``forward`` (which applies the same segment masks). During
``infer`` no block or attention is recorded; the branch modules still run as modules there, so
their outputs are recorded, with lengths unknown.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from attnprobe.capture import AttentionCapture, AttentionEmitter, Remover
from attnprobe.sites import Site

from .recompute import DerivedTap, listen_to_method
from .site_map import SiteBinding, register_builtin
from .torchaudio_common import LengthsArgumentRunner, LengthsArgumentSites

AttentionBlock = Literal["utterance", "full"]
PROBABILITIES_METHOD = "_gen_attention_probs"
ATTENTION_ARGUMENTS = ("utterance", "lengths", "right_context", "summary", "mems",
                       "attention_mask")


@dataclass(frozen=True)
class AttentionLayout:
    """Row counts of one attention call: queries ``[R; T; S]``, keys ``[M; R; T]``."""

    batch: int
    utterance: int
    right_context: int
    summary: int
    memory: int

    @classmethod
    def from_call(cls, args: tuple, kwargs: Mapping[str, Any]) -> AttentionLayout:
        call = dict(zip(ATTENTION_ARGUMENTS, args, strict=False)) | dict(kwargs)
        utterance = call["utterance"]
        return cls(batch=utterance.size(1), utterance=utterance.size(0),
                   right_context=call["right_context"].size(0), summary=call["summary"].size(0),
                   memory=call["mems"].size(0))


class EmformerAttentionCapture(AttentionCapture):
    """Probabilities of one ``_EmformerAttention`` (see the module docstring for the layout).

    A forward pre-hook on the attention module reads the layout of the call; the listened
    ``_gen_attention_probs`` result ``(batch * heads, queries, keys)`` is then cut to the requested
    block. ``infer`` calls bypass the pre-hook, so they are not captured.
    """

    def __init__(self, attention: nn.Module, block: AttentionBlock = "utterance") -> None:
        self.attention = attention
        self.block = block

    def install(self, emitter: AttentionEmitter) -> Remover:
        layouts: list[AttentionLayout] = []

        def before(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            layouts.append(AttentionLayout.from_call(args, kwargs))

        def after(_module: nn.Module, _args: tuple, _output: Any) -> None:
            if layouts:
                layouts.pop()

        def on_probabilities(_args: tuple, _kwargs: dict, probabilities: torch.Tensor) -> None:
            if not layouts:
                return
            layout = layouts[-1]
            full = probabilities.view(layout.batch, -1, *probabilities.shape[1:])
            if self.block == "full":
                chosen = full
            else:
                queries = slice(layout.right_context, layout.right_context + layout.utterance)
                first_key = layout.memory + layout.right_context
                chosen = full[:, :, queries, first_key:first_key + layout.utterance]
            if emitter.reserve(tuple(chosen.shape), chosen.dtype):
                # A slice would keep the whole (batch * heads, queries, keys) tensor alive.
                emitter.emit(chosen if chosen is full else chosen.clone())

        pre = self.attention.register_forward_pre_hook(before, with_kwargs=True)
        post = self.attention.register_forward_hook(after, always_call=True)
        stop_listening = listen_to_method(self.attention, PROBABILITIES_METHOD, on_probabilities)

        def remove() -> None:
            stop_listening()
            pre.remove()
            post.remove()

        return remove


class EmformerRunner(LengthsArgumentRunner):
    family = "torchaudio-emformer"


@register_builtin
class EmformerSites(LengthsArgumentSites):
    family = "torchaudio-emformer"
    description = "torchaudio.models.Emformer"
    runner_class = EmformerRunner

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        # A torchaudio model can only exist if torchaudio was imported; never import it here.
        module = sys.modules.get("torchaudio.models.emformer")
        return module is not None and isinstance(model, module._EmformerImpl)

    def __init__(self, model: nn.Module, attention_block: AttentionBlock = "utterance") -> None:
        super().__init__(model)
        if attention_block not in ("utterance", "full"):
            raise ValueError(f"attention_block={attention_block!r} is not understood; use "
                             f"'utterance' (aligned with encoder frames) or 'full'")
        self.attention_block = attention_block
        if attention_block == "utterance" and (model.use_mem or model.right_context_length):
            self.notes.append("Emformer attention is the utterance-to-utterance block; rows sum to "
                              "less than 1, the rest went to memory and right-context keys")
        if attention_block == "full":
            self.notes.append("Emformer attention is the full matrix: queries [right context; "
                              "utterance; summary], keys [memory; right context; utterance]; "
                              "lengths do not index it")
        if model.right_context_length:
            self.notes.append("self_attn and ffn inputs/outputs are utterance rows sliced from "
                              "[right context; utterance]: values not on the autograd path")

    def bindings(self) -> list[SiteBinding]:
        found = []
        for layer, block in enumerate(self.model.emformer_layers):
            path = f"emformer_layers.{layer}"
            found.append(SiteBinding(Site(f"encoder.{layer}", "block", "encoder", layer, path),
                                     block, input_name="utterance", batch_first=False))
            found.append(SiteBinding(
                Site(f"encoder.{layer}.self_attn", "self_attn", "encoder", layer,
                     f"{path}.attention"),
                self._utterance_rows(block.layer_norm_input, "input"),
                output_module=self._utterance_rows(block.dropout, "output"),
                input_name=None, batch_first=False,
                attention=EmformerAttentionCapture(block.attention, self.attention_block)))
            found.append(SiteBinding(
                Site(f"encoder.{layer}.ffn", "ffn", "encoder", layer, f"{path}.pos_ff"),
                self._utterance_rows(block.pos_ff, "input"),
                output_module=self._utterance_rows(block.pos_ff, "output"),
                input_name=None, batch_first=False))
        return found

    def _utterance_rows(self, module: nn.Module, observe: Literal["input", "output"]
                        ) -> nn.Module:
        """``module`` itself when its rows are the utterance's, else a tap slicing them off."""
        if not self.model.right_context_length:
            return module
        segment, right = self.model.segment_length, self.model.right_context_length

        def utterance_rows(args: tuple, _kwargs: dict, output: Any) -> torch.Tensor:
            rows = args[0] if observe == "input" else output
            return rows[right_context_rows(rows.size(0), segment, right):]

        return DerivedTap(module, utterance_rows, observe)


def right_context_rows(rows: int, segment_length: int, right_context_length: int) -> int:
    """How many of ``rows = R + T`` branch rows are right context.

    Emformer gives each of the ``ceil(T / segment_length)`` segments one block of
    ``right_context_length`` frames, so ``rows = T + right_context_length * segments``; that sum
    grows by at least one per utterance frame, so ``segments = ceil(rows / (segment_length +
    right_context_length))`` is the only solution.
    """
    return right_context_length * math.ceil(rows / (segment_length + right_context_length))
