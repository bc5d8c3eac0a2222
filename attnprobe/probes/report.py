"""``attnprobe.reversal_report``: one call that says whether a model's encoder reversed time, and
at which block, with the evidence of every probe that applies to the model's family.

The verdict and the block come from one rule (:mod:`attnprobe.probes.verdict`, README "Where
did it turn?"): the gradient maps decide when the decoder reads the encoder output in an order
(cross-attention monotone, forwards or backwards), because they show which content the output
uses; otherwise the frame mapping, which needs nothing but the encoder and so applies to every
family, trained or not. :attr:`ReversalReport.evidence` holds, per block, what every probe that
ran says (:mod:`attnprobe.probes.evidence`):

- frame mapping: which encoder-input frames each block's output depends on;
- gradient maps and cross-attention monotonicity (encoder-decoder models given labels) show the
  reversal from the decoder's side;
- self-attention diagonality shows the anti-diagonal attention of the block that turns;
- branch dominance shows which branch outgrew the residual stream there.

Usage::

    report = attnprobe.reversal_report(model, (features, feature_lengths, labels, label_lengths))
    print(report)                    # verdict, evidence, per-probe tables
    report.reversed_at               # e.g. 9, or None
    report.plot().savefig("reversal.png")
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from torch import nn

from attnprobe.adapters import resolve_adapter
from attnprobe.batch import BatchForm, as_speech_batch
from attnprobe.vjp import require_grad_mode

from .cross_attention import CrossAttentionMonotonicity
from .diagonality import DEFAULT_MAX_OFFSET, SelfAttentionDiagonality
from .dominance import BranchDominance
from .evidence import BlockEvidence, block_evidence, evidence_table
from .frame_mapping import FrameMapping, frame_mapping
from .gradient_maps import GradientMaps, gradient_maps
from .result import ProbeResult
from .streaming import streaming_probes
from .verdict import (
    DECIDED_BY_DECODER,
    DECIDED_BY_FRAME_MAPPING,
    REVERSAL_THRESHOLD,
    Localisation,
    combined_verdict,  # noqa: F401  (imported from here by callers of the earlier rule)
    localise,
    turning_block,
)

DEFAULT_MAX_FRAMES = 48
"""Output frames per sequence the report's frame mapping probes (evenly spaced)."""


@dataclass(repr=False)
class ReversalReport(ProbeResult):
    """The verdict and the evidence behind it.

    Attributes:
        family: the adapter family that ran the model.
        frame_mapping: decides the verdict unless the decoder reads the encoder output in an
            order; then the gradient maps decide (:attr:`decided_by`, :attr:`localisation`).
        gradient_maps / cross_attention: ``None`` without a decoder or without labels.
        diagonality / dominance: ``None`` where the adapter exposes no such sites.
        notes: what agrees, what does not, and what could not be measured (and why).
    """

    family: str
    frame_mapping: FrameMapping
    gradient_maps: GradientMaps | None = None
    cross_attention: CrossAttentionMonotonicity | None = None
    diagonality: SelfAttentionDiagonality | None = None
    dominance: BranchDominance | None = None
    notes: list[str] = field(default_factory=list)

    derived: ClassVar[tuple[str, ...]] = ("verdict", "reversed", "reversed_at", "decided_by",
                                          "decided_because", "evidence")

    @property
    def localisation(self) -> Localisation:
        """The rule's decision (:func:`attnprobe.probes.verdict.localise`)."""
        return localise(self.frame_mapping, self.gradient_maps, self.cross_attention)

    @property
    def decided_by(self) -> str:
        """``"frame mapping"``, or ``"gradient maps and cross-attention"`` when the decoder reads
        the encoder output in an order and its label evidence decides."""
        return self.localisation.decided_by

    @property
    def decided_because(self) -> str:
        """Why :attr:`decided_by` decided."""
        return self.localisation.reason

    @property
    def reversed_at(self) -> int | None:
        """Index of the encoder block where time turned (site ``encoder.<index>``, counted from
        0), or ``None``."""
        return self.localisation.reversed_at

    @property
    def evidence(self) -> list[BlockEvidence]:
        """Per encoder block, what every probe that ran says (:mod:`attnprobe.probes.evidence`)."""
        return block_evidence(self)

    @property
    def reversed(self) -> bool:
        return self.reversed_at is not None

    @property
    def verdict(self) -> str:
        """``"not reversed"`` or ``"reversed at block <k>"``."""
        return "not reversed" if self.reversed_at is None else f"reversed at block {self.reversed_at}"

    def summary(self) -> str:
        lines = [f"reversal report ({self.family}): {self.verdict.upper()}",
                 f"  decided by the {self.decided_by}: {self.decided_because}"]
        lines += [f"  - {note}" for note in self.notes]
        lines += [""] + evidence_table(self)
        for result in (self.frame_mapping, self.gradient_maps, self.cross_attention,
                       self.diagonality, self.dominance):
            if result is not None:
                lines += ["", result.summary()]
        return "\n".join(lines)


def reversal_report(model: nn.Module, batch: BatchForm, *,
                    projections: int | None = 4, chunk_size: int | None = None,
                    threshold: float = REVERSAL_THRESHOLD, max_offset: int = DEFAULT_MAX_OFFSET,
                    seed: int = 0, max_frames: int | None = DEFAULT_MAX_FRAMES,
                    with_gradient_maps: bool = True, adapter: Any = None,
                    runner: Any = None) -> ReversalReport:
    """Run every reversal probe that applies to ``model`` and combine them into one verdict.

    The model runs in eval mode (each submodule's training flag is restored afterwards): one
    streaming pass for the attention and dominance probes, one pass per encoder block for the
    frame mapping, and one teacher-forced pass for the gradient maps.

    Args:
        model: any model whose runner implements ``run`` (and ``label_log_probs`` for gradient
            maps).
        batch: :class:`SpeechBatch`, or ``(features, lengths)``, or ``(features, lengths, labels,
            label_lengths)``; labels enable the decoder probes of encoder-decoder models.
        projections: random feature directions per frame of the frame mapping (``None``: exact).
        chunk_size: vector-Jacobian products per backward pass; ``None`` searches for the
            fastest.
        threshold: |correlation| that counts as monotone or reversed
            (:data:`attnprobe.probes.result.REVERSAL_THRESHOLD`).
        max_offset: range of the self-attention offset histogram.
        seed: seed of the frame mapping's random directions.
        max_frames: output frames per sequence the frame mapping probes (evenly spaced; each costs
            ``projections`` backward passes); ``None`` probes every frame.
        with_gradient_maps: compute the gradient maps when the batch has labels and the model a
            decoder (one more batched backward); ``False`` decides by the frame mapping alone.
        adapter: a site map (class or instance) or adapter to use instead of the automatic choice.
        runner: a runner to use instead of the site map's (see :mod:`attnprobe.adapters.runner`).

    Raises:
        GradientUnavailableError: under ``torch.inference_mode()`` (the frame mapping needs
            gradients; ``torch.no_grad()`` is fine).
        CapabilityError: the adapter cannot run the model by itself.
        InputError: a sequence has fewer than 4 encoder frames (or labels).
    """
    require_grad_mode("reversal_report")
    batch = as_speech_batch(batch)
    adapter = resolve_adapter(model, adapter, runner)
    streamed = streaming_probes(model, batch, threshold=threshold, max_offset=max_offset,
                                adapter=adapter)
    mapping = frame_mapping(model, batch, projections=projections, chunk_size=chunk_size,
                            max_frames=max_frames, seed=seed, threshold=threshold, adapter=adapter)
    maps = None
    if with_gradient_maps and adapter.site_map.has_decoder and batch.labels is not None:
        maps = gradient_maps(model, batch, chunk_size=chunk_size, threshold=threshold,
                             adapter=adapter)
    report = ReversalReport(adapter.family, mapping, maps, streamed.cross_attention,
                            streamed.diagonality, streamed.dominance)
    report.notes = _evidence(report) + [f"no {name.replace('_', ' ')}: {reason}"
                                        for name, reason in streamed.unavailable.items()]
    return report


def _evidence(report: ReversalReport) -> list[str]:
    """One line per probe: what it says by the rule's steps 2 and 3 on its own scores, and
    whether that agrees with the verdict."""
    notes = []
    block = report.reversed_at
    decided_by = report.decided_by
    mapping = report.frame_mapping
    notes.append(f"frame mapping: {mapping.verdict}; last block {mapping.scores[-1]:+.2f} "
                 f"({_role(decided_by == DECIDED_BY_FRAME_MAPPING, mapping.reversed_at, block)})")
    if report.gradient_maps is not None:
        maps = report.gradient_maps
        layers, scores, input_score = maps.oriented_scores()
        turn = turning_block(scores, layers, maps.threshold, input_score)
        says = "not reversed" if turn is None else f"reversed at block {turn}"
        if decided_by == DECIDED_BY_DECODER:
            notes.append(f"gradient maps: {says}; G_0 {input_score:+.2f}, last block "
                         f"{scores[-1]:+.2f} (decides)")
        else:
            notes.append(f"gradient maps: would say {says}, but the decoder does not read the "
                         f"encoder output in an order (no evidence either way)")
    if report.cross_attention is not None:
        cross = report.cross_attention
        expected = "reversed" if block is not None else "monotone"
        agreement = "no evidence either way" if cross.verdict == "not monotone" else \
            ("agrees" if cross.verdict == expected else "disagrees")
        notes.append(f"cross-attention: {cross.verdict}, mean Spearman {cross.overall:+.2f} "
                     f"({agreement})")
    if report.diagonality is not None:
        layer = report.diagonality.reversed_at
        agreement = "" if layer is None or block is None else \
            (" (agrees)" if layer == block else " (another block)")
        notes.append("self-attention: no anti-diagonal layer" if layer is None else
                     f"self-attention: first anti-diagonal layer encoder.{layer}{agreement}")
    if report.dominance is not None and block is not None and block in report.dominance.layers:
        row = report.dominance.layers.index(block)
        ratios = report.dominance.ratio[row]
        largest = int(np.nanargmax(ratios))
        notes.append(f"dominance at encoder.{block}: {report.dominance.branches[largest]} / "
                     f"residual = {ratios[largest]:.2f}, cos(block input, output) = "
                     f"{report.dominance.mean_survival[row]:.2f}")
    return notes


def _role(decides: bool, says: int | None, verdict: int | None) -> str:
    if decides:
        return "decides"
    return "agrees" if says == verdict else "disagrees"
