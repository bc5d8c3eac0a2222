"""Gradient maps G_i (paper section 3.2): where in each block's output each label's evidence sits.

``G_i[s, t] = || d log p(a_s | a_<s, X) / d h_i(t) ||_2`` over features, for the encoder input
(``G_0``, the ``encoder.frontend`` output) and the output ``h_i`` of every encoder block, under
teacher forcing. All ``S x blocks`` gradients come from one batched backward: every block output
stays attached to the graph, and the ``S`` label log-probabilities are differentiated with
respect to all of them at once (:func:`attnprobe.vjp.batched_vjp`), for every sequence of the
batch at the same time.

Per map, monotonicity is the Spearman correlation of the label index with the label's centre of
mass over frames. A model that aligns labels with the audio has a monotone ``G_0``; where the
encoder reverses time, the sign turns (the paper: increasing up to ``G_9``, decreasing from
``G_10``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from attnprobe.adapters import resolve_adapter
from attnprobe.batch import BatchForm, as_speech_batch
from attnprobe.errors import CapabilityError, InputError
from attnprobe.model_state import evaluation_mode
from attnprobe.sites import FRONTEND_SITE
from attnprobe.trace import trace
from attnprobe.vjp import batched_vjp, require_grad_mode

from .encoder import differentiable_inputs, encoder_input_of, encoder_layers
from .result import ProbeResult
from .statistics import centre_of_mass, rank_correlation_with_position, require_positions
from .verdict import REVERSAL_THRESHOLD, reversal_verdict


@dataclass(repr=False)
class GradientMaps(ProbeResult):
    """``G_0`` (encoder input) and ``G_i`` per encoder block, per sequence.

    Attributes:
        sites: ``"encoder.frontend"`` (``G_0``), then ``"encoder.<i>"`` per block.
        maps: one array per sequence, ``(sites, labels, frames)``.
        per_sequence: ``(sequences, sites)`` monotonicity in [-1, 1].
        threshold: |monotonicity| that counts as monotone.
    """

    sites: list[str]
    maps: list[np.ndarray]
    per_sequence: np.ndarray
    threshold: float = REVERSAL_THRESHOLD

    derived: ClassVar[tuple[str, ...]] = ("scores", "reversed_at", "verdict")

    @property
    def scores(self) -> np.ndarray:
        """``(sites,)`` monotonicity averaged over sequences."""
        return self.per_sequence.mean(axis=0)

    @property
    def aligned(self) -> bool:
        """Whether ``G_0`` is monotone at all: without it there is no order to turn."""
        return abs(float(self.scores[0])) >= self.threshold

    @property
    def reversed_at(self) -> int | None:
        """The block from which the maps keep the opposite order of ``G_0`` (``None``: none)."""
        if not self.aligned:
            return None
        orientation = float(np.sign(self.scores[0]))
        layers = [int(site.rsplit(".", 1)[-1]) for site in self.sites[1:]]
        return reversal_verdict(orientation * self.scores[1:], layers, self.threshold)

    @property
    def verdict(self) -> str:
        if not self.aligned:
            return (f"undetermined (G_0 monotonicity {self.scores[0]:+.2f}: the decoder does not "
                    f"align labels with the input)")
        return ("not reversed" if self.reversed_at is None
                else f"reversed at block {self.reversed_at}")

    def summary(self) -> str:
        lines = [f"gradient maps: {self.verdict} ({len(self.maps)} sequences)"]
        lines += [f"  {site}: {score:+.2f}" for site, score in zip(self.sites, self.scores)]
        return "\n".join(lines)


def gradient_maps(model: nn.Module, batch: BatchForm, *, chunk_size: int | None = None,
                  threshold: float = REVERSAL_THRESHOLD, adapter: Any = None,
                  runner: Any = None) -> GradientMaps:
    """``G_0`` and ``G_i`` of every encoder block, teacher-forced, in eval mode.

    Args:
        model: an encoder-decoder whose adapter implements ``label_log_probs``.
        batch: with reference labels: :class:`SpeechBatch` or ``(features, lengths, labels,
            label_lengths)``.
        chunk_size: labels per backward pass (each holds ``chunk x blocks`` hidden-state
            gradients); ``None`` for all at once.
        threshold: |monotonicity| that counts as monotone.
        adapter: a site map (class or instance) or adapter to use instead of the automatic choice.
        runner: a runner to use instead of the site map's (see :mod:`attnprobe.adapters.runner`).

    Raises:
        CapabilityError: the model has no decoder.
        GradientUnavailableError: under ``torch.inference_mode()``.
        InputError: no labels, or fewer than 4 labels or frames in a sequence.
    """
    require_grad_mode("gradient_maps")
    batch = as_speech_batch(batch)
    adapter = resolve_adapter(model, adapter, runner, example=batch)
    if not adapter.site_map.has_decoder:
        raise CapabilityError(
            f"gradient maps need an attention decoder, and this {adapter.family} model has none; "
            f"use attnprobe.probes.frame_mapping, which works on encoder-only and CTC models")
    if batch.labels is None or batch.label_lengths is None:
        raise InputError("gradient maps differentiate the reference labels' log-probabilities; "
                         "give SpeechBatch(..., labels=..., label_lengths=...)")
    require_positions(batch.label_lengths, "labels", "use utterances with more labels")
    layers = encoder_layers(adapter.site_map)
    with evaluation_mode(model), torch.enable_grad():
        leaf_batch = differentiable_inputs(batch)
        with trace(model, kind=("frontend", "block"), stack="encoder",
                   capture={"output"}, attach=True, adapter=adapter.site_map,
                   input_lengths=leaf_batch.input_lengths) as traced:
            log_probs = adapter.runner.label_log_probs(leaf_batch)
        encoder_input, lengths = encoder_input_of(traced, leaf_batch, adapter.site_map)
        require_positions(lengths, "encoder frames", "use longer inputs")
        hidden = [encoder_input] + [traced[f"encoder.{layer}"].output for layer in layers]
        labels = log_probs.shape[1]
        cotangents = log_probs.new_zeros(labels, *log_probs.shape)
        cotangents[torch.arange(labels), :, torch.arange(labels)] = 1.0
        norms = batched_vjp(log_probs, tuple(hidden), cotangents, chunk_size, max_chunk_size=16,
                            reduce=lambda gradient: torch.linalg.vector_norm(gradient, dim=-1))
    maps = []
    for index, (count, frames) in enumerate(zip(batch.label_lengths.tolist(), lengths.tolist())):
        maps.append(torch.stack([norm[:count, index, :frames] for norm in norms]).cpu().numpy())
    per_sequence = np.array([[_monotonicity(site_map) for site_map in item] for item in maps])
    sites = [FRONTEND_SITE] + [f"encoder.{layer}" for layer in layers]
    return GradientMaps(sites, maps, per_sequence, threshold)


def _monotonicity(site_map: np.ndarray) -> float:
    """Spearman correlation of label index with each label's centre of mass over frames."""
    return rank_correlation_with_position(centre_of_mass(torch.from_numpy(site_map)).numpy())
