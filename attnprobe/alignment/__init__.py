"""When is each label spoken: gradient alignment, its decoding, and the baselines it is measured
against. Two halves, one after the other:

- **scoring** (:mod:`.scoring`): teacher-force the transcript and take, for every label ``s`` and
  input frame ``t``, ``|| d log p(a_s | a_<s, X) / d x_t ||`` (plain gradients, SmoothGrad or
  Integrated Gradients; for CTC models the per-label share of the CTC gradient);
- **decoding** (:mod:`.decoding`): log scores and a blank score per frame, a Viterbi forced
  alignment over ``[blank, a_1, blank, ..., a_S, blank]``, words, gap closing, exports (TextGrid,
  CTM) and the time-stamp error against reference word times.

:func:`gradient_alignment` runs both with the model family's defaults (:func:`settings_for`:
:data:`WHISPER_SETTINGS` for Whisper, :data:`DEFAULT_SETTINGS` for every other model);
:func:`align_transcript` aligns a text to audio of any length (character targets, windows). :mod:`.baselines` holds cross-attention DTW, CTC forced
alignment and even spacing, which return the same :class:`Alignment`.

Usage::

    alignments = attnprobe.gradient_alignment(model, batch, tokens)   # one Alignment per item
    alignments[0].summary()                                           # words in seconds
"""

from .baselines import (
    cross_attention_alignment,
    ctc_forced_alignment,
    evenly_spaced_alignment,
    model_cross_attention_alignment,
    model_ctc_alignment,
)
from .decoding import (
    Alignment,
    LabelSpan,
    TimestampErrors,
    WordSpan,
    aggregate_timestamp_errors,
    align_score_matrix,
    align_score_matrix_batch,
    close_word_gaps,
    ctm_text,
    textgrid_text,
    timestamp_errors,
    write_ctm,
    write_textgrid,
)
from .gradient import align_scores, gradient_alignment, gradient_score_matrices
from .long_audio import LongAudioPlan
from .scoring import IntegratedGradients, SmoothGrad
from .settings import (
    BLANK_10MS,
    BLANK_60MS,
    DEFAULT_SETTINGS,
    WHISPER_SETTINGS,
    AlignmentSettings,
    BlankScore,
    settings_for,
)
from .transcript import align_transcript

__all__ = [
    "BLANK_10MS",
    "BLANK_60MS",
    "DEFAULT_SETTINGS",
    "WHISPER_SETTINGS",
    "Alignment",
    "AlignmentSettings",
    "BlankScore",
    "IntegratedGradients",
    "LabelSpan",
    "LongAudioPlan",
    "SmoothGrad",
    "TimestampErrors",
    "WordSpan",
    "aggregate_timestamp_errors",
    "align_score_matrix",
    "align_score_matrix_batch",
    "align_scores",
    "align_transcript",
    "close_word_gaps",
    "cross_attention_alignment",
    "ctc_forced_alignment",
    "ctm_text",
    "evenly_spaced_alignment",
    "gradient_alignment",
    "gradient_score_matrices",
    "model_cross_attention_alignment",
    "model_ctc_alignment",
    "settings_for",
    "textgrid_text",
    "timestamp_errors",
    "write_ctm",
    "write_textgrid",
]
