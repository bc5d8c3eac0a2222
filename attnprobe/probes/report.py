"""``attnprobe.reversal_report``: one call that says whether a model's encoder reversed time, and
at which block, with the evidence of every probe that applies to the model's family.

The verdict comes from the frame mapping (:mod:`attnprobe.probes.frame_mapping`): it needs nothing
but the encoder, so it applies to every family, trained or not. One exception: the frame mapping
follows each output frame's *largest* input derivative, which the residual path can keep at home
while the content the decoder reads has moved (seen on the reproduction's induced reversals,
``docs/reproduction.md``). When the frame mapping sees no reversal but the decoder's two probes
both do (gradient maps of an aligned decoder turn at block ``k``, and the cross-attention runs
backwards), the verdict is theirs. The other probes are evidence:

- gradient maps and cross-attention monotonicity (encoder-decoder models given labels) show the
  reversal from the decoder's side; they only carry a verdict once the decoder aligns labels with
  the audio (a trained model);
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

from torch import nn

from attnprobe.adapters import resolve_adapter
from attnprobe.batch import BatchForm, as_speech_batch
from attnprobe.vjp import require_grad_mode

from .cross_attention import CrossAttentionMonotonicity
from .diagonality import DEFAULT_MAX_OFFSET, SelfAttentionDiagonality
from .dominance import BranchDominance
from .frame_mapping import FrameMapping, frame_mapping
from .gradient_maps import GradientMaps, gradient_maps
from .result import ProbeResult
from .streaming import streaming_probes
from .verdict import DECIDED_BY_FRAME_MAPPING, REVERSAL_THRESHOLD, combined_verdict

DEFAULT_MAX_FRAMES = 48
"""Output frames per sequence the report's frame mapping probes (evenly spaced)."""


@dataclass(repr=False)
class ReversalReport(ProbeResult):
    """The verdict and the evidence behind it.

    Attributes:
        family: the adapter family that ran the model.
        frame_mapping: decides the verdict, unless the gradient maps and cross-attention agree
            on a reversal it does not see (:attr:`decided_by`).
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

    derived: ClassVar[tuple[str, ...]] = ("verdict", "reversed", "reversed_at", "decided_by")

    @property
    def decided_by(self) -> str:
        """``"frame mapping"``, or ``"gradient maps and cross-attention"`` when those two agree on
        a reversal that the frame mapping does not see."""
        return combined_verdict(self.frame_mapping, self.gradient_maps, self.cross_attention)[1]

    @property
    def reversed_at(self) -> int | None:
        """Index of the encoder block whose output is the first reversed one (site
        ``encoder.<index>``, counted from 0), or ``None``."""
        return combined_verdict(self.frame_mapping, self.gradient_maps, self.cross_attention)[0]

    @property
    def reversed(self) -> bool:
        return self.reversed_at is not None

    @property
    def verdict(self) -> str:
        """``"not reversed"`` or ``"reversed at block <k>"``."""
        return "not reversed" if self.reversed_at is None else f"reversed at block {self.reversed_at}"

    def summary(self) -> str:
        lines = [f"reversal report ({self.family}): {self.verdict.upper()}"]
        lines += [f"  - {note}" for note in self.notes]
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
    """One line per probe: what it says, and whether it agrees with the frame mapping."""
    notes = []
    block = report.reversed_at
    mapping = report.frame_mapping
    hidden = "" if report.decided_by == DECIDED_BY_FRAME_MAPPING else \
        " (disagrees: the residual path can hide a reversal from it; the verdict follows the " \
        "gradient maps and cross-attention)"
    notes.append(f"frame mapping: {mapping.verdict}; reversal score of the last block "
                 f"{mapping.scores[-1]:+.2f}{hidden}")
    if report.gradient_maps is not None:
        maps = report.gradient_maps
        agreement = ("agrees" if maps.reversed_at == block else "disagrees") if maps.aligned \
            else "no evidence either way"
        notes.append(f"gradient maps: {maps.verdict} ({agreement})")
    if report.cross_attention is not None:
        cross = report.cross_attention
        expected = "reversed" if block is not None else "monotone"
        agreement = "no evidence either way" if cross.verdict == "not monotone" else \
            ("agrees" if cross.verdict == expected else "disagrees")
        notes.append(f"cross-attention: {cross.verdict}, mean Spearman {cross.overall:+.2f} "
                     f"({agreement})")
    if report.diagonality is not None:
        layer = report.diagonality.reversed_at
        notes.append("self-attention: no anti-diagonal layer" if layer is None else
                     f"self-attention: first anti-diagonal layer encoder.{layer}")
    if report.dominance is not None and block is not None and block in report.dominance.layers:
        row = report.dominance.layers.index(block)
        ratios = report.dominance.ratio[row]
        largest = int(ratios.argmax())
        notes.append(f"dominance at encoder.{block}: {report.dominance.branches[largest]} / "
                     f"residual = {ratios[largest]:.2f}, cos(block input, output) = "
                     f"{report.dominance.mean_survival[row]:.2f}")
    return notes
