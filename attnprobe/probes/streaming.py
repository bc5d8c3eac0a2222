"""The attention and dominance probes in one streaming forward pass.

Cross-attention monotonicity, self-attention diagonality and branch dominance are each written once,
as a reducer (:class:`attnprobe.StreamingReducer`) that folds every captured tensor into a few
numbers per layer and head. Replaying stored records through it gives the full-tensor result
(:func:`attnprobe.reducers.replay`); handing it to ``attnprobe.trace(..., reducers=[...],
store=False)`` gives the same result while no attention matrix outlives its layer.

Usage::

    results = streaming_probes(model, SpeechBatch(features, lengths, labels, label_lengths))
    results.diagonality.summary()
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from attnprobe.adapters import resolve_adapter
from attnprobe.batch import BatchForm, as_speech_batch
from attnprobe.errors import CapabilityError
from attnprobe.model_state import evaluation_mode
from attnprobe.sites import Site
from attnprobe.trace import trace

from .cross_attention import CrossAttentionMonotonicity, CrossAttentionMonotonicityReducer
from .diagonality import (
    DEFAULT_MAX_OFFSET,
    SelfAttentionDiagonality,
    SelfAttentionDiagonalityReducer,
)
from .dominance import BranchDominance, BranchDominanceReducer
from .verdict import REVERSAL_THRESHOLD


@dataclass
class StreamingResults:
    """What one streaming pass measured. A probe the model or batch cannot support is ``None``,
    with the reason in ``unavailable`` (e.g. no cross-attention without a decoder or labels)."""

    cross_attention: CrossAttentionMonotonicity | None
    diagonality: SelfAttentionDiagonality | None
    dominance: BranchDominance | None
    unavailable: dict[str, str] = field(default_factory=dict)


def streaming_probes(model: nn.Module, batch: BatchForm, *,
                     threshold: float = REVERSAL_THRESHOLD,
                     max_offset: int = DEFAULT_MAX_OFFSET, adapter: Any = None,
                     runner: Any = None) -> StreamingResults:
    """Run the model once (eval mode, no gradients) with the three reducers and nothing stored.

    Args:
        model: any model attnprobe has an adapter for; its runner must implement ``run``.
        batch: a :class:`SpeechBatch`, or ``(features, lengths[, labels, label_lengths])``; with
            labels an encoder-decoder model is run teacher-forced and its cross-attention scored.
        threshold: verdict threshold of the correlations and diagonality scores.
        max_offset: range of the self-attention offset histogram.
        adapter: a site map (class or instance) or adapter to use instead of the automatic choice.
        runner: a runner to use instead of the site map's (see :mod:`attnprobe.adapters.runner`).

    Returns:
        :class:`StreamingResults`. Memory: per layer and head a few numbers per sequence, plus one
        block input held until its block's output arrives.
    """
    batch = as_speech_batch(batch)
    adapter = resolve_adapter(model, adapter, runner, example=batch)
    has_decoder = adapter.site_map.has_decoder
    cross = CrossAttentionMonotonicityReducer(
        threshold=threshold, first_label_position=adapter.runner.first_label_position)
    diagonality = SelfAttentionDiagonalityReducer(max_offset, threshold)
    dominance = BranchDominanceReducer()
    if not any(_streamed_site(binding.site) for binding in adapter.site_map.bindings()):
        raise CapabilityError(f"the {adapter.family} site map found no encoder blocks, branches "
                              f"or cross-attention to stream (attnprobe.describe(model) says "
                              f"why)")
    # Without labels a decoder runs on its prompt alone: nothing to rank, so nothing to reduce.
    scores_cross = batch.labels is not None and has_decoder
    with evaluation_mode(model), torch.no_grad():
        with trace(model, _streamed_site if scores_cross else _encoder_site,
                   capture={"input", "output", "attention"},
                   reducers=[cross, diagonality, dominance] if scores_cross
                   else [diagonality, dominance], store=False,
                   adapter=adapter.site_map, input_lengths=batch.input_lengths):
            adapter.runner.run(batch)
    results = StreamingResults(None, None, None)
    if not scores_cross:
        results.unavailable["cross_attention"] = (
            "the model has no attention decoder" if not has_decoder
            else "the batch has no labels to teacher-force the decoder with")
    else:
        results.cross_attention = _or_reason(cross, "cross_attention", results.unavailable)
    results.diagonality = _or_reason(diagonality, "diagonality", results.unavailable)
    results.dominance = _or_reason(dominance, "dominance", results.unavailable)
    return results


def _streamed_site(site: Site) -> bool:
    """Encoder blocks and their branches, and the decoder's cross-attention."""
    if site.kind == "cross_attn":
        return True
    return site.stack == "encoder" and site.kind in ("block", "ffn", "self_attn", "conv")


def _encoder_site(site: Site) -> bool:
    return site.kind != "cross_attn" and _streamed_site(site)


def _or_reason(reducer: Any, name: str, unavailable: dict[str, str]) -> Any:
    try:
        return reducer.result()
    except CapabilityError as error:
        unavailable[name] = str(error)
        return None
