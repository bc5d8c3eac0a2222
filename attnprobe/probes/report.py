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

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import nn

from attnprobe.adapters import resolve_adapter
from attnprobe.batch import BatchForm, as_speech_batch
from attnprobe.errors import CapabilityError, InputError
from attnprobe.vjp import require_grad_mode

from .cross_attention import CrossAttentionMonotonicity
from .diagonality import DEFAULT_MAX_OFFSET, SelfAttentionDiagonality
from .dominance import BranchDominance
from .frame_mapping import FrameMapping, frame_mapping
from .gradient_maps import GradientMaps, gradient_maps
from .result import ProbeResult
from .streaming import StreamingResults, streaming_probes
from .verdict import (
    DECIDED_BY_DECODER,
    DECIDED_BY_NOTHING,
    REVERSAL_THRESHOLD,
    combined_verdict,
)

DEFAULT_MAX_FRAMES = 48
"""Output frames per sequence the report's frame mapping probes (evenly spaced)."""


PROBE_NAMES = {"frame_mapping": "frame mapping", "gradient_maps": "gradient maps",
               "cross_attention": "cross-attention monotonicity",
               "diagonality": "self-attention diagonality", "dominance": "branch dominance"}
"""The report's probes, by field name."""

UNDETERMINED = "undetermined"


@dataclass(repr=False)
class ReversalReport(ProbeResult):
    """The verdict and the evidence behind it.

    Attributes:
        family: the adapter family that ran the model.
        frame_mapping: decides the verdict, unless the gradient maps and cross-attention agree
            on a reversal it does not see (:attr:`decided_by`); ``None`` where it could not run
            (the verdict is then the decoder probes' or undetermined).
        gradient_maps / cross_attention: ``None`` without a decoder or without labels.
        diagonality / dominance: ``None`` where the adapter exposes no such sites.
        notes: what agrees, what does not, and what could not be measured (and why).
        unavailable: per probe that did not run (field name), why not (also in ``notes``).
    """

    family: str
    frame_mapping: FrameMapping | None
    gradient_maps: GradientMaps | None = None
    cross_attention: CrossAttentionMonotonicity | None = None
    diagonality: SelfAttentionDiagonality | None = None
    dominance: BranchDominance | None = None
    notes: list[str] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)

    derived: ClassVar[tuple[str, ...]] = ("verdict", "reversed", "reversed_at", "decided_by",
                                          "ran")

    @property
    def ran(self) -> list[str]:
        """The probes that ran (field names), in report order."""
        return [name for name in PROBE_NAMES if getattr(self, name) is not None]

    @property
    def decided_by(self) -> str:
        """``"frame mapping"``, or ``"gradient maps and cross-attention"`` when those two agree on
        a reversal that the frame mapping does not see; ``"nothing"`` when neither could run."""
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
        """``"not reversed"``, ``"reversed at block <k>"``, or ``"undetermined"`` when no probe
        that decides could run (:attr:`unavailable` says why)."""
        if self.reversed_at is not None:
            return f"reversed at block {self.reversed_at}"
        return UNDETERMINED if self.decided_by == DECIDED_BY_NOTHING else "not reversed"

    def summary(self) -> str:
        lines = [f"reversal report ({self.family}): {self.verdict.upper()}"]
        lines += [f"  - {note}" for note in self.notes]
        lines.append(f"  probes run: {', '.join(PROBE_NAMES[name] for name in self.ran) or 'none'}")
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
    frame mapping, and one teacher-forced pass for the gradient maps. A probe the model, its
    runner or the batch cannot support does not fail the report: it is left out, and
    :attr:`ReversalReport.unavailable` says why.

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
        CapabilityError: no probe could run at all (the runner cannot run the model: pass
            ``runner=``).
        InputError: a sequence has fewer than 4 encoder frames.
    """
    require_grad_mode("reversal_report")
    batch = as_speech_batch(batch)
    adapter = resolve_adapter(model, adapter, runner, example=batch)
    unavailable: dict[str, str] = {}
    streamed = _attempt(lambda: streaming_probes(model, batch, threshold=threshold,
                                                 max_offset=max_offset, adapter=adapter),
                        "streaming", unavailable, inputs_too=True)
    if streamed is None and batch.labels is not None:
        # The labels may be what the cross-attention probe cannot use (too few): the encoder's
        # probes still run without them.
        reason = unavailable.pop("streaming")
        streamed = _attempt(lambda: streaming_probes(model, batch.without_labels(),
                                                     threshold=threshold, max_offset=max_offset,
                                                     adapter=adapter),
                            "streaming", unavailable, inputs_too=True)
        if streamed is not None:
            streamed.unavailable["cross_attention"] = reason
    mapping = _attempt(lambda: frame_mapping(model, batch, projections=projections,
                                             chunk_size=chunk_size, max_frames=max_frames,
                                             seed=seed, threshold=threshold, adapter=adapter),
                       "frame_mapping", unavailable)
    if mapping is None and streamed is None:
        raise CapabilityError(f"no reversal probe could run on {type(model).__name__}: "
                              f"{unavailable['frame_mapping']}")
    maps = None
    if not with_gradient_maps:
        unavailable["gradient_maps"] = "not asked for (with_gradient_maps=False)"
    elif not adapter.site_map.has_decoder:
        unavailable["gradient_maps"] = "the model has no attention decoder"
    elif batch.labels is None:
        unavailable["gradient_maps"] = "the batch has no labels to teacher-force the decoder with"
    else:
        maps = _attempt(lambda: gradient_maps(model, batch, chunk_size=chunk_size,
                                              threshold=threshold, adapter=adapter),
                        "gradient_maps", unavailable, inputs_too=True)
    if streamed is None:
        reason = unavailable.pop("streaming")
        streamed = StreamingResults(None, None, None, {name: reason for name in
                                                       ("cross_attention", "diagonality",
                                                        "dominance")})
    unavailable.update(streamed.unavailable)
    report = ReversalReport(adapter.family, mapping, maps, streamed.cross_attention,
                            streamed.diagonality, streamed.dominance)
    report.unavailable = {name: unavailable[name] for name in PROBE_NAMES if name in unavailable}
    report.notes = _evidence(report) + [f"no {PROBE_NAMES[name]}: {reason}"
                                        for name, reason in report.unavailable.items()]
    return report


def _attempt(probe: Callable[[], Any], name: str, unavailable: dict[str, str],
             inputs_too: bool = False) -> Any:
    """``probe()``, or ``None`` with the reason in ``unavailable[name]`` when the model or its
    runner cannot do it (and, for the probes that do not decide, when the batch does not fit)."""
    expected: tuple[type[Exception], ...] = (CapabilityError,)
    if inputs_too:
        expected += (InputError,)
    try:
        return probe()
    except expected as error:
        unavailable[name] = str(error)
        return None


def _evidence(report: ReversalReport) -> list[str]:
    """One line per probe that ran: what it says, and whether it agrees with the verdict."""
    notes = []
    block = report.reversed_at
    mapping = report.frame_mapping
    if mapping is not None:
        hidden = "" if report.decided_by != DECIDED_BY_DECODER else \
            " (disagrees: the residual path can hide a reversal from it; the verdict follows " \
            "the gradient maps and cross-attention)"
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
