"""The floor every aligner must beat: labels spread evenly over the valid frames."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..decoding.result import Alignment
from ..decoding.words import WordStyle, alignment_from_label_frames


def evenly_spaced_label_frames(num_labels: int, num_frames: int) -> np.ndarray:
    """``(labels, 2)``: label ``s`` gets frames ``[floor(s T / S), floor((s + 1) T / S))``."""
    if num_labels < 1 or num_labels > num_frames:
        raise ValueError(
            f"cannot spread {num_labels} labels over {num_frames} frames; need 1 <= labels <= "
            f"frames so that every label gets a frame"
        )
    bounds = np.arange(num_labels + 1, dtype=np.int64) * num_frames // num_labels
    return np.stack([bounds[:-1], bounds[1:]], axis=1)


def evenly_spaced_alignment(
    tokens: Sequence[str],
    num_frames: int,
    *,
    frame_shift_s: float,
    subsampling: int = 1,
    word_style: WordStyle = "auto",
) -> Alignment:
    """The floor every aligner must beat: labels spread uniformly over the valid frames."""
    label_frames = evenly_spaced_label_frames(len(tokens), num_frames)
    return alignment_from_label_frames(
        label_frames,
        tokens,
        frame_shift_s=frame_shift_s,
        subsampling=subsampling,
        num_frames=num_frames,
        method="evenly_spaced",
        word_style=word_style,
    )
