"""Align a transcript given as text to audio of any length: the entry point of ``attnprobe align``.

:func:`align_transcript` picks the model family's settings (:func:`~.settings.settings_for`),
teacher-forces the transcript spelled as single characters where the settings ask for it
(``targets="characters"``, byte-level BPE models such as Whisper), and aligns audio longer than the
model reads window by window (:mod:`.long_audio`). Words come back in the text's own spelling,
with times, confidences and any warning.

Usage::

    loaded = attnprobe.loading.load_model("whisper-tiny.en")
    alignment = align_transcript(loaded, samples_16khz, "the birch canoe slid on the smooth planks")
    alignment.words[0]            # WordSpan('the', 0.18, 0.30, ..., confidence=0.93)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from attnprobe.errors import InputError
from attnprobe.loading import LoadedModel, Transcript

from .decoding.confidence import low_confidence_warning
from .decoding.result import Alignment, LabelSpan, WordSpan
from .gradient import gradient_alignment
from .long_audio import LongAudioPlan, align_long
from .settings import AlignmentSettings, settings_for

LABELS_PER_BACKWARD = 64
"""Labels per backward pass of ``attnprobe align`` and ``report`` (lowered where the memory budget
of :func:`attnprobe.gradient_alignment` allows fewer): all of a short utterance's at once, which
is fastest with gradients at the encoder output (``benchmarks/alignment_speed.py``). A fixed size
instead of the timed search for the fastest chunk, because chunks of different sizes round
differently in the last bits: a search that picks by timing would make the same input give
different files, and a sharded corpus differ from a single-process run."""


def align_transcript(loaded: LoadedModel, samples: np.ndarray, text: str,
                     settings: AlignmentSettings | None = None,
                     plan: LongAudioPlan | None = None) -> Alignment:
    """Word and label times of ``text`` in ``samples`` (at ``loaded.sample_rate``).

    Args:
        loaded: the model with its tokenizer.
        samples: ``(samples,)`` float audio; any length.
        text: what is said.
        settings: ``None``: the model family's defaults.
        plan: how audio longer than the model reads is cut (:class:`~.long_audio.LongAudioPlan`).
    """
    settings = settings or settings_for(loaded.family)
    duration = len(samples) / loaded.sample_rate
    words = text.split()
    if not words:
        raise InputError("the transcript is empty; give the words spoken in the audio")
    limit = loaded.max_seconds
    if limit is None or duration <= limit:
        return _align_piece(loaded, samples, text, settings)
    plan = plan or LongAudioPlan(window_s=min(20.0, limit), max_labels=_label_budget(loaded))
    pieces: dict[tuple[int, int], Alignment] = {}

    def align_window(start_s: float, end_s: float, piece: Sequence[str]
                     ) -> list[tuple[float, float]]:
        first, last = (int(round(value * loaded.sample_rate)) for value in (start_s, end_s))
        alignment = _align_piece(loaded, samples[first:last], " ".join(piece), settings)
        if len(alignment.words) != len(piece):
            raise InputError(f"the words {' '.join(piece)!r} came out as {len(alignment.words)} "
                             f"words; keep punctuation attached to its word")
        offset = first / loaded.sample_rate
        pieces[(first, len(piece))] = alignment
        return [(offset + word.start_s, offset + word.end_s) for word in alignment.words]

    times, windows = align_long(words, duration, align_window, plan,
                                [len(_targets(loaded, word, settings).ids) for word in words])
    return _stitched(loaded, words, times, windows, pieces, duration)


def _align_piece(loaded: LoadedModel, samples: np.ndarray, text: str,
                 settings: AlignmentSettings) -> Alignment:
    transcript = _targets(loaded, text, settings)
    batch = loaded.batch(samples, transcript)
    (alignment,) = gradient_alignment(loaded.model, batch, [transcript.tokens], settings=settings,
                                      ctc_blank=loaded.ctc_blank, word_style=loaded.word_style,
                                      adapter=loaded.adapter, chunk_size=LABELS_PER_BACKWARD)
    return alignment


def _targets(loaded: LoadedModel, text: str, settings: AlignmentSettings) -> Transcript:
    if settings.targets == "characters":
        return loaded.spelled_transcript(text)
    return loaded.transcript(text)


def _label_budget(loaded: LoadedModel) -> int | None:
    """Labels the decoder takes after its prompt."""
    positions = getattr(loaded.model.config, "max_target_positions", None)
    if positions is None:
        return None
    return int(positions) - loaded.first_label_position - 2


def _stitched(loaded: LoadedModel, words: Sequence[str], times: Sequence[tuple[float, float]],
              windows: Sequence, pieces: dict, duration: float) -> Alignment:
    """One alignment of the whole recording from the committed words of every window."""
    first_piece = next(iter(pieces.values()))
    seconds = first_piece.seconds_per_frame
    labels: list[LabelSpan] = []
    spans: list[WordSpan] = []
    warnings: list[str] = []
    for window in windows:
        first_sample = int(round(window.start_s * loaded.sample_rate))
        piece = pieces[(first_sample, _piece_length(pieces, first_sample))]
        offset = first_sample / loaded.sample_rate
        warnings += [warning for warning in piece.warnings if warning not in warnings]
        for index in range(window.first_word, window.end_word):
            word = piece.words[index - window.first_word]
            start, end = times[index]
            shift = len(labels) - word.label_start
            for label in piece.labels[word.label_start:word.label_end]:
                label_start = max(offset + label.start_s, start)
                label_end = min(max(offset + label.end_s, label_start), end)
                labels.append(replace(label, index=label.index + shift,
                                      start_frame=int(round(label_start / seconds)),
                                      end_frame=max(int(round(label_end / seconds)),
                                                    int(round(label_start / seconds)) + 1),
                                      start_s=label_start, end_s=label_end))
            spans.append(replace(word, start_s=start, end_s=end,
                                 start_frame=int(round(start / seconds)),
                                 end_frame=int(round(end / seconds)),
                                 label_start=word.label_start + shift,
                                 label_end=word.label_end + shift))
    warnings = [warning for warning in warnings if not warning.startswith("low confidence")]
    overall = low_confidence_warning([word.confidence for word in spans])
    if overall is not None:
        warnings.append(overall)
    return Alignment(labels=labels, words=spans, frame_shift_s=first_piece.frame_shift_s,
                     subsampling=first_piece.subsampling,
                     num_frames=int(round(duration / seconds)),
                     method=f"{first_piece.method} ({len(windows)} windows)", warnings=warnings)


def _piece_length(pieces: dict, first_sample: int) -> int:
    return next(length for start, length in pieces if start == first_sample)
