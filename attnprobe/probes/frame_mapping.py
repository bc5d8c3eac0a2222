"""Frame mapping: which encoder-input frames each encoder block's output frame depends on.

Works for every family with an encoder (encoder-decoder, CTC, encoder-only): no decoder needed.
For block ``i`` the dependency map is ``M_i[t, u] = || d h_i(t) / d x(u) ||_F``, the Frobenius norm
of the Jacobian of output frame ``t`` with respect to encoder-input frame ``u`` (``x`` is the
``encoder.frontend`` output, or the model input when the adapter has no frontend site). An encoder
that keeps time order has its mass on the diagonal; one that reversed time, on the anti-diagonal.

The Jacobian is ``frames x width`` by ``frames x width``; instead of all of it, each output frame
is probed with ``projections`` random directions ``v`` of the feature space (``E ||v J||^2 =
||J||_F^2`` for ``v ~ N(0, I)``), every direction of every frame in one batched backward
(:func:`attnprobe.vjp.batched_vjp`). ``projections=None`` uses all basis vectors: exact, and
``width / projections`` times slower. The directions come from a seeded generator and are shared by
all sequences, so a padded batch gives each sequence exactly the map it gets alone.

Reversal score per block: Spearman correlation between output frame ``t`` and the input frame it
depends on most (``argmax_u M[t, u]``), over valid frames: +1 time-preserving, -1 reversed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from attnprobe.adapters import resolve_adapter
from attnprobe.batch import BatchForm, SpeechBatch, as_speech_batch
from attnprobe.errors import InputError
from attnprobe.model_state import evaluation_mode
from attnprobe.sites import FRONTEND_SITE
from attnprobe.trace import trace
from attnprobe.vjp import batched_vjp, require_grad_mode

from .encoder import differentiable_inputs, encoder_input_of, encoder_layers
from .result import ProbeResult
from .statistics import MINIMUM_POSITIONS, rank_correlation_with_position, require_positions
from .verdict import REVERSAL_THRESHOLD, reversal_verdict


@dataclass(repr=False)
class FrameMapping(ProbeResult):
    """Dependency maps and reversal scores of encoder blocks.

    Attributes:
        layers: encoder block indices, in order.
        maps: one array per sequence, ``(blocks, frames, frames)``: ``[i, t, u]`` is how strongly
            output frame ``t`` of block ``layers[i]`` depends on encoder-input frame ``u``.
        per_sequence: ``(sequences, blocks)`` reversal scores in [-1, 1].
        projections: random directions per output frame (``None``: exact Jacobian norms).
        threshold: a block is reversed at score <= -threshold.
    """

    layers: list[int]
    maps: list[np.ndarray]
    per_sequence: np.ndarray
    projections: int | None
    threshold: float = REVERSAL_THRESHOLD
    output_frames: list[np.ndarray] | None = None
    """Per sequence, the output frame of each map row when only some were probed (``max_frames``);
    ``None``: every valid output frame, in order."""

    derived: ClassVar[tuple[str, ...]] = ("scores", "reversed_at", "verdict")

    @property
    def scores(self) -> np.ndarray:
        """``(blocks,)`` reversal scores averaged over sequences."""
        return self.per_sequence.mean(axis=0)

    @property
    def reversed_at(self) -> int | None:
        """The block where the encoder output becomes reversed for good (``None``: not reversed)."""
        return reversal_verdict(self.scores, self.layers, self.threshold)

    @property
    def verdict(self) -> str:
        block = self.reversed_at
        return "not reversed" if block is None else f"reversed at block {block}"

    def recovered_permutation(self, layer: int, sequence: int = 0) -> np.ndarray:
        """``(frames,)``: for each output frame of block ``layer``, the input frame it depends on
        most. For an encoder that permutes frames this is the permutation."""
        if self.output_frames is not None:
            raise ValueError("only some output frames were probed; recover permutations from "
                             "frame_mapping(..., max_frames=None), which probes every frame")
        return self.maps[sequence][self.layers.index(layer)].argmax(axis=-1)

    def summary(self) -> str:
        method = "exact" if self.projections is None else f"{self.projections} random projections"
        lines = [f"frame mapping: {self.verdict} (Spearman of output frame vs most influential "
                 f"input frame; {method}; {len(self.maps)} sequences)"]
        lines += [f"  encoder.{layer}: {score:+.2f}"
                  for layer, score in zip(self.layers, self.scores)]
        return "\n".join(lines)


def frame_mapping(model: nn.Module, batch: BatchForm, *,
                  layers: list[int] | None = None, projections: int | None = 4,
                  chunk_size: int | None = None, seed: int = 0,
                  threshold: float = REVERSAL_THRESHOLD, max_frames: int | None = None,
                  adapter: Any = None, runner: Any = None) -> FrameMapping:
    """Dependency maps of encoder block outputs on the encoder input.

    The model runs in eval mode (dropout off), without labels, once per block: each run's graph
    is spent by that block's batched backward.

    Args:
        model: any model with an adapter that implements ``run``.
        batch: :class:`SpeechBatch` or ``(features, lengths[, labels, label_lengths])``.
        layers: block indices to map (default: all).
        projections: random feature directions per output frame; ``None`` for the exact norms.
        chunk_size: vector-Jacobian products per backward pass; ``None`` searches for the
            fastest up to 256 (see :func:`attnprobe.vjp.batched_vjp`).
        seed: seed of the random directions.
        threshold: reversal threshold of the scores.
        max_frames: probe at most this many output frames per sequence, evenly spaced over its
            valid frames (first and last included); each probed frame costs ``projections``
            backward passes, so this bounds the cost on long inputs. ``None``: every frame.
        adapter: a site map (class or instance) or adapter to use instead of the automatic choice.
        runner: a runner to use instead of the site map's (see :mod:`attnprobe.adapters.runner`).

    Raises:
        GradientUnavailableError: under ``torch.inference_mode()``.
        InputError: a sequence has fewer than 4 encoder frames.
    """
    require_grad_mode("frame_mapping")
    batch = as_speech_batch(batch)
    adapter = resolve_adapter(model, adapter, runner, example=batch)
    available = encoder_layers(adapter.site_map)
    chosen = available if layers is None else list(layers)
    unknown = sorted(set(chosen) - set(available))
    if unknown:
        raise InputError(f"no encoder blocks {unknown}; this model has blocks {available}")
    if projections is not None and projections < 1:
        raise InputError(f"projections must be >= 1 (or None for exact norms), got {projections}")
    per_block: list[torch.Tensor] = []
    output_lengths = input_lengths = torch.empty(0)
    with evaluation_mode(model), torch.enable_grad():
        # Without labels: the encoder alone is what the maps are about.
        leaf_batch = differentiable_inputs(SpeechBatch(batch.inputs, batch.input_lengths))
        for layer in chosen:
            with trace(model, sites=[FRONTEND_SITE, f"encoder.{layer}"], capture={"output"},
                       attach=True, adapter=adapter.site_map,
                       input_lengths=leaf_batch.input_lengths) as traced:
                adapter.runner.run(leaf_batch)
            encoder_input, input_lengths = encoder_input_of(traced, leaf_batch, adapter.site_map)
            record = traced[f"encoder.{layer}"]
            output_lengths = record.lengths
            require_positions(output_lengths, "encoder frames", "use longer inputs")
            probes = probed_frames(output_lengths, max_frames)
            per_block.append(_dependency_maps(record.output, encoder_input, output_lengths, probes,
                                              projections, chunk_size, seed))
    rows = output_lengths if probes is None else torch.tensor([len(p) for p in probes])
    maps = [torch.stack([block_maps[index, :frames, :inputs] for block_maps in per_block])
            .cpu().numpy()
            for index, (frames, inputs) in enumerate(zip(rows.tolist(), input_lengths.tolist()))]
    per_sequence = np.array([[rank_correlation_with_position(block.argmax(-1)) for block in item]
                             for item in maps])
    return FrameMapping([int(layer) for layer in chosen], maps, per_sequence, projections,
                        threshold, None if probes is None else [p.numpy() for p in probes])


def probed_frames(lengths: torch.Tensor, max_frames: int | None) -> list[torch.Tensor] | None:
    """Per sequence, the output frames to probe: ``None`` for all of them; else at most
    ``max_frames`` evenly spaced over the valid frames, which depend on that sequence alone."""
    if max_frames is None or int(lengths.max()) <= max_frames:
        return None
    if max_frames < MINIMUM_POSITIONS:
        raise InputError(f"max_frames must be at least {MINIMUM_POSITIONS}, got {max_frames}")
    return [torch.linspace(0, length - 1, min(max_frames, length)).round().long()
            for length in lengths.tolist()]


def _dependency_maps(output: torch.Tensor, encoder_input: torch.Tensor, lengths: torch.Tensor,
                     probes: list[torch.Tensor] | None, projections: int | None,
                     chunk_size: int | None, seed: int) -> torch.Tensor:
    """``(batch, rows, input_frames)`` Jacobian-norm maps of one block output: row ``i`` is output
    frame ``i``, or ``probes[b][i]`` for sequence ``b`` when only some frames are probed.

    Args:
        output: ``(batch, frames, width)`` block output, attached to the graph of ``encoder_input``.
        encoder_input: ``(batch, input_frames, input_width)``.
        lengths: ``(batch,)`` valid output frames.
        probes: see :func:`probed_frames` (``None``: every frame below the longest length).
    """
    batch, frames, width = output.shape
    if projections is None:
        directions = torch.eye(width)
    else:
        directions = torch.randn(projections, width, generator=torch.Generator().manual_seed(seed))
    directions = directions.to(device=output.device, dtype=output.dtype)
    count = directions.shape[0]
    # Cotangent (direction k, frame t): v_k at output frame t of every sequence at once; sequences
    # do not interact, so each one's gradient is its own vector-Jacobian product.
    if probes is None:
        probed = int(lengths.max())
        rows = torch.arange(probed).repeat(batch, 1)
    else:
        probed = max(len(p) for p in probes)
        # Rows past a sequence's own probe count repeat its last frame; they are cut afterwards.
        rows = torch.stack([torch.cat([p, p[-1:].expand(probed - len(p))]) for p in probes])
    cotangents = output.new_zeros(count, probed, batch, frames, width)
    row = torch.arange(probed)[:, None].expand(probed, batch)
    sequence = torch.arange(batch)[None, :].expand(probed, batch)
    cotangents[:, row, sequence, rows.t().to(output.device), :] = directions[:, None, None, :]
    squared, = batched_vjp(output, encoder_input, cotangents.flatten(0, 1), chunk_size,
                           max_chunk_size=256,
                           reduce=lambda gradient: gradient.pow(2).sum(-1))
    squared = squared.view(count, probed, batch, -1)
    energy = squared.sum(0) if projections is None else squared.mean(0)
    return energy.sqrt().permute(1, 0, 2).detach()
