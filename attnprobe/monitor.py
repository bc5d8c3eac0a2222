"""``attnprobe.FlipMonitor``: watch a training run for the encoder reversing time.

Schmitt et al. (ICASSP 2025) saw the flip appear early in training and then stay. The monitor runs
the reversal probes on a small fixed probe batch every ``every`` steps of a plain PyTorch loop,
keeps a history of per-block reversal scores and branch-dominance ratios, and calls ``on_flip``
the first time the encoder output is reversed::

    monitor = attnprobe.FlipMonitor(model, (features, lengths, labels, label_lengths), every=100,
                                    log_path="monitor.jsonl")
    for step, batch in enumerate(batches, start=1):
        loss = model.loss(*batch)[0]
        optimizer.zero_grad(); loss.backward(); optimizer.step()
        monitor.step(step)                 # probes when step % every == 0

Each probe is one :func:`attnprobe.reversal_report` (so the monitor and the report decide by the
same rule), in eval mode (every submodule's train/eval flag is restored):

- the frame mapping (:func:`attnprobe.probes.frame_mapping`): per encoder block, the Spearman
  correlation of each output frame with the input frame it depends on most, +1 time-preserving,
  -1 reversed. It localises the block and decides the flip; it needs gradients (one batched
  backward per block, with respect to the probe batch's inputs only: parameter ``.grad`` is never
  touched);
- under ``torch.no_grad`` in one streaming pass: branch dominance (branch / residual norm per block),
  self-attention diagonality per layer and, when the probe batch has labels and the model a decoder,
  cross-attention monotonicity;
- with labels and a decoder, the gradient maps (:func:`attnprobe.probes.gradient_maps`, one more
  batched backward): where the frame mapping sees no reversal while the maps of an aligned decoder
  turn at a block and its cross-attention runs backwards, those decide, as in
  the report (:func:`attnprobe.probes.verdict.combined_verdict`).

Probing draws no random numbers from the global generators and updates no batch-norm statistics,
so a run with a monitor trains exactly as the same run without one.

Under DDP (``torch.distributed`` initialised, more than one rank), call ``step`` on every rank, as
the framework callbacks do: rank 0 probes its own copy of the model (the replicas are identical)
while the other ranks wait, then every rank receives the record, so ``history`` and ``flip`` agree
everywhere; only rank 0 writes ``log_path`` and calls ``on_flip``, so the verdict is logged once.
The exchange runs on a gloo group of its own with a timeout (``timeout_s``): no rank waits forever
for another, and a probe that fails on rank 0 fails on every rank with its reason. The probe
differentiates with respect to the probe batch only and calls the inner model, never the DDP
wrapper, so DDP's gradient synchronisation never sees it. ``distributed=False`` probes on whichever
rank calls ``step``, alone.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from .adapters import resolve_adapter
from .batch import BatchForm, SpeechBatch, as_speech_batch
from .probes.report import reversal_report
from .probes.result import to_json
from .probes.verdict import DECIDED_BY_FRAME_MAPPING, REVERSAL_THRESHOLD


class EncoderFlipWarning(UserWarning):
    """Issued by :class:`FlipMonitor`'s default ``on_flip``: the encoder reversed time."""


@dataclass
class MonitorRecord:
    """What one probe measured.

    Attributes:
        step: the training step it was taken at.
        reversal_scores: per encoder block, the frame-mapping reversal score in [-1, 1].
        reversed_at: the reversed block by the frame mapping (first block of the final run of
            reversed blocks) or, where :attr:`decided_by` says so, by the gradient maps; ``None``
            when not reversed.
        dominance_branches: branch names, in block order (``ffn1``, ``self_attn``, ``conv``, ``ffn2``).
        dominance_ratio: ``(blocks, branches)`` branch output norm / residual norm; empty when the
            adapter exposes no branch sites.
        block_survival: per block, cosine similarity of block input and output.
        self_attention_diagonality: per self-attention layer, diagonal minus anti-diagonal mass
            averaged over heads; ``None`` when no attention was captured (e.g. self-attention off).
        cross_attention_monotonicity: mean Spearman of label index vs attended frame, or ``None``.
        seconds: wall-clock time the probe took.
        gradient_map_scores: monotonicity of ``G_0`` (encoder input) and ``G_i`` per block, or
            ``None`` when not measured.
        decided_by: ``"frame mapping"`` or ``"gradient maps and cross-attention"``.
    """

    step: int
    reversal_scores: list[float]
    reversed_at: int | None
    dominance_branches: list[str]
    dominance_ratio: list[list[float]]
    block_survival: list[float]
    self_attention_diagonality: list[float] | None
    cross_attention_monotonicity: float | None
    seconds: float
    gradient_map_scores: list[float] | None = None
    decided_by: str = DECIDED_BY_FRAME_MAPPING

    @property
    def reversed(self) -> bool:
        return self.reversed_at is not None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values; NaN becomes ``None``."""
        return to_json(asdict(self))


@dataclass
class FlipEvent:
    """The first probe at which the encoder output was reversed.

    Attributes:
        step: the training step of that probe.
        reversed_at: the encoder block where time turned (site ``encoder.<reversed_at>``).
        record: everything that probe measured.
    """

    step: int
    reversed_at: int
    record: MonitorRecord

    def message(self) -> str:
        scores = " ".join(f"{score:+.2f}" for score in self.record.reversal_scores)
        return (f"the encoder reversed time at block {self.reversed_at} "
                f"(encoder.{self.reversed_at}), first seen "
                f"at step {self.step}; per-block reversal scores {scores}. Mitigations from the "
                f"paper: auxiliary CTC on intermediate blocks, self-attention off for the first "
                f"steps, hard centre cross-attention at the start")


def warn_flip(event: FlipEvent) -> None:
    """The default ``on_flip``: an :class:`EncoderFlipWarning` naming the block."""
    warnings.warn(event.message(), EncoderFlipWarning, stacklevel=3)


class FlipMonitor:
    """Runs the reversal probes every ``every`` steps and reports the first flip.

    Args:
        model: any model with an attnprobe adapter that can ``run`` it (attnprobe's Conformer AED,
            the Hugging Face and torchaudio families).
        probe_batch: a small fixed batch, :class:`attnprobe.SpeechBatch` or ``(features, lengths)``
            or ``(features, lengths, labels, label_lengths)``; a few utterances of at least 3
            encoder frames each. It is moved to the model's device.
        every: probe when ``step % every == 0``.
        on_flip: called with a :class:`FlipEvent` the first time the encoder is reversed, and never
            again; ``None`` issues an :class:`EncoderFlipWarning`.
        log_path: append every :class:`MonitorRecord` as one JSON line here.
        projections: random directions per frame of the frame mapping (``None``: exact, slower).
        max_frames: output frames per sequence the frame mapping probes, evenly spaced (``None``:
            all); the probe's cost grows with ``projections x max_frames``.
        threshold: score at or below ``-threshold`` counts as reversed.
        with_gradient_maps: also compute the gradient maps when the probe batch has labels and
            the model a decoder (one more batched backward: a third more per probe at
            ``projections=1``, ``benchmarks/monitor_overhead.py``);
            ``False`` decides by the frame mapping alone.
        adapter: a site map (class or instance) or adapter to use instead of the automatic choice.
        runner: a runner to use instead of the site map's (see :mod:`attnprobe.adapters.runner`).
        distributed: share rank 0's probe with every rank of an initialised process group
            (``None``: whenever there is one with several ranks; ``False``: probe locally).
        timeout_s: how long a rank waits for rank 0's probe before raising.

    Attributes:
        history: every :class:`MonitorRecord`, oldest first.
        flip: the :class:`FlipEvent`, once there is one.
    """

    def __init__(self, model: nn.Module, probe_batch: BatchForm, every: int = 100,
                 on_flip: Callable[[FlipEvent], Any] | None = None, *,
                 log_path: str | Path | None = None, projections: int | None = 4,
                 max_frames: int | None = 48, threshold: float = REVERSAL_THRESHOLD,
                 with_gradient_maps: bool = True, adapter: Any = None,
                 runner: Any = None, distributed: bool | None = None,
                 timeout_s: float = 1800.0) -> None:
        if every < 1:
            raise ValueError(f"every must be a positive number of steps, got {every}")
        self.model = model
        self.probe_batch = _to_device(as_speech_batch(probe_batch), model)
        self.every = every
        self.on_flip = on_flip if on_flip is not None else warn_flip
        self.log_path = Path(log_path) if log_path is not None else None
        self.projections = projections
        self.max_frames = max_frames
        self.threshold = threshold
        self.adapter = resolve_adapter(model, adapter, runner, example=self.probe_batch)
        self.uses_gradient_maps = (with_gradient_maps and self.adapter.site_map.has_decoder
                                   and self.probe_batch.labels is not None)
        self.history: list[MonitorRecord] = []
        self.flip: FlipEvent | None = None
        self.distributed = distributed
        self.timeout_s = timeout_s
        self._exchange: Any = None
        if _sharing_ranks(distributed) is not None:
            self._exchange_group()

    def step(self, step: int) -> MonitorRecord | None:
        """Probe if ``step`` is a multiple of ``every`` and was not just probed; returns the
        record, or ``None``.

        Call it after the optimiser step, not between a forward pass and its backward. Repeated
        calls with the same step (gradient accumulation) probe once.
        """
        if step % self.every or (self.history and self.history[-1].step == step):
            return None
        return self.probe(step)

    __call__ = step

    def probe(self, step: int) -> MonitorRecord:
        """Probe now, whatever the step; log it and report a first flip (under DDP: rank 0 probes,
        every rank gets the record)."""
        ranks = _sharing_ranks(self.distributed)
        if ranks is None:
            record = self.measure(step)
            self._accept(record, speaks=True)
            return record
        rank, _ = ranks
        payload: tuple[str, Any] | None = None
        failure: BaseException | None = None
        if rank == 0:
            try:
                payload = ("record", self.measure(step))
            except Exception as error:  # noqa: BLE001 - the other ranks must hear of it too
                failure = error
                payload = ("error", f"{type(error).__name__}: {error}")
        kind, value = self._share(payload, step)
        if kind == "error":
            if failure is not None:
                raise failure
            raise RuntimeError(f"rank 0's FlipMonitor probe at step {step} failed: {value}")
        self._accept(value, speaks=rank == 0)
        return value

    def measure(self, step: int) -> MonitorRecord:
        """Run the probes now and return what they measured (nothing is logged or kept)."""
        started = time.perf_counter()
        report = reversal_report(self.model, self.probe_batch, projections=self.projections,
                                 threshold=self.threshold, max_frames=self.max_frames,
                                 with_gradient_maps=self.uses_gradient_maps,
                                 adapter=self.adapter)
        dominance = report.dominance
        diagonality = report.diagonality
        cross = report.cross_attention
        maps = report.gradient_maps
        return MonitorRecord(
            step=int(step),
            reversal_scores=[float(score) for score in report.frame_mapping.scores],
            reversed_at=report.reversed_at,
            dominance_branches=list(dominance.branches) if dominance is not None else [],
            dominance_ratio=_nested_floats(dominance.ratio) if dominance is not None else [],
            block_survival=_nested_floats(dominance.mean_survival) if dominance is not None else [],
            self_attention_diagonality=(_nested_floats(np.nanmean(diagonality.scores, axis=-1))
                                        if diagonality is not None else None),
            cross_attention_monotonicity=float(cross.overall) if cross is not None else None,
            seconds=time.perf_counter() - started,
            gradient_map_scores=_nested_floats(maps.scores) if maps is not None else None,
            decided_by=report.decided_by,
        )

    def _accept(self, record: MonitorRecord, speaks: bool) -> None:
        """Keep ``record``; where this process ``speaks``, log it and report a first flip."""
        self.history.append(record)
        if speaks and self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("a") as log:
                log.write(json.dumps(record.to_dict()) + "\n")
        if self.flip is None and record.reversed_at is not None:
            self.flip = FlipEvent(record.step, record.reversed_at, record)
            if speaks:
                self.on_flip(self.flip)

    def _share(self, payload: tuple[str, Any] | None, step: int) -> tuple[str, Any]:
        """Rank 0's ``payload``, on every rank, through the monitor's own gloo group."""
        import torch.distributed as dist

        box = [payload]
        try:
            dist.broadcast_object_list(box, src=0, group=self._exchange_group())
        except RuntimeError as error:
            raise RuntimeError(f"FlipMonitor on rank {dist.get_rank()} waited in vain for rank "
                               f"0's probe at step {step} (timeout {self.timeout_s:g} s): call "
                               f"monitor.step on every rank, or pass distributed=False; "
                               f"{str(error).splitlines()[0]}") from error
        assert box[0] is not None
        return box[0]

    def _exchange_group(self) -> Any:
        """The monitor's gloo group (creating it is collective: every rank builds its monitor, or,
        where the process group starts later, as in Lightning, reaches its first probe, at the
        same point)."""
        if self._exchange is None:
            import torch.distributed as dist

            self._exchange = dist.new_group(backend="gloo",
                                            timeout=timedelta(seconds=self.timeout_s))
        return self._exchange


def _sharing_ranks(distributed: bool | None) -> tuple[int, int] | None:
    """``(rank, world size)`` when probes are shared between ranks, else ``None``."""
    if distributed is False:
        return None
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        if distributed:
            raise RuntimeError("FlipMonitor(distributed=True) needs an initialised process group "
                               "with at least two ranks (torch.distributed.init_process_group)")
        return None
    return dist.get_rank(), dist.get_world_size()


def _to_device(batch: SpeechBatch, model: nn.Module) -> SpeechBatch:
    parameter = next(model.parameters(), None)
    if parameter is None:
        return batch
    device = parameter.device
    labels = batch.labels.to(device) if batch.labels is not None else None
    label_lengths = batch.label_lengths.to(device) if batch.label_lengths is not None else None
    return SpeechBatch(batch.inputs.to(device), batch.input_lengths.to(device), labels, label_lengths)


def _nested_floats(values: Any) -> Any:
    """An array as nested lists of Python floats."""
    return np.asarray(values, dtype=np.float64).tolist()
