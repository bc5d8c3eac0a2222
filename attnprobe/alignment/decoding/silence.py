"""Quiet frames as a blank prior: pauses between words belong to no word.

The gradient evidence of a word fades into the pauses around it, so the Viterbi tends to stretch
words over them. :func:`quietness` turns the loudness of every score column (from the model's own
input features, :func:`attnprobe.alignment.scoring.loudness.input_loudness`) into a number in
``[0, 1]``: 0 at or above the loud frames (the 90th percentile of the utterance), 1 at or below
the quietest (the 5th percentile). The blank score adds ``silence_weight * quietness`` (see
:class:`~attnprobe.alignment.settings.AlignmentSettings`), so a pause is blank unless the label
evidence there is strong.
"""

from __future__ import annotations

import torch

from attnprobe.lengths import valid_mask

LOUD_QUANTILE = 0.9
QUIET_QUANTILE = 0.05


def quietness(loudness: torch.Tensor, frame_lengths: torch.Tensor | None = None) -> torch.Tensor:
    """``(batch, frames)`` log loudness -> ``(batch, frames)`` quietness in ``[0, 1]``.

    Each item is scaled by its own valid frames; padded frames get 0. An item whose loudness does
    not vary (digital silence) is quiet everywhere (1).
    """
    loudness = loudness.double()
    batch, frames = loudness.shape
    lengths = (torch.full((batch,), frames) if frame_lengths is None
               else frame_lengths.to(loudness.device))
    valid = valid_mask(lengths, frames)
    masked = loudness.masked_fill(~valid, float("nan"))
    loud = torch.nanquantile(masked, LOUD_QUANTILE, dim=1, keepdim=True)
    quiet = torch.nanquantile(masked, QUIET_QUANTILE, dim=1, keepdim=True)
    span = loud - quiet
    flat = span <= 1e-6
    result = ((loud - loudness) / span.clamp_min(1e-6)).clamp(0.0, 1.0)
    result = torch.where(flat, torch.ones_like(result), result)
    return result.masked_fill(~valid, 0.0)
