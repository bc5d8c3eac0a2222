"""Gradient score matrices: how strongly each transcript label depends on each input frame.

``score[b, s, t] = || d log p(a_s | a_<s, X_b) / d x_{b,t} ||_p`` (L2 over the features by
default), for a teacher-forced transcription, where ``x`` is the model input (10 ms log-mel) or
the encoder input after the frontend.

All labels share one forward pass; their gradients come out of batched backward passes
(``torch.autograd.grad(..., is_grads_batched=True)``) over chunks of labels, sized to stay in a
memory budget and to run fastest on the device (see :mod:`.label_batches`), instead of one forward
and backward per label. The items of a padded batch share every pass: cotangent ``s`` selects label
``s`` of every item at once, which is exact because items do not interact in a model in eval mode
(no batch statistics, no dropout).

Usage::

    forward = function_forward(log_probs_fn, features, input_lengths=lengths)
    scores = gradient_scores(forward)            # GradientScores
    scores.item(0)                               # (labels, frames) of item 0
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from attnprobe.errors import GradientUnavailableError, InputError
from attnprobe.lengths import valid_mask

from .forward import LabelForward, frame_lengths_for, label_lengths_for
from .label_batches import DEFAULT_MEMORY_BUDGET, label_gradients, largest_chunk


@dataclass
class GradientScores:
    """Score matrices of a padded batch.

    Attributes:
        scores: ``(batch, labels, frames)`` non-negative gradient norms, 0 on padded labels and
            frames.
        label_lengths: ``(batch,)`` valid labels per item.
        frame_lengths: ``(batch,)`` valid frames per item.
        subsampling: input feature frames per score column.
    """

    scores: torch.Tensor
    label_lengths: torch.Tensor
    frame_lengths: torch.Tensor
    subsampling: int

    def item(self, index: int) -> torch.Tensor:
        """``(labels, frames)`` scores of item ``index``, cut to its valid lengths."""
        labels, frames = int(self.label_lengths[index]), int(self.frame_lengths[index])
        return self.scores[index, :labels, :frames]


def gradient_scores(
    forward: LabelForward,
    *,
    p: float = 2.0,
    chunk_size: int | None = None,
    memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
    require_alignable: bool = False,
) -> GradientScores:
    """Score matrix of every label from one forward and batched backward passes over the labels.

    Args:
        forward: from :func:`function_forward` or
            :func:`~attnprobe.alignment.scoring.model_forward.model_forward`.
        p: the norm over features (2: L2; ``math.inf``: max-abs; any ``p >= 1``).
        chunk_size: labels per backward pass; ``None`` searches for the fastest size that fits
            ``memory_budget`` (see :mod:`.label_batches`).
        memory_budget: bytes one backward pass may use; ``None``: no limit.
        require_alignable: raise before the backward when an item has more labels than frames.

    Returns:
        :class:`GradientScores` with ``scores`` ``(batch, labels, frames)``.
    """
    check_norm(p)
    result = forward()
    if require_alignable:
        check_alignable(result.label_lengths, result.frame_lengths)
    largest = largest_chunk(result.saved_bytes, result.target, result.label_log_probs.shape[1],
                            memory_budget)
    scores = _score_matrix(result.label_log_probs, result.target, result.label_lengths,
                           result.frame_lengths, p, chunk_size, largest)
    return GradientScores(scores, result.label_lengths, result.frame_lengths, forward.subsampling)


def score_matrix(
    label_log_probs: torch.Tensor,
    target: torch.Tensor,
    *,
    label_lengths: torch.Tensor | None = None,
    frame_lengths: torch.Tensor | None = None,
    p: float = 2.0,
    chunk_size: int | None = None,
    max_chunk_size: int | None = None,
) -> torch.Tensor:
    """Scores from a graph that is already built, all labels in batched backward passes.

    Args:
        label_log_probs: ``(batch, labels)`` computed from ``target``; its graph is freed.
        target: ``(batch, frames, *features)`` in the graph of ``label_log_probs``.
        label_lengths / frame_lengths: ``(batch,)`` valid labels / frames; all when ``None``.
        p: the norm over features.
        chunk_size: labels per backward pass; ``None`` searches for the fastest.
        max_chunk_size: the largest chunk the search may try (``None``: all labels).

    Returns:
        ``(batch, labels, frames)``, 0 on padded labels and frames.
    """
    check_norm(p)
    label_lengths = label_lengths_for(label_lengths, label_log_probs)
    frame_lengths = frame_lengths_for(frame_lengths, target)
    return _score_matrix(label_log_probs, target, label_lengths, frame_lengths, p, chunk_size,
                         max_chunk_size)


def _score_matrix(label_log_probs: torch.Tensor, target: torch.Tensor,
                  label_lengths: torch.Tensor, frame_lengths: torch.Tensor, p: float,
                  chunk_size: int | None, max_chunk_size: int | None) -> torch.Tensor:
    """:func:`score_matrix` on checked lengths."""
    check_finite_log_probs(label_log_probs, label_lengths)
    norms = label_gradients(label_log_probs, target, chunk_size=chunk_size,
                            max_chunk_size=max_chunk_size,
                            reduce=lambda gradient: frame_norms(gradient, p))
    return finish_scores(norms.transpose(0, 1), label_lengths, frame_lengths)


def score_matrix_loop(
    label_log_probs: torch.Tensor,
    target: torch.Tensor,
    *,
    label_lengths: torch.Tensor | None = None,
    frame_lengths: torch.Tensor | None = None,
    p: float = 2.0,
) -> torch.Tensor:
    """The reference :func:`score_matrix`: one backward pass per label, as the paper's authors did.

    Same arguments and result; kept for checking the batched path and for benchmarks.
    """
    check_norm(p)
    label_lengths = label_lengths_for(label_lengths, label_log_probs)
    frame_lengths = frame_lengths_for(frame_lengths, target)
    check_finite_log_probs(label_log_probs, label_lengths)
    rows = []
    for label in range(label_log_probs.shape[1]):
        (gradient,) = torch.autograd.grad(label_log_probs[:, label].sum(), target,
                                          retain_graph=True)
        rows.append(frame_norms(gradient[None], p)[0])
    return finish_scores(torch.stack(rows, dim=1), label_lengths, frame_lengths)


def frame_norms(gradients: torch.Tensor, p: float) -> torch.Tensor:
    """``(labels, batch, frames, *features)`` -> ``(labels, batch, frames)``: Lp norm per frame.

    A target without a feature axis (a waveform ``(batch, samples)``) gets the absolute value.
    """
    flat = gradients.flatten(start_dim=3) if gradients.dim() > 3 else gradients[..., None]
    return torch.linalg.vector_norm(flat, ord=p, dim=-1)


def finish_scores(
    scores: torch.Tensor, label_lengths: torch.Tensor, frame_lengths: torch.Tensor
) -> torch.Tensor:
    """Zero the padding of ``(batch, labels, frames)`` and refuse NaN on the valid entries."""
    _, labels, frames = scores.shape
    device = scores.device
    label_valid = valid_mask(label_lengths.to(device), labels)
    frame_valid = valid_mask(frame_lengths.to(device), frames)
    valid = label_valid[:, :, None] & frame_valid[:, None, :]
    bad = torch.isnan(scores) & valid
    if bad.any():
        item, label, frame = (int(index) for index in bad.nonzero()[0])
        raise GradientUnavailableError(
            f"the score matrix is NaN at item {item}, label {label}, frame {frame}: the gradient "
            f"of that label's log-probability is not a number. Run the model in float32, check "
            f"the inputs for extreme values, and check that the model has no operation without "
            f"a defined gradient there (e.g. sqrt(0), log(0))")
    return scores.masked_fill(~valid, 0.0)


def check_alignable(label_lengths: torch.Tensor, frame_lengths: torch.Tensor) -> None:
    """Every item needs at least one frame per label."""
    too_long = label_lengths.cpu() > frame_lengths.cpu()
    if too_long.any():
        item = int(too_long.nonzero()[0])
        raise InputError(
            f"labels longer than frames: item {item} has {int(label_lengths[item])} labels but "
            f"{int(frame_lengths[item])} frames, and every label needs a frame of its own; score "
            f"the 10 ms input features (input='features') instead of the subsampled encoder "
            f"input, use coarser labels, or check that the transcript belongs to this audio")


def check_finite_log_probs(label_log_probs: torch.Tensor, label_lengths: torch.Tensor) -> None:
    """Non-finite log-probabilities give NaN gradients; say which label and why, before backward."""
    valid = valid_mask(label_lengths.to(label_log_probs.device), label_log_probs.shape[1])
    bad = ~torch.isfinite(label_log_probs.detach()) & valid
    if bad.any():
        item, label = (int(index) for index in bad.nonzero()[0])
        value = float(label_log_probs[item, label].detach())
        raise GradientUnavailableError(
            f"log p of label {label} in item {item} is {value}, so its gradient is NaN: the model "
            f"gives that label probability 0 or overflowed. Check that the label ids belong to "
            f"the model's vocabulary, run in float32, and clean NaN / inf from the inputs")


def check_norm(p: float) -> None:
    if not (p >= 1 or math.isinf(p)):
        raise ValueError(f"p={p} is not a norm; use p >= 1 (2 for L2, 1 for L1, math.inf for max)")


