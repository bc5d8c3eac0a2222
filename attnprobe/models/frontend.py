"""The VGG-style convolutional frontend.

Padded frames are zeroed at the input and after every stage, and a stage that pools time by ``p``
keeps ``length // p`` frames, so each kept frame is computed from valid input frames and zeros only:
the valid frames of a padded batch equal those of each sequence run alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from attnprobe.lengths import valid_mask


class VGGFrontend(nn.Module):
    """Conv2d 3x3 + ReLU + max-pool per stage, then a linear projection of channels x mel bins.

    Each stage pools time by its entry of ``time_pools`` and frequency by 2, so the time
    downsampling is the product of ``time_pools`` (paper: 3 x 2 = 6).
    """

    def __init__(self, n_mels: int, channels: Sequence[int], time_pools: Sequence[int], d_model: int) -> None:
        super().__init__()
        self.time_pools = tuple(time_pools)
        stages = []
        in_channels = 1
        for out_channels, pool in zip(channels, time_pools, strict=True):
            stages.append(
                nn.Sequential(
                    nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
                    nn.ReLU(),
                    nn.MaxPool2d(kernel_size=(pool, 2)),
                )
            )
            in_channels = out_channels
        self.stages = nn.ModuleList(stages)
        self.projection = nn.Linear(in_channels * (n_mels // 2 ** len(stages)), d_model)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames left after the frontend: ``lengths // pool`` stage by stage, ``(batch,)``."""
        for pool in self.time_pools:
            lengths = torch.div(lengths, pool, rounding_mode="floor")
        return lengths

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Downsample and project log-mel features.

        Args:
            features: ``(batch, frames, n_mels)``.
            lengths: ``(batch,)`` valid frames per sequence.

        Returns:
            ``(batch, frames // time_downsampling, d_model)`` and the new lengths ``(batch,)``.
        """
        x = features.unsqueeze(1)  # (batch, 1, frames, n_mels)
        # masked_fill rather than a product, so even NaN or inf in the padding cannot leak.
        x = x.masked_fill(~valid_mask(lengths, x.shape[2])[:, None, :, None], 0.0)
        for stage, pool in zip(self.stages, self.time_pools, strict=True):
            x = stage(x)
            lengths = torch.div(lengths, pool, rounding_mode="floor")
            x = x.masked_fill(~valid_mask(lengths, x.shape[2])[:, None, :, None], 0.0)
        x = x.transpose(1, 2).flatten(2)  # (batch, frames, channels * mel bins)
        return self.projection(x), lengths
