"""Gradient score matrix -> label and blank log scores (steps 1 and 2 of the paper's recipe).

The score matrix holds non-negative gradient norms ``score[s, t] = || d log p(a_s) / d x_t ||``,
shape ``(labels, frames)`` or a padded batch ``(batch, labels, frames)`` with per-item lengths.
Label log scores are ``log(score)`` shifted so the maximum is 0, optionally log-softmaxed over time
per label. The blank (silence) state scores each frame either with a constant or by mirroring a
per-frame summary of the label scores around one of its percentiles.

Padded positions come back as ``-inf`` so that nothing downstream can select them.
"""

from __future__ import annotations

import torch

from attnprobe.lengths import checked_lengths, valid_mask

from ..settings import BlankScore, FrameReduction


def label_log_scores(
    scores: torch.Tensor,
    *,
    log_softmax_over_time: bool = False,
    label_lengths: torch.Tensor | None = None,
    frame_lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Log of the gradient norms, shifted so that the maximum of each utterance is 0.

    Args:
        scores: ``(labels, frames)`` or ``(batch, labels, frames)``, non-negative.
        log_softmax_over_time: normalise each label's row to a distribution over valid frames.
        label_lengths: ``(batch,)`` valid labels per item; all labels when ``None``.
        frame_lengths: ``(batch,)`` valid frames per item; all frames when ``None``.

    Returns:
        Same shape as ``scores``, floating point, ``<= 0`` on valid entries and ``-inf`` on padding.
        Zero norms become ``log(tiny)`` of the dtype, a finite floor, so no frame is forbidden.
    """
    batched, valid = _as_batch(scores, label_lengths, frame_lengths)
    if torch.isnan(batched[valid]).any():
        raise ValueError(
            "score matrix contains NaN; the gradient overflowed or padding was filled with NaN: "
            "compute the gradients in float32 and pass label_lengths / frame_lengths for padding"
        )
    if (batched[valid] < 0).any():
        raise ValueError(
            "score matrix has negative entries; pass gradient norms "
            "(e.g. grad.norm(dim=-1)), not raw gradients"
        )
    floor = torch.finfo(batched.dtype).tiny
    logs = torch.log(batched.clamp_min(floor)).masked_fill(~valid, float("-inf"))
    logs = logs - logs.amax(dim=(-2, -1), keepdim=True)
    if log_softmax_over_time:
        logs = torch.log_softmax(logs, dim=-1).masked_fill(~valid, float("-inf"))
    return logs if scores.dim() == 3 else logs[0]


def blank_log_scores(
    label_log_scores: torch.Tensor,
    blank: BlankScore,
    *,
    label_lengths: torch.Tensor | None = None,
    frame_lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Blank log score of every frame.

    Args:
        label_log_scores: ``(labels, frames)`` or ``(batch, labels, frames)`` from
            :func:`label_log_scores`.
        blank: the blank scoring rule.
        label_lengths: ``(batch,)`` valid labels per item; all labels when ``None``.
        frame_lengths: ``(batch,)`` valid frames per item; all frames when ``None``.

    Returns:
        ``(frames,)`` or ``(batch, frames)``; ``-inf`` on padded frames.
    """
    batched, valid = _as_batch(label_log_scores, label_lengths, frame_lengths)
    valid_frames = valid.any(dim=-2)
    if blank.kind == "constant":
        result = torch.full_like(batched[:, 0, :], blank.value)
    else:
        per_frame = _reduce_over_labels(batched, valid, blank.reduction)
        masked = per_frame.masked_fill(~valid_frames, float("nan"))
        centre = torch.nanquantile(masked, blank.percentile / 100.0, dim=-1, keepdim=True)
        result = 2 * centre - per_frame
    result = result.masked_fill(~valid_frames, float("-inf"))
    return result if label_log_scores.dim() == 3 else result[0]


def _reduce_over_labels(
    log_scores: torch.Tensor, valid: torch.Tensor, reduction: FrameReduction
) -> torch.Tensor:
    """``(batch, labels, frames)`` -> ``(batch, frames)`` over the valid labels only."""
    counts = valid.sum(dim=-2).clamp_min(1).to(log_scores.dtype)
    if reduction == "mean":
        return log_scores.masked_fill(~valid, 0.0).sum(dim=-2) / counts
    masked = log_scores.masked_fill(~valid, float("-inf"))
    if reduction == "max":
        return masked.amax(dim=-2)
    return torch.logsumexp(masked, dim=-2) - torch.log(counts)


def _as_batch(
    values: torch.Tensor,
    label_lengths: torch.Tensor | None,
    frame_lengths: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(labels, frames)`` or ``(batch, labels, frames)`` -> float batch and validity mask."""
    if values.dim() not in (2, 3):
        raise ValueError(
            f"score matrix has shape {tuple(values.shape)}; pass (labels, frames) or "
            f"(batch, labels, frames)"
        )
    batched = values if values.dim() == 3 else values.unsqueeze(0)
    if not batched.is_floating_point() or batched.dtype in (torch.float16, torch.bfloat16):
        # Half precision loses the small norms that decide silent frames.
        batched = batched.float()
    batch, labels, frames = batched.shape
    if batched.numel() == 0:
        raise ValueError(
            f"score matrix has shape {tuple(values.shape)}: no labels or no frames to align; "
            f"drop empty utterances before aligning"
        )
    label_lengths = checked_lengths(label_lengths, batch, labels, "label_lengths", batched.device)
    frame_lengths = checked_lengths(frame_lengths, batch, frames, "frame_lengths", batched.device)
    return batched, valid_mask(label_lengths, labels)[:, :, None] & \
        valid_mask(frame_lengths, frames)[:, None, :]
