"""What gradient alignment is measured against: Whisper-style cross-attention DTW, CTC forced
alignment, and labels spread evenly (the floor)."""

from .cross_attention_dtw import (
    cross_attention_alignment,
    cross_attention_matrix,
    dtw_align,
    median_filter,
    model_cross_attention_alignment,
)
from .ctc_forced import (
    ctc_forced_alignment,
    ctc_forced_alignment_batch,
    ctc_label_frames,
    model_ctc_alignment,
)
from .even_spacing import evenly_spaced_alignment, evenly_spaced_label_frames

__all__ = [
    "cross_attention_alignment",
    "cross_attention_matrix",
    "ctc_forced_alignment",
    "ctc_forced_alignment_batch",
    "ctc_label_frames",
    "dtw_align",
    "evenly_spaced_alignment",
    "evenly_spaced_label_frames",
    "median_filter",
    "model_cross_attention_alignment",
    "model_ctc_alignment",
]
