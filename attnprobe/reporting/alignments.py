"""One utterance's alignment by any of the three methods, and its text in the output formats of
``attnprobe align``: a table, JSON, a Praat TextGrid or a CTM line per word.

- ``gradient`` (default): :func:`attnprobe.gradient_alignment`, for any model that can score
  labels (attention decoders and CTC heads);
- ``cross-attention``: Whisper's recipe, DTW over the alignment heads' cross-attention;
- ``ctc``: forced alignment of the CTC posteriors (``torchaudio.functional.forced_align``).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from attnprobe.alignment import (
    Alignment,
    AlignmentSettings,
    align_transcript,
    ctm_text,
    model_cross_attention_alignment,
    model_ctc_alignment,
    textgrid_text,
)
from attnprobe.audio import read_audio
from attnprobe.batch import SpeechBatch
from attnprobe.errors import CapabilityError, InputError
from attnprobe.jobs.items import InputItem
from attnprobe.loading import LoadedModel, Transcript

from .text import format_table
from .utterance import aligned_words, check_transcript_fits, errors_against_reference
from .warnings import answer_warnings

METHODS = ("gradient", "cross-attention", "ctc")
FORMATS = ("table", "json", "textgrid", "ctm")
SUFFIXES = {"table": ".txt", "json": ".json", "textgrid": ".TextGrid", "ctm": ".ctm"}

Aligner = Callable[[LoadedModel, SpeechBatch, Transcript, AlignmentSettings], Alignment]


def by_cross_attention(loaded: LoadedModel, batch: SpeechBatch, transcript: Transcript,
                       settings: AlignmentSettings) -> Alignment:
    """DTW over the cross-attention of the model's alignment heads (all heads of the upper half
    of the decoder when the model names none)."""
    try:
        return model_cross_attention_alignment(
            loaded.model, batch, transcript.tokens, alignment_heads=loaded.alignment_heads,
            word_style=loaded.word_style, adapter=loaded.adapter)
    except CapabilityError:
        alternatives = "gradient or ctc" if loaded.ctc_blank is not None else "gradient"
        raise CapabilityError(f"{loaded.name} has no cross-attention (no attention decoder); "
                              f"use --method {alternatives}") from None


def by_ctc(loaded: LoadedModel, batch: SpeechBatch, transcript: Transcript,
           settings: AlignmentSettings) -> Alignment:
    """CTC forced alignment of the transcript."""
    if loaded.ctc_blank is None:
        decoder = " or cross-attention" if loaded.adapter.site_map.has_decoder else ""
        raise CapabilityError(f"{loaded.name} has no CTC head; use --method gradient{decoder}")
    return model_ctc_alignment(loaded.model, batch, transcript.tokens, ctc_blank=loaded.ctc_blank,
                               word_style=loaded.word_style, adapter=loaded.adapter)


ALIGNERS: dict[str, Aligner] = {"gradient": aligned_words, "cross-attention": by_cross_attention,
                                "ctc": by_ctc}


def align_item(loaded: LoadedModel, item: InputItem, method: str = "gradient",
               settings: AlignmentSettings | None = None) -> tuple[Alignment, float]:
    """The alignment of one input by ``method`` and its audio's duration in seconds."""
    if item.text is None:
        raise InputError(f"no transcript for {item.audio}: give --text, a <name>.txt sidecar, or "
                         f"a text column in the manifest")
    audio = read_audio(item.audio).at_rate(loaded.sample_rate)
    if method == "gradient":
        # Any length, and the targets the model's settings ask for (Whisper: characters).
        alignment = align_transcript(loaded, audio.samples, item.text, settings)
        fits = loaded.max_seconds is None or audio.duration <= loaded.max_seconds
        # The transcript's likelihood needs one pass over the whole audio: only where it fits.
        batch = loaded.batch(audio.samples, loaded.transcript(item.text)) if fits else None
        alignment.warnings.extend(warning for warning in answer_warnings(loaded, audio, batch)
                                  if warning not in alignment.warnings)
        return alignment, audio.duration
    if loaded.max_seconds is not None and audio.duration > loaded.max_seconds:
        raise InputError(f"{item.audio} lasts {audio.duration:.1f} s but --method {method} "
                         f"reads one window of at most {loaded.max_seconds:g} s of {loaded.name}; "
                         f"use --method gradient (any length) or cut the audio")
    transcript = loaded.transcript(item.text)
    batch = loaded.batch(audio.samples, transcript)
    check_transcript_fits(loaded, batch, audio.duration)
    alignment = ALIGNERS[method](loaded, batch, transcript, settings)
    alignment.warnings.extend(warning for warning in answer_warnings(loaded, audio, batch)
                              if warning not in alignment.warnings)
    return alignment, audio.duration


def render(alignment: Alignment, item: InputItem, duration: float, output_format: str,
           model_name: str) -> str:
    """``alignment`` as text in ``output_format`` (one of :data:`FORMATS`)."""
    notes: list[str] = []
    errors = errors_against_reference(alignment, item, notes)
    if output_format == "json":
        document = {"id": item.id, "audio": str(item.audio), "model": model_name,
                    "text": item.text, **alignment.to_dict(),
                    "timestamp_errors": None if errors is None else errors.to_dict()}
        return json.dumps(document, indent=1) + "\n"
    if output_format == "textgrid":
        return textgrid_text(alignment, max(duration, alignment.duration_s))
    if output_format == "ctm":
        return ctm_text("_".join(item.id.split()), alignment)
    header = ["word", "start (s)", "end (s)", "labels"]
    rows = [[word.text, f"{word.start_s:.3f}", f"{word.end_s:.3f}",
             " ".join(label.text for label in alignment.labels[word.label_start:word.label_end])]
            for word in alignment.words]
    lines = [f"{item.id}: {alignment.method}, {len(alignment.words)} words in {duration:.2f} s "
             f"({model_name})", format_table(header, rows)]
    if errors is not None:
        lines.append(errors.summary())
    lines += [f"note: {note}" for note in notes]
    lines += [f"warning: {warning}" for warning in alignment.warnings]
    return "\n".join(lines) + "\n"
