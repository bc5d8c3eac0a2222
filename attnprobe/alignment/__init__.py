"""From a score matrix to words with times: the alignment core of attnprobe (no models here).

- :mod:`.blank`: gradient norms -> label log scores and blank scores.
- :mod:`.viterbi`: forced alignment over ``[blank, a_1, blank, ..., a_S, blank]``, one utterance
  or a padded batch; :func:`align_score_matrix` runs the paper's whole recipe.
- :mod:`.words`: tokens -> words, label frame spans -> word times.
- :mod:`.result`: :class:`Alignment`, :class:`LabelSpan`, :class:`WordSpan`.
- :mod:`.gaps`: short blanks between words handed to a word (connected speech).
- :mod:`.export`: Praat TextGrid and CTM files.
- :mod:`.metrics`: time-stamp error against reference word times.
- :mod:`.dtw`, :mod:`.ctc`: the cross-attention DTW, evenly-spaced and CTC baselines.
"""

from .blank import BLANK_10MS, BLANK_60MS, BlankScore, blank_log_scores, label_log_scores
from .ctc import ctc_forced_alignment, ctc_forced_alignment_batch, ctc_label_frames
from .dtw import (
    cross_attention_alignment,
    cross_attention_matrix,
    dtw_align,
    evenly_spaced_alignment,
    evenly_spaced_label_frames,
    median_filter,
)
from .gaps import GAP_OWNERS, close_word_gaps
from .export import ctm_text, textgrid_text, write_ctm, write_textgrid
from .metrics import TimestampErrors, aggregate_timestamp_errors, timestamp_errors
from .plot import plot_alignment
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
    "close_word_gaps",
    "BLANK_10MS",
    "BLANK_60MS",
    "Alignment",
    "BlankScore",
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
    "ctc_forced_alignment",
    "ctc_forced_alignment_batch",
    "ctc_label_frames",
    "ctm_text",
    "cross_attention_alignment",
    "cross_attention_matrix",
    "detect_word_style",
    "dtw_align",
    "evenly_spaced_alignment",
    "evenly_spaced_label_frames",
    "frame_to_seconds",
    "label_log_scores",
    "median_filter",
    "plot_alignment",
    "textgrid_text",
    "timestamp_errors",
    "tokens_to_words",
    "viterbi_align",
    "viterbi_align_batch",
    "word_spans",
    "write_ctm",
    "write_textgrid",
]
