"""One utterance through one model: the reversal report, a gradient alignment, the time-stamp
error against reference word times. What ``attnprobe report`` and ``attnprobe demo`` print and
draw comes from here (:mod:`.text`, :mod:`.figures`, :mod:`.html`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import torch

from attnprobe.alignment import (
    DEFAULT_SETTINGS,
    Alignment,
    AlignmentSettings,
    TimestampErrors,
    gradient_alignment,
    settings_for,
    timestamp_errors,
)
from attnprobe.alignment.transcript import LABELS_PER_BACKWARD
from attnprobe.audio import Audio, read_audio
from attnprobe.batch import SpeechBatch
from attnprobe.errors import InputError
from attnprobe.jobs.items import InputItem
from attnprobe.loading import LoadedModel, Transcript
from attnprobe.probes import (
    MINIMUM_POSITIONS,
    BranchDominance,
    CrossAttentionMonotonicity,
    ReversalReport,
    SelfAttentionDiagonality,
    StreamingResults,
    reversal_report,
    streaming_probes,
)
from attnprobe.probes.report import DEFAULT_MAX_FRAMES
from attnprobe.trace import trace

from .warnings import answer_warnings

GIB = 2**30


@dataclass(frozen=True)
class ReportOptions:
    """How thoroughly to probe.

    Attributes:
        projections: random directions per frame of the frame mapping (``None``: exact).
        chunk_size: vector-Jacobian products per backward pass.
        max_frames: encoder output frames per utterance the frame mapping probes (``None``: all).
        memory_limit_bytes: refuse a reversal report whose frame mapping would need more.
        align: also compute a gradient alignment (needs a transcript).
        evidence_without_verdict: when the report is refused, still run the cheap attention and
            dominance probes (one forward pass) for their evidence.
    """

    projections: int | None = 4
    chunk_size: int = 256
    max_frames: int | None = DEFAULT_MAX_FRAMES
    memory_limit_bytes: int = 4 * GIB
    align: bool = True
    evidence_without_verdict: bool = True


@dataclass
class UtteranceResult:
    """Everything measured on one utterance.

    Attributes:
        item: the input it came from.
        model: the loaded model.
        audio: the audio at the model's rate.
        transcript: the labels used, or ``None``.
        transcript_source: ``"given"`` or ``"the model's own transcription"``.
        report: the reversal report, or ``None`` (see ``report_skipped``).
        report_skipped: why there is no report.
        evidence: without a report, the attention and dominance probes alone (or ``None``).
        alignment: the gradient alignment, or ``None``.
        errors: time-stamp errors against ``item.reference``, or ``None``.
        notes: what else the reader should know.
        warnings: why the verdict and the times may mean nothing (no speech, an unlikely
            transcript; :mod:`.warnings`).
        seconds: wall-clock seconds per step.
    """

    item: InputItem
    model: LoadedModel
    audio: Audio
    transcript: Transcript | None
    transcript_source: str
    report: ReversalReport | None = None
    report_skipped: str | None = None
    evidence: StreamingResults | None = None
    alignment: Alignment | None = None
    errors: TimestampErrors | None = None
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return self.report.verdict if self.report is not None else "no verdict"

    @property
    def cross_attention(self) -> CrossAttentionMonotonicity | None:
        source = self.report or self.evidence
        return None if source is None else source.cross_attention

    @property
    def diagonality(self) -> SelfAttentionDiagonality | None:
        source = self.report or self.evidence
        return None if source is None else source.diagonality

    @property
    def dominance(self) -> BranchDominance | None:
        source = self.report or self.evidence
        return None if source is None else source.dominance

    def evidence_lines(self) -> list[str]:
        """One line per probe: the report's own notes, or the headline of each probe that ran
        without a verdict."""
        if self.report is not None:
            return list(self.report.notes)
        return [result.summary().splitlines()[0] for result in
                (self.cross_attention, self.diagonality, self.dominance) if result is not None]

    def to_dict(self, include_seconds: bool = True) -> dict[str, Any]:
        """Plain JSON values: the report's numbers, the alignment, the errors; wall-clock seconds
        only with ``include_seconds`` (files written by a job leave them out, so that the same
        input always gives the same bytes)."""
        document = {
            "id": self.item.id,
            "audio": str(self.item.audio),
            "duration_s": self.audio.duration,
            "model": self.model.name,
            "family": self.model.family,
            "trained": self.model.trained,
            "text": None if self.transcript is None else self.transcript.text,
            "text_source": self.transcript_source,
            "verdict": self.verdict,
            "reversed_at": None if self.report is None else self.report.reversed_at,
            "report": None if self.report is None else self.report.to_dict(),
            "report_skipped": self.report_skipped,
            "evidence": None if self.evidence is None else {
                name: None if result is None else result.to_dict() for name, result in
                (("cross_attention", self.evidence.cross_attention),
                 ("diagonality", self.evidence.diagonality),
                 ("dominance", self.evidence.dominance))},
            "alignment": None if self.alignment is None else self.alignment.to_dict(),
            "reference_words": None if self.item.reference is None else
            [{"word": word, "start_s": start, "end_s": end}
             for word, start, end in self.item.reference],
            "timestamp_errors": None if self.errors is None else self.errors.to_dict(),
            "notes": self.notes,
            "warnings": self.warnings,
        }
        if include_seconds:
            document["seconds"] = self.seconds
        return document


def analyse(loaded: LoadedModel, item: InputItem, options: ReportOptions,
            audio: Audio | None = None) -> UtteranceResult:
    """Probe ``item`` with ``loaded``: reversal report, then (with a transcript) the gradient
    alignment and its error against the item's reference words.

    Raises:
        InputError / AttnprobeError: unreadable audio, unusable text, a model that cannot run.
    """
    audio = (audio or read_audio(item.audio)).at_rate(loaded.sample_rate)
    result = UtteranceResult(item, loaded, audio, None, "given", notes=list(loaded.notes))
    if item.text is not None:
        result.transcript = loaded.transcript(item.text)
    elif loaded.transcriber is not None and loaded.adapter.site_map.has_decoder:
        started = time.perf_counter()
        spoken = loaded.transcribe(audio.samples)
        result.seconds["transcribe"] = time.perf_counter() - started
        if spoken and spoken.strip():
            result.transcript = loaded.transcript(spoken)
            result.transcript_source = "the model's own transcription"
        else:
            result.notes.append("the model transcribed nothing, so the decoder probes did not run")
    batch = loaded.batch(audio.samples, result.transcript)
    check_transcript_fits(loaded, batch, audio.duration)
    result.warnings = answer_warnings(loaded, audio, batch)
    labels = 0 if result.transcript is None else len(result.transcript.ids)
    if loaded.adapter.site_map.has_decoder and 0 < labels < MINIMUM_POSITIONS:
        raise InputError(
            f"the transcript has {labels} labels; the decoder probes rank label positions and "
            f"need at least {MINIMUM_POSITIONS}: give the whole transcript of the audio")
    shape = encoder_shape(loaded, batch)
    frames = shape.frames
    chunk_size = fitting_chunk_size(shape, options)
    if chunk_size is None:
        needed = frame_mapping_bytes(shape, replace(options, chunk_size=1))
        result.report_skipped = (
            f"the frame mapping would need about {needed / GIB:.1f} GiB (limit "
            f"{options.memory_limit_bytes / GIB:.1f} GiB) to probe {frames} encoder frames one "
            f"by one ({frames * encoder_frame_seconds(loaded):.0f} s of input, padding "
            f"included); lower --projections or raise --memory-limit")
        if options.evidence_without_verdict:
            started = time.perf_counter()
            result.evidence = streaming_probes(loaded.model, batch, adapter=loaded.adapter)
            result.seconds["attention and dominance probes"] = time.perf_counter() - started
    else:
        if chunk_size < options.chunk_size:
            result.notes.append(
                f"frame mapping in chunks of {chunk_size} backward directions (not "
                f"{options.chunk_size}) to stay within the {options.memory_limit_bytes / GIB:.1f} "
                f"GiB memory limit at {frames} encoder frames")
        started = time.perf_counter()
        result.report = reversal_report(loaded.model, batch, projections=options.projections,
                                        chunk_size=chunk_size, max_frames=options.max_frames,
                                        adapter=loaded.adapter)
        result.seconds["reversal report"] = time.perf_counter() - started
    if options.align and result.transcript is not None:
        started = time.perf_counter()
        result.alignment = aligned_words(loaded, batch, result.transcript)
        result.alignment.warnings.extend(result.warnings)
        result.seconds["gradient alignment"] = time.perf_counter() - started
        result.errors = errors_against_reference(result.alignment, item, result.notes)
    return result


def aligned_words(loaded: LoadedModel, batch: SpeechBatch, transcript: Transcript,
                  settings: AlignmentSettings | None = None) -> Alignment:
    """The gradient alignment of one utterance, with the model family's settings by default
    (Whisper: the transcript spelled as characters), :data:`LABELS_PER_BACKWARD` labels per
    pass."""
    settings = settings or settings_for(loaded.family)
    if settings.targets == "characters" and loaded.tokenizer is not None:
        transcript = loaded.spelled_transcript(transcript.text)
        batch = SpeechBatch(batch.inputs, batch.input_lengths, torch.tensor([transcript.ids]),
                            torch.tensor([len(transcript.ids)]))
    (alignment,) = gradient_alignment(loaded.model, batch, [transcript.tokens], settings=settings,
                                      ctc_blank=loaded.ctc_blank, word_style=loaded.word_style,
                                      adapter=loaded.adapter, chunk_size=LABELS_PER_BACKWARD)
    return alignment


def check_transcript_fits(loaded: LoadedModel, batch: Any, duration: float) -> None:
    """Raise :class:`InputError` when the transcript has more labels than the gradient
    alignment has frames to give them (each label needs a frame of its own)."""
    if batch.label_lengths is None:
        return
    labels = int(batch.label_lengths[0])
    frames = int(batch.input_lengths[0])
    runner = loaded.adapter.runner
    seconds = runner.frame_shift_seconds
    if DEFAULT_SETTINGS.scored_input(seconds) == "encoder_input":
        frames //= runner.subsampling
        seconds *= runner.subsampling
    if labels > frames:
        raise InputError(
            f"the transcript has {labels} labels but the {duration:.2f} s of audio give only "
            f"{frames} frames of {seconds * 1000:g} ms, and every label needs one; check that "
            f"the text belongs to this audio")


def errors_against_reference(alignment: Alignment, item: InputItem,
                             notes: list[str]) -> TimestampErrors | None:
    """TSE of ``alignment`` against ``item.reference``; ``None`` (with a note) when there is no
    reference or its words differ from the aligned ones."""
    if item.reference is None:
        return None
    try:
        return timestamp_errors(alignment.words, list(item.reference))
    except ValueError as error:
        notes.append(f"no time-stamp error: {error}")
        return None


class EncoderShape(NamedTuple):
    """What the frame mapping's memory depends on: encoder frames, width, blocks and the largest
    number of self-attention heads of a block (1 without self-attention sites)."""

    frames: int
    width: int
    blocks: int
    heads: int = 1


GRADIENT_SLACK = 1.5
"""Margin on one direction's backward buffers: the allocator rounds up and keeps freed blocks
(measured against peak resident memory by ``tests/test_memory_limit.py``)."""


def frame_mapping_bytes(shape: EncoderShape, options: ReportOptions) -> int:
    """Memory of the report's frame mapping on one utterance, in float32: the gradient directions
    of every probed encoder frame, ``(directions, probed, frames, width)``, plus what one chunk
    of directions holds in its batched backward: per direction and block the gradients of the
    attention probabilities, ``heads x frames^2``, and of a few hidden states,
    ``2 x frames x width``."""
    frames, width, blocks, heads = shape
    directions = width if options.projections is None else options.projections
    probed = frames if options.max_frames is None else min(frames, options.max_frames)
    chunk = min(options.chunk_size or 256, directions * probed)
    per_direction = blocks * (heads * frames * frames + 2 * frames * width)
    return int(4 * (directions * probed * frames * width
                    + GRADIENT_SLACK * chunk * per_direction))


def fitting_chunk_size(shape: EncoderShape, options: ReportOptions) -> int | None:
    """The largest chunk, at most ``options.chunk_size``, whose frame mapping fits the memory
    limit (:func:`frame_mapping_bytes`); ``None`` when not even one direction at a time fits."""
    chunk = options.chunk_size
    while chunk >= 1:
        if frame_mapping_bytes(shape, replace(options, chunk_size=chunk)) \
                <= options.memory_limit_bytes:
            return chunk
        chunk //= 2
    return None


def encoder_shape(loaded: LoadedModel, batch: Any) -> EncoderShape:
    """The :class:`EncoderShape` of the model on ``batch``, from one forward pass."""
    site_map = loaded.adapter.site_map
    blocks = site_map.encoder_layers
    if not blocks:
        raise InputError(f"the {loaded.family} adapter exposes no encoder blocks, so there is no "
                         f"reversal to probe")
    last = f"encoder.{blocks[-1]}"
    attention = f"{last}.self_attn"
    sites = [last, attention] if site_map.binding(attention) is not None else [last]
    with torch.no_grad(), trace(loaded.model, sites, capture={"output", "attention"},
                                adapter=site_map) as traced:
        loaded.adapter.runner.run(SpeechBatch(batch.inputs, batch.input_lengths))
    output = traced[last].output
    heads = traced[attention].attention.shape[1] if attention in traced else 1
    return EncoderShape(int(output.shape[1]), int(output.shape[2]), len(blocks), int(heads))


def encoder_frame_seconds(loaded: LoadedModel) -> float:
    """Seconds per encoder frame: the feature shift times the frontend's subsampling."""
    runner = loaded.adapter.runner
    return runner.frame_shift_seconds * runner.subsampling


def valid_encoder_frames(result: UtteranceResult) -> int:
    """Encoder frames that cover the audio (Whisper pads every input to 30 s)."""
    return max(1, math.ceil(result.audio.duration / encoder_frame_seconds(result.model)))
