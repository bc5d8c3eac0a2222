"""Decoding: from a score matrix to words with times (no models here).

- :mod:`.blank`: gradient norms -> label log scores and blank scores.
- :mod:`.viterbi`: forced alignment over ``[blank, a_1, blank, ..., a_S, blank]``, one utterance
  or a padded batch; :func:`align_score_matrix` runs the whole decoding.
- :mod:`.words`: tokens -> words, label frame spans -> word times.
- :mod:`.gaps`: short blanks between words handed to a word (connected speech).
- :mod:`.result`: :class:`Alignment`, :class:`LabelSpan`, :class:`WordSpan`.
- :mod:`.export`: Praat TextGrid and CTM files.
- :mod:`.metrics`: time-stamp error against reference word times.
"""

from .blank import blank_log_scores, label_log_scores
from .export import ctm_text, textgrid_text, write_ctm, write_textgrid
from .gaps import GAP_OWNERS, close_word_gaps
from .metrics import TimestampErrors, aggregate_timestamp_errors, timestamp_errors
from .result import Alignment, LabelSpan, WordSpan
from .viterbi import (
    ViterbiPath,
    align_score_matrix,
    align_score_matrix_batch,
    viterbi_align,
    viterbi_align_batch,
)
from .words import (
    WordTokens,
    alignment_from_label_frames,
    detect_word_style,
    frame_to_seconds,
    tokens_to_words,
    word_spans,
)

__all__ = [
    "GAP_OWNERS",
    "Alignment",
    "LabelSpan",
    "TimestampErrors",
    "ViterbiPath",
    "WordSpan",
    "WordTokens",
    "aggregate_timestamp_errors",
    "align_score_matrix",
    "align_score_matrix_batch",
    "alignment_from_label_frames",
    "blank_log_scores",
    "close_word_gaps",
    "ctm_text",
    "detect_word_style",
    "frame_to_seconds",
    "label_log_scores",
    "textgrid_text",
    "timestamp_errors",
    "tokens_to_words",
    "viterbi_align",
    "viterbi_align_batch",
    "word_spans",
    "write_ctm",
    "write_textgrid",
]
