"""Cross-attention DTW baseline (as openai-whisper ``timing.py``).

Whisper's recipe: take the softmaxed cross-attention of chosen alignment heads,
``(heads, labels, frames)``; z-normalise every head over the label axis; median-filter each row over
time (width 7); average the heads; then run DTW on the negated matrix for a monotone path from
``(label 0, frame 0)`` to ``(last label, last frame)``. Label ``s`` spans the frames the path visits
on row ``s``; where the path moves straight down, two neighbouring labels share that frame.

Row ``s`` of the attention must be the decoder query that predicts label ``s``: in a
teacher-forced decoder, the query at the position of the token before it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from attnprobe.adapters import resolve_adapter
from attnprobe.batch import BatchForm, as_speech_batch
from attnprobe.errors import CapabilityError, InputError
from attnprobe.trace import trace

from ..decoding.result import Alignment
from ..decoding.words import WordStyle, alignment_from_label_frames

DIAGONAL, DOWN, RIGHT = 0, 1, 2


def dtw_align(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost monotone path through ``cost``.

    Moves: diagonal ``(+1, +1)``, down ``(+1, 0)`` (next label, same frame) and right ``(0, +1)``
    (same label, next frame); ties break as in Whisper (right unless one of the others is strictly
    smallest). The recursion runs along anti-diagonals, each one vectorised.

    Args:
        cost: ``(labels, frames)``.

    Returns:
        ``(label_indices, frame_indices)``, each ``(steps,)`` int64, from ``(0, 0)`` to
        ``(labels - 1, frames - 1)``.
    """
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2 or cost.size == 0:
        raise ValueError(f"DTW cost has shape {cost.shape}; pass a non-empty (labels, frames)")
    if np.isnan(cost).any():
        raise ValueError("DTW cost contains NaN; replace NaN attention with 0 before aligning")
    rows, columns = cost.shape
    total = np.full((rows + 1, columns + 1), np.inf)
    total[0, 0] = 0.0
    trace = np.full((rows + 1, columns + 1), RIGHT, dtype=np.int8)
    trace[1:, 0] = DOWN
    for diagonal in range(2, rows + columns + 1):
        i = np.arange(max(1, diagonal - columns), min(rows, diagonal - 1) + 1)
        j = diagonal - i
        from_diagonal = total[i - 1, j - 1]
        from_above = total[i - 1, j]
        from_left = total[i, j - 1]
        choice = np.full(i.shape, RIGHT, dtype=np.int8)
        choice[(from_above < from_diagonal) & (from_above < from_left)] = DOWN
        choice[(from_diagonal < from_above) & (from_diagonal < from_left)] = DIAGONAL
        best = np.choose(choice, [from_diagonal, from_above, from_left])
        total[i, j] = cost[i - 1, j - 1] + best
        trace[i, j] = choice
    return _backtrace(trace)


def _backtrace(trace: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    i, j = trace.shape[0] - 1, trace.shape[1] - 1
    steps = []
    while i > 0 or j > 0:
        steps.append((i - 1, j - 1))
        move = trace[i, j]
        if move == DIAGONAL:
            i, j = i - 1, j - 1
        elif move == DOWN:
            i -= 1
        else:
            j -= 1
    path = np.array(steps[::-1], dtype=np.int64)
    return path[:, 0], path[:, 1]


def median_filter(values: np.ndarray, width: int) -> np.ndarray:
    """Median over a sliding window of ``width`` along the last axis, reflect-padded (as Whisper).

    Inputs with no more frames than ``width // 2`` are returned unchanged, as in Whisper, because
    reflect padding needs more frames than the pad.
    """
    if width < 1 or width % 2 == 0:
        raise ValueError(f"median filter width {width}; use an odd width >= 1 (Whisper uses 7)")
    pad = width // 2
    if values.shape[-1] <= pad:
        return values
    padded = np.pad(values, [(0, 0)] * (values.ndim - 1) + [(pad, pad)], mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, width, axis=-1)
    return np.median(windows, axis=-1)


def cross_attention_matrix(
    attention: torch.Tensor | np.ndarray, median_filter_width: int = 7
) -> np.ndarray:
    """Whisper's alignment matrix from alignment-head attention.

    Args:
        attention: ``(heads, labels, frames)`` softmaxed cross-attention of the chosen heads.
        median_filter_width: odd window over frames.

    Returns:
        ``(labels, frames)``: per head z-normalised over labels, median-filtered over frames,
        averaged over heads. Higher means more attended.
    """
    weights = _as_numpy(attention)
    if weights.ndim != 3:
        raise ValueError(
            f"attention has shape {weights.shape}; pass (heads, labels, frames) from the chosen "
            f"alignment heads (add a leading axis for a single head)"
        )
    mean = weights.mean(axis=1, keepdims=True)
    # A single label has zero spread; its z-scores are then 0 rather than NaN.
    spread = np.maximum(weights.std(axis=1, keepdims=True), np.finfo(np.float64).tiny)
    normalised = (weights - mean) / spread
    return median_filter(normalised, median_filter_width).mean(axis=0)


def label_frames_from_path(
    label_indices: np.ndarray, frame_indices: np.ndarray, num_labels: int
) -> np.ndarray:
    """``(labels, 2)`` ``[start, end)`` frames each label's row of a monotone path covers."""
    rows = np.arange(num_labels)
    first = np.searchsorted(label_indices, rows, side="left")
    last = np.searchsorted(label_indices, rows, side="right") - 1
    return np.stack([frame_indices[first], frame_indices[last] + 1], axis=1).astype(np.int64)


def cross_attention_alignment(
    attention: torch.Tensor | np.ndarray,
    tokens: Sequence[str],
    *,
    frame_shift_s: float,
    subsampling: int = 1,
    num_frames: int | None = None,
    aligned_rows: slice = slice(None),
    median_filter_width: int = 7,
    word_style: WordStyle = "auto",
) -> Alignment:
    """Whisper-style cross-attention DTW alignment of one utterance.

    Args:
        attention: ``(heads, labels, frames)`` softmaxed cross-attention of the alignment heads.
        tokens: token strings of the aligned rows.
        frame_shift_s: input feature shift in seconds (Whisper: 0.01).
        subsampling: input frames per attention key frame (Whisper: 2, i.e. 20 ms).
        num_frames: valid key frames; the rest (padding of a 30 s window) is cut before
            normalising. All frames when ``None``.
        aligned_rows: rows to align after normalisation. Whisper normalises over all decoder
            positions (start-of-transcript tokens included) and aligns only the text rows.
        median_filter_width: odd window over frames (Whisper: 7).
        word_style: tokenizer convention for words (see
            :mod:`attnprobe.alignment.decoding.words`).
    """
    weights = _as_numpy(attention)
    valid_frames = weights.shape[-1] if num_frames is None else num_frames
    matrix = cross_attention_matrix(weights[..., :valid_frames], median_filter_width)
    matrix = matrix[aligned_rows]
    if matrix.shape[0] != len(tokens):
        raise ValueError(
            f"{matrix.shape[0]} aligned attention rows but {len(tokens)} tokens; pass "
            f"aligned_rows= the slice of rows that predict the tokens"
        )
    label_indices, frame_indices = dtw_align(-matrix)
    return alignment_from_label_frames(
        label_frames_from_path(label_indices, frame_indices, len(tokens)),
        tokens,
        frame_shift_s=frame_shift_s,
        subsampling=subsampling,
        num_frames=valid_frames,
        method="cross_attention_dtw",
        word_style=word_style,
        path=np.stack([label_indices, frame_indices], axis=1),
        scores=matrix,
        path_score=float(-matrix[label_indices, frame_indices].sum()),
    )


def model_cross_attention_alignment(
    model: nn.Module,
    batch: BatchForm,
    tokens: Sequence[str],
    *,
    alignment_heads: Sequence[tuple[int, int]] | None = None,
    word_style: WordStyle = "auto",
    adapter: Any = None,
    runner: Any = None,
) -> Alignment:
    """Whisper's recipe on a model: teacher-force one utterance, capture the cross-attention of
    the alignment heads, and align its label rows with :func:`cross_attention_alignment`.

    Args:
        batch: one utterance with its labels (a :class:`~attnprobe.batch.SpeechBatch` or tuple).
        tokens: its token strings, one per label.
        alignment_heads: ``(decoder layer, head)`` pairs; ``None``: every head of the upper half
            of the decoder layers.

    Raises:
        CapabilityError: the model has no cross-attention.
    """
    batch = as_speech_batch(batch)
    if batch.batch_size != 1:
        raise InputError(f"cross-attention DTW aligns one utterance at a time, got a batch of "
                         f"{batch.batch_size}; pass batch.item(i)")
    bound = resolve_adapter(model, adapter, runner)
    layers = sorted(binding.site.layer for binding in bound.site_map.bindings()
                    if binding.site.kind == "cross_attn")
    if not layers:
        raise CapabilityError(f"{type(model).__name__} has no cross-attention (no attention "
                              f"decoder); align it with gradients or, for a CTC head, CTC")
    with torch.no_grad(), trace(model, kind="cross_attn", capture={"attention"},
                                adapter=bound.site_map) as traced:
        bound.runner.run(batch)
    attention = {layer: traced[f"decoder.{layer}.cross_attn"].attention[0].float()
                 for layer in layers}
    heads = list(alignment_heads) if alignment_heads else [
        (layer, head) for layer in layers[len(layers) // 2:]
        for head in range(attention[layer].shape[0])]
    chosen = torch.stack([attention[layer][head] for layer, head in heads])
    record = traced[f"decoder.{layers[0]}.cross_attn"]
    subsampling = bound.runner.subsampling
    covering = math.ceil(int(batch.input_lengths[0]) / subsampling)
    frames = min(covering, int(record.key_lengths[0]), chosen.shape[-1])
    first = bound.runner.first_label_position
    return cross_attention_alignment(
        chosen, tokens, frame_shift_s=bound.runner.frame_shift_seconds, subsampling=subsampling,
        num_frames=frames, aligned_rows=slice(first, first + len(tokens)),
        word_style=word_style)


def _as_numpy(values: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().to(device="cpu", dtype=torch.float64).numpy()
    return np.asarray(values, dtype=np.float64)
