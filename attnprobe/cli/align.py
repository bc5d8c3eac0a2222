"""``attnprobe align``: word and label times of a transcript in its audio, by one of three methods.

- ``gradient`` (default): gradient alignment (:func:`attnprobe.attribution.gradient_alignment`),
  for any model that can score labels (attention decoders and CTC heads);
- ``cross-attention``: Whisper's recipe, DTW over the alignment heads' cross-attention;
- ``ctc``: forced alignment of the CTC posteriors (``torchaudio.functional.forced_align``).

Formats: ``table`` (terminal), ``json``, ``textgrid`` (Praat), ``ctm`` (NIST).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from attnprobe.adapters.loading import LoadedModel, load_model
from attnprobe.adapters.text import Transcript
from attnprobe.alignment import (
    Alignment,
    BlankScore,
    close_word_gaps,
    cross_attention_alignment,
    ctc_forced_alignment,
    ctm_text,
    textgrid_text,
)
from attnprobe.attribution import gradient_alignment
from attnprobe.batch import SpeechBatch
from attnprobe.errors import CapabilityError, InputError
from attnprobe.trace import trace

from .analysis import check_transcript_fits, errors_against_reference, format_table
from .audio import check_audio_file, read_audio
from .batch import run_items
from .inputs import InputItem, collect_inputs, read_text_argument
from .output import PendingFiles, check_writable, write_file_atomically

METHODS = ("gradient", "cross-attention", "ctc")
FORMATS = ("table", "json", "textgrid", "ctm")
SUFFIXES = {"table": ".txt", "json": ".json", "textgrid": ".TextGrid", "ctm": ".ctm"}


@dataclass(frozen=True)
class GradientSettings:
    """How ``attnprobe align`` turns gradient scores into word times.

    The defaults are what ``python -m benchmarks.alignment_eval`` chose on held-out utterances of
    Whisper tiny.en (``benchmarks/results/alignment_eval.md``): the percentile-mirrored blank
    adapts to the scale of any model's scores, and short gaps between words go to the following
    word, whose onset the gradient evidence tends to miss.

    Attributes:
        blank: blank scoring of the Viterbi.
        max_gap_s: gaps between words up to this long join the following word (0: keep them).
    """

    blank: BlankScore = BlankScore("percentile", reduction="mean", percentile=50.0)
    max_gap_s: float = 0.3


def gradient_alignment_of(loaded: LoadedModel, batch: SpeechBatch, transcript: Transcript,
                          settings: GradientSettings = GradientSettings()) -> Alignment:
    """Gradient alignment of one utterance; each label's log scores normalised over time, which
    places words far better on Whisper than raw gradient norms do."""
    (alignment,) = gradient_alignment(
        loaded.model, batch, [transcript.tokens], input=loaded.gradient_input,
        blank=settings.blank, log_softmax_over_time=True, ctc_blank=loaded.ctc_blank,
        word_style=_word_style(loaded), adapter=loaded.adapter)
    if settings.max_gap_s > 0:
        alignment = close_word_gaps(alignment, max_gap_s=settings.max_gap_s)
    return alignment


def cross_attention_alignment_of(loaded: LoadedModel, batch: SpeechBatch,
                                 transcript: Transcript) -> Alignment:
    """DTW over the cross-attention of the alignment heads (all heads of the upper half of the
    decoder when the model names none)."""
    adapter = loaded.adapter
    layers = sorted(binding.site.layer for binding in adapter.bindings()
                    if binding.site.kind == "cross_attn")
    if not layers:
        alternatives = "gradient or ctc" if loaded.ctc_blank is not None else "gradient"
        raise CapabilityError(f"{loaded.name} has no cross-attention (no attention decoder); use "
                              f"--method {alternatives}")
    with torch.no_grad(), trace(loaded.model, kinds="cross_attn", capture={"attention"},
                                adapter=adapter) as traced:
        adapter.run(batch)
    attention = {layer: traced[f"decoder.{layer}.cross_attn"].attention[0].float()
                 for layer in layers}
    heads = loaded.alignment_heads or [
        (layer, head) for layer in layers[len(layers) // 2:]
        for head in range(attention[layer].shape[0])]
    chosen = torch.stack([attention[layer][head] for layer, head in heads])
    record = traced[f"decoder.{layers[0]}.cross_attn"]
    covering = math.ceil(int(batch.input_lengths[0]) / adapter.subsampling)
    frames = min(covering, int(record.key_lengths[0]), chosen.shape[-1])
    first = loaded.first_label_row
    return cross_attention_alignment(
        chosen, transcript.tokens, frame_shift_s=adapter.frame_shift_seconds,
        subsampling=adapter.subsampling, num_frames=frames,
        aligned_rows=slice(first, first + len(transcript.ids)), word_style=_word_style(loaded))


def ctc_alignment_of(loaded: LoadedModel, batch: SpeechBatch, transcript: Transcript) -> Alignment:
    """CTC forced alignment of the transcript."""
    if loaded.ctc_blank is None:
        raise CapabilityError(f"{loaded.name} has no CTC head; use --method gradient"
                              f"{' or cross-attention' if loaded.adapter.has_decoder else ''}")
    with torch.no_grad():
        log_probs, frame_lengths = loaded.adapter.ctc_log_probs(batch)
    frames = int(frame_lengths[0])
    try:
        return ctc_forced_alignment(
            log_probs[0, :frames], transcript.ids, transcript.tokens,
            frame_shift_s=loaded.adapter.frame_shift_seconds,
            subsampling=loaded.adapter.subsampling, blank=loaded.ctc_blank,
            word_style=_word_style(loaded))
    except ValueError as error:
        raise InputError(str(error)) from error


ALIGNERS = {"gradient": gradient_alignment_of, "cross-attention": cross_attention_alignment_of,
            "ctc": ctc_alignment_of}


def align_item(loaded: LoadedModel, item: InputItem, method: str,
               settings: GradientSettings = GradientSettings()) -> tuple[Alignment, float]:
    """The alignment of one input and its audio's duration in seconds."""
    if item.text is None:
        raise InputError(f"no transcript for {item.audio}: give --text, a <name>.txt sidecar, or "
                         f"a text column in the manifest")
    audio = read_audio(item.audio).at_rate(loaded.sample_rate)
    transcript = loaded.transcript(item.text)
    batch = loaded.batch(audio.samples, transcript)
    check_transcript_fits(loaded, batch, audio.duration)
    aligner = partial(gradient_alignment_of, settings=settings) if method == "gradient" \
        else ALIGNERS[method]
    return aligner(loaded, batch, transcript), audio.duration


def render(alignment: Alignment, item: InputItem, duration: float, output_format: str,
           model_name: str) -> str:
    """``alignment`` as text in ``output_format``."""
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
    return "\n".join(lines) + "\n"


def run_align(arguments: argparse.Namespace) -> int:
    """The ``align`` command; returns the exit code."""
    items = collect_inputs(arguments.audio, read_text_argument(arguments.text))
    many = len(items) > 1
    out = None if arguments.out is None else Path(arguments.out).expanduser()
    if out is not None:
        check_writable(out, "folder" if many else "file")
    elif many and arguments.format == "textgrid":
        raise InputError("several TextGrids cannot share the terminal; pass --out FOLDER")
    if not many:
        check_audio_file(items[0].audio)
        if items[0].text is None:
            raise InputError(f"no transcript for {items[0].audio}: give --text 'the words "
                             f"spoken' or a <name>.txt sidecar")
    loaded = load_model(arguments.model)
    settings = GradientSettings(arguments.blank, arguments.close_gaps / 1000)
    rendered: dict[str, str] = {}

    def process(item: InputItem) -> str:
        alignment, duration = align_item(loaded, item, arguments.method, settings)
        rendered[item.id] = render(alignment, item, duration, arguments.format, loaded.name)
        return f"{len(alignment.words)} words"

    summary = run_items(items, process)
    if out is None:
        sys.stdout.write("".join(rendered.values()))
    elif not many:
        if rendered:
            write_file_atomically(out, next(iter(rendered.values())))
    else:
        pending = PendingFiles(out)
        if arguments.format == "ctm":
            pending.add("alignments.ctm", "".join(rendered.values()))
        else:
            for item_id, text in rendered.items():
                pending.add(f"{item_id}{SUFFIXES[arguments.format]}", text)
        pending.add("summary.json", json.dumps(summary.to_dict(), indent=1) + "\n")
        pending.commit()
    return summary.finish(out)


def _word_style(loaded: LoadedModel) -> str:
    return "auto" if loaded.tokenizer is None else loaded.tokenizer.word_style
