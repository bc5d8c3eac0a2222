"""The per-label quantity to differentiate for a CTC model.

An attention decoder factorises the sequence log-likelihood over labels,
``log p(A | X) = sum_s log p(a_s | a_<s, X)``, so each label has a term of its own to
differentiate. CTC has no such factorisation: ``log p(A | X) = log sum_pi prod_t y_t(pi_t)`` sums
over every frame-level path ``pi`` that collapses to ``A``. Its *gradient*, however, splits exactly
over the states of the CTC topology ``l' = [blank, a_1, blank, ..., a_S, blank]`` (Fisher's
identity, computed by the forward-backward algorithm)::

    grad log p(A | X) = E_{pi ~ p(pi | A, X)} [grad log p(pi | X)]
                      = sum_t sum_u gamma_t(u) * grad log y_t(l'_u)

where ``gamma_t(u) = p(pi_t = u | A, X)`` is the posterior occupancy of state ``u`` at frame ``t``.
Label position ``s`` owns state ``2s + 1``; its term is

    q_s(X) = sum_t gamma_t(2s + 1) * log y_t(a_s)        (gamma held fixed: no gradient through it)

and ``sum_s grad q_s + grad q_blank = grad log p(A | X)`` exactly. So ``grad q_s`` is label ``s``'s
share of the gradient of the sequence log-likelihood: the role ``grad log p(a_s | a_<s, X)`` plays
for an attention decoder, whose per-label gradients also sum to ``grad log p(A | X)``. A CTC
adapter returns ``q_s`` from ``label_log_probs`` and gradient alignment works unchanged.

Why this term and not another:

- ``log y_t*(a_s)`` at a forced-alignment frame ``t*`` needs an alignment first (what we want to
  compute) and an arbitrary choice of ``t*`` inside the label's span; ``q_s`` is its posterior
  average, and equals it when the model is peaky (``gamma`` one-hot).
- ``sum_t log y_t(a_s)`` over all frames ignores the rest of the transcript and gives a token
  that occurs twice the same term at both positions.
- The vocabulary-level CTC gradient (what ``torch.nn.functional.ctc_loss`` returns) merges the
  states of repeated tokens; occupancy per label *position* keeps them apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from attnprobe.errors import InputError
from attnprobe.lengths import valid_mask


@dataclass
class CTCOccupancy:
    """Posterior state occupancy of a transcript under a CTC model.

    Attributes:
        labels: ``(batch, labels, frames)`` ``p(pi_t = label position s | A, X)``; 0 on padding.
        blank: ``(batch, frames)`` probability of being in any blank state; 0 on padding.
        log_likelihood: ``(batch,)`` ``log p(A | X)``.

    On every valid frame, ``labels.sum(1) + blank == 1``.
    """

    labels: torch.Tensor
    blank: torch.Tensor
    log_likelihood: torch.Tensor


def ctc_label_log_probs(
    log_probs: torch.Tensor,
    labels: torch.Tensor,
    frame_lengths: torch.Tensor,
    label_lengths: torch.Tensor,
    blank: int = 0,
) -> torch.Tensor:
    """``q_s = sum_t gamma_t(s) log y_t(a_s)`` for every label position (see the module docs).

    Args:
        log_probs: ``(batch, frames, vocab)`` log-softmax output of the CTC head.
        labels: ``(batch, labels)`` int64 label ids, without blanks; any value on padding.
        frame_lengths: ``(batch,)`` valid frames.
        label_lengths: ``(batch,)`` valid labels.
        blank: id of the CTC blank.

    Returns:
        ``(batch, labels)``, differentiable in ``log_probs`` (not through the occupancy);
        0 on padded labels.
    """
    occupancy = ctc_occupancy(log_probs.detach(), labels, frame_lengths, label_lengths, blank)
    batch, frames, _ = log_probs.shape
    label_ids = _padded_with(labels, label_lengths, blank)
    emitted = log_probs.gather(2, label_ids[:, None, :].expand(batch, frames, labels.shape[1]))
    valid_frames = valid_mask(frame_lengths, frames)
    # Padding may hold -inf log-probabilities; 0 * -inf would poison the sum with NaN.
    emitted = emitted.masked_fill(~valid_frames[:, :, None], 0.0)
    weights = occupancy.labels.to(log_probs.dtype)
    return torch.einsum("bst,bts->bs", weights, emitted)


def ctc_occupancy(
    log_probs: torch.Tensor,
    labels: torch.Tensor,
    frame_lengths: torch.Tensor,
    label_lengths: torch.Tensor,
    blank: int = 0,
) -> CTCOccupancy:
    """Forward-backward over the CTC topology, per label position, for a padded batch.

    Args: as :func:`ctc_label_log_probs`.

    Raises:
        InputError: an empty transcript, or a transcript that no path of the valid frames can
            emit (more labels, plus one blank between each repeated pair, than frames).
    """
    _check_lengths(log_probs, labels, frame_lengths, label_lengths)
    with torch.no_grad():
        scores = log_probs.detach().double()
        extended = _extended_labels(_padded_with(labels, label_lengths, blank), blank)
        states = 2 * label_lengths + 1
        emissions = _state_emissions(scores, extended, frame_lengths, states)
        skips = _skip_allowed(extended, blank)
        alpha = _forward(emissions, skips, frame_lengths)
        flip = _flip_index(frame_lengths, states, emissions.shape[1], emissions.shape[2])
        beta = _flip(_forward(_flip(emissions, flip), _flip_skips(skips, states), frame_lengths),
                     flip)
        last = alpha[torch.arange(alpha.shape[0]), frame_lengths - 1]
        ends = torch.stack([states - 1, states - 2], dim=1)
        log_likelihood = torch.logsumexp(last.gather(1, ends), dim=1)
        _check_feasible(log_likelihood, labels, label_lengths, frame_lengths)
        gamma = torch.exp(alpha + beta - emissions - log_likelihood[:, None, None])
        gamma = torch.nan_to_num(gamma, nan=0.0)
        label_occupancy = gamma[:, :, 1::2].transpose(1, 2)
        blank_occupancy = gamma[:, :, 0::2].sum(dim=2)
    dtype = log_probs.dtype
    return CTCOccupancy(label_occupancy.to(dtype), blank_occupancy.to(dtype),
                        log_likelihood.to(dtype))


def _forward(emissions: torch.Tensor, skips: torch.Tensor, frame_lengths: torch.Tensor
             ) -> torch.Tensor:
    """``alpha_t(u)``: log probability of the path prefixes ending in state ``u`` at frame ``t``.

    ``emissions`` ``(batch, frames, states)`` is ``-inf`` beyond each item's states; ``alpha`` is
    ``-inf`` on padded frames.
    """
    batch, frames, states = emissions.shape
    impossible = emissions.new_full((batch, 2), float("-inf"))
    alpha = emissions.new_full((batch, frames, states), float("-inf"))
    alpha[:, 0, :2] = emissions[:, 0, :2]
    for frame in range(1, frames):
        previous = torch.cat([impossible, alpha[:, frame - 1]], dim=1)
        moves = torch.stack([previous[:, 2:], previous[:, 1:-1],
                             previous[:, :-2].masked_fill(~skips, float("-inf"))])
        step = torch.logsumexp(moves, dim=0) + emissions[:, frame]
        alpha[:, frame] = step.masked_fill((frame >= frame_lengths)[:, None], float("-inf"))
    return alpha


def _extended_labels(labels: torch.Tensor, blank: int) -> torch.Tensor:
    """``(batch, labels)`` -> ``(batch, 2 * labels + 1)``: a blank before, between and after."""
    batch, count = labels.shape
    extended = labels.new_full((batch, 2 * count + 1), blank)
    extended[:, 1::2] = labels
    return extended


def _skip_allowed(extended: torch.Tensor, blank: int) -> torch.Tensor:
    """``(batch, states)``: may a path jump from state ``u - 2`` straight to ``u``?

    Only into a label that differs from the label two states back (a repeated token needs the
    blank between its copies).
    """
    allowed = torch.zeros_like(extended, dtype=torch.bool)
    allowed[:, 2:] = (extended[:, 2:] != blank) & (extended[:, 2:] != extended[:, :-2])
    return allowed


def _state_emissions(log_probs: torch.Tensor, extended: torch.Tensor,
                     frame_lengths: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """``(batch, frames, states)`` ``log y_t(l'_u)``; ``-inf`` on padded frames and states."""
    batch, frames, _ = log_probs.shape
    emissions = log_probs.gather(2, extended[:, None, :].expand(batch, frames, -1))
    frame_valid = valid_mask(frame_lengths, frames)
    state_valid = valid_mask(states, extended.shape[1])
    valid = frame_valid[:, :, None] & state_valid[:, None, :]
    return emissions.masked_fill(~valid, float("-inf"))


def _flip_index(frame_lengths: torch.Tensor, states: torch.Tensor, frames: int, width: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices reversing each item's valid frames and valid states (an involution on them)."""
    device = frame_lengths.device
    time = (frame_lengths[:, None] - 1 - torch.arange(frames, device=device)).clamp_min(0)
    state = (states[:, None] - 1 - torch.arange(width, device=device)).clamp_min(0)
    return time, state


def _flip(values: torch.Tensor, index: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Reverse ``(batch, frames, states)`` in time and states within each item's valid region.

    Running :func:`_forward` on flipped emissions and flipping back gives the backward
    variables ``beta_t(u)`` (emission at ``t`` included).
    """
    time, state = index
    batch, frames, width = values.shape
    flipped = values.gather(1, time[:, :, None].expand(batch, frames, width))
    flipped = flipped.gather(2, state[:, None, :].expand(batch, frames, width))
    valid_time = torch.arange(frames, device=values.device) <= time[:, :1]
    valid_state = torch.arange(width, device=values.device) <= state[:, :1]
    return flipped.masked_fill(~(valid_time[:, :, None] & valid_state[:, None, :]),
                               float("-inf"))


def _flip_skips(skips: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """Skip permissions of the time-reversed topology.

    Reversed state ``v`` is original state ``U - 1 - v``; a reversed skip into ``v`` is the
    original skip into ``U + 1 - v``, which is allowed under the same rule.
    """
    width = skips.shape[1]
    target = states[:, None] + 1 - torch.arange(width, device=skips.device)
    inside = (target >= 2) & (target < states[:, None])
    flipped = skips.gather(1, target.clamp(0, width - 1))
    return flipped & inside


def _padded_with(labels: torch.Tensor, label_lengths: torch.Tensor, value: int) -> torch.Tensor:
    valid = valid_mask(label_lengths, labels.shape[1])
    return labels.masked_fill(~valid, value)


def _check_lengths(log_probs: torch.Tensor, labels: torch.Tensor, frame_lengths: torch.Tensor,
                   label_lengths: torch.Tensor) -> None:
    if log_probs.dim() != 3 or labels.dim() != 2 or labels.shape[0] != log_probs.shape[0]:
        raise InputError(
            f"CTC log-probabilities must be (batch, frames, vocab) and labels (batch, labels); "
            f"got {tuple(log_probs.shape)} and {tuple(labels.shape)}")
    if labels.shape[1] == 0 or int(label_lengths.min()) < 1:
        raise InputError("an empty transcription has no label to score; drop that utterance or "
                         "give its reference labels")
    if int(frame_lengths.max()) > log_probs.shape[1] or int(label_lengths.max()) > labels.shape[1]:
        raise InputError(
            f"lengths exceed the padded tensors: frames {frame_lengths.tolist()} of "
            f"{log_probs.shape[1]}, labels {label_lengths.tolist()} of {labels.shape[1]}")


def _check_feasible(log_likelihood: torch.Tensor, labels: torch.Tensor,
                    label_lengths: torch.Tensor, frame_lengths: torch.Tensor) -> None:
    impossible = ~torch.isfinite(log_likelihood)
    if impossible.any():
        item = int(impossible.nonzero()[0])
        count = int(label_lengths[item])
        ids = labels[item, :count]
        repeats = int((ids[1:] == ids[:-1]).sum())
        raise InputError(
            f"labels longer than frames allow: CTC item {item} has {count} labels with {repeats} "
            f"repeated neighbours, so it needs at least {count + repeats} frames but has "
            f"{int(frame_lengths[item])} (or the model gives a needed label probability 0); use "
            f"coarser labels, a model with less time subsampling, or check the transcript")
