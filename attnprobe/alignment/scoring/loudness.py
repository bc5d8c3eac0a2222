"""How loud each score column is, from the model's own input: the blank's silence prior
(:mod:`attnprobe.alignment.decoding.silence`) reads it.

Log-mel and filter-bank features are log energies already, so a frame's loudness is their mean
over the feature axis; a waveform's is the log mean square of its samples. Score columns that span
``subsampling`` input frames (gradients at the encoder) average them.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional

from attnprobe.lengths import valid_mask


def input_loudness(inputs: torch.Tensor, input_lengths: torch.Tensor, subsampling: int,
                   frames: int) -> torch.Tensor:
    """``(batch, input frames[, features])`` -> ``(batch, frames)`` log loudness per score column.

    Args:
        inputs: features ``(batch, frames, features)`` or waveforms ``(batch, samples)``.
        input_lengths: ``(batch,)`` valid input frames.
        subsampling: input frames per score column.
        frames: score columns wanted (padded with the quietest value past the input).
    """
    values = inputs.detach().double().cpu()
    lengths = input_lengths.detach().cpu()
    if values.dim() == 2:
        values = values.square()[..., None]
        per_frame = values.mean(dim=-1)
    else:
        per_frame = values.flatten(start_dim=2).mean(dim=-1)
    valid = valid_mask(lengths, per_frame.shape[1])
    floor = per_frame.masked_fill(~valid, math.inf).amin(dim=1, keepdim=True)
    per_frame = torch.where(valid, per_frame, floor)
    columns = math.ceil(per_frame.shape[1] / subsampling)
    padded = functional.pad(per_frame, (0, columns * subsampling - per_frame.shape[1]),
                            value=0.0)
    padded[:, per_frame.shape[1]:] = floor
    pooled = padded.view(padded.shape[0], columns, subsampling).mean(dim=-1)
    if inputs.dim() == 2:
        pooled = torch.log(pooled.clamp_min(1e-12))
    if pooled.shape[1] >= frames:
        return pooled[:, :frames]
    return torch.cat([pooled, pooled.amin(dim=1, keepdim=True).expand(-1, frames - columns)], 1)
