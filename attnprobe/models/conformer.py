"""The Conformer encoder: VGG frontend, then blocks of FF/2 -> MHSA -> Conv -> FF/2 -> LayerNorm.

Every branch module returns exactly the tensor its block adds to the residual stream (pre-norm,
dropout and the half-step factor included), so a forward hook on a branch sees its contribution
and the block output is ``final_norm(x + ffn1 + self_attn + conv + ffn2)`` with each term taken
at the residual stream it was computed from.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import overload

import torch
import torch.nn.functional as F
from torch import nn

from attnprobe.lengths import valid_mask

from .attention import RelativePositionSelfAttention
from .config import ConformerAEDConfig
from .frontend import VGGFrontend


class FeedForward(nn.Module):
    """``scale * dropout(W2 dropout(swish(W1 LayerNorm(x))))``; ``scale`` is 0.5 (half-step)."""

    def __init__(self, d_model: int, ff_dim: int, dropout: float, scale: float = 0.5) -> None:
        super().__init__()
        self.scale = scale
        self.norm = nn.LayerNorm(d_model)
        self.expand = nn.Linear(d_model, ff_dim)
        self.activation = nn.SiLU()
        self.inner_dropout = nn.Dropout(dropout)
        self.contract = nn.Linear(ff_dim, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, frames, d_model)`` -> the residual update, same shape."""
        hidden = self.inner_dropout(self.activation(self.expand(self.norm(x))))
        return self.scale * self.dropout(self.contract(hidden))


class SelfAttentionBranch(nn.Module):
    """LayerNorm -> :class:`RelativePositionSelfAttention` (child ``attention``) -> dropout."""

    def __init__(self, d_model: int, heads: int, rel_pos_clip: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.attention = RelativePositionSelfAttention(d_model, heads, rel_pos_clip, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``(batch, frames, d_model)`` and ``(batch,)`` lengths -> the residual update."""
        return self.dropout(self.attention(self.norm(x), lengths))


class ConvolutionModule(nn.Module):
    """LayerNorm, pointwise conv + GLU, depthwise conv, BatchNorm, SiLU, pointwise conv, dropout.

    Padded frames are zeroed before the depthwise convolution, so padding never reaches valid
    frames, and BatchNorm statistics are taken over valid frames only. Even kernels are allowed:
    ``(k - 1) // 2`` frames of padding on the left, ``k // 2`` on the right.
    """

    def __init__(self, d_model: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.norm = nn.LayerNorm(d_model)
        self.pointwise_in = nn.Conv1d(d_model, 2 * d_model, kernel_size=1)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel_size=kernel_size, groups=d_model)
        self.batch_norm = nn.BatchNorm1d(d_model)
        self.activation = nn.SiLU()
        self.pointwise_out = nn.Conv1d(d_model, d_model, kernel_size=1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``(batch, frames, d_model)`` and ``(batch,)`` lengths -> the residual update."""
        valid = valid_mask(lengths, x.shape[1])
        hidden = F.glu(self.pointwise_in(self.norm(x).transpose(1, 2)), dim=1)  # (batch, d_model, frames)
        hidden = hidden.masked_fill(~valid[:, None, :], 0.0)
        hidden = self.depthwise(F.pad(hidden, ((self.kernel_size - 1) // 2, self.kernel_size // 2)))
        hidden = self._normalise_valid_frames(hidden.transpose(1, 2), valid)  # (batch, frames, d_model)
        hidden = self.pointwise_out(self.activation(hidden).transpose(1, 2)).transpose(1, 2)
        return self.dropout(hidden)

    def _normalise_valid_frames(self, hidden: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """BatchNorm over the valid frames of ``(batch, frames, d_model)``; padded frames become 0."""
        normalised = torch.zeros_like(hidden)
        normalised[valid] = self.batch_norm(hidden[valid])
        return normalised


class ConformerBlock(nn.Module):
    """``x += ffn1(x); x += self_attn(x); x += conv(x); x += ffn2(x); x = final_norm(x)``."""

    def __init__(self, config: ConformerAEDConfig) -> None:
        super().__init__()
        self.ffn1 = FeedForward(config.d_model, config.ff_dim, config.dropout)
        self.self_attn = SelfAttentionBranch(
            config.d_model, config.heads, config.rel_pos_clip, config.dropout
        )
        self.conv = ConvolutionModule(config.d_model, config.conv_kernel, config.dropout)
        self.ffn2 = FeedForward(config.d_model, config.ff_dim, config.dropout)
        self.final_norm = nn.LayerNorm(config.d_model)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``(batch, frames, d_model)`` and ``(batch,)`` lengths -> ``(batch, frames, d_model)``."""
        x = x + self.ffn1(x)
        x = x + self.self_attn(x, lengths)
        x = x + self.conv(x, lengths)
        x = x + self.ffn2(x)
        return self.final_norm(x)


class SinusoidalPositions(nn.Module):
    """Adds the absolute sinusoidal encoding of Vaswani et al. to ``(batch, frames, d_model)``."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.d_model = d_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, frames, d_model)`` -> same shape, positions added."""
        positions = torch.arange(x.shape[1], device=x.device, dtype=x.dtype)[:, None]
        frequencies = torch.exp(
            torch.arange(0, self.d_model, 2, device=x.device, dtype=x.dtype)
            * (-math.log(10000.0) / self.d_model)
        )
        encoding = torch.zeros(x.shape[1], self.d_model, device=x.device, dtype=x.dtype)
        encoding[:, 0::2] = torch.sin(positions * frequencies)
        encoding[:, 1::2] = torch.cos(positions * frequencies[: self.d_model // 2])
        return x + encoding


class ConformerEncoder(nn.Module):
    """Frontend, optional absolute positions, dropout, then ``blocks`` Conformer blocks."""

    def __init__(self, config: ConformerAEDConfig) -> None:
        super().__init__()
        self.frontend = VGGFrontend(
            config.n_mels, config.frontend_channels, config.time_pools, config.d_model
        )
        self.absolute_positions = SinusoidalPositions(config.d_model) if config.abs_pos else None
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(ConformerBlock(config) for _ in range(config.blocks))

    def output_lengths(self, feature_lengths: torch.Tensor) -> torch.Tensor:
        """Encoder frames for ``feature_lengths (batch,)`` input frames; ``(batch,)``."""
        return self.frontend.output_lengths(feature_lengths)

    @overload
    def forward(
        self, features: torch.Tensor, feature_lengths: torch.Tensor, return_block_outputs: None = None
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    @overload
    def forward(
        self, features: torch.Tensor, feature_lengths: torch.Tensor, return_block_outputs: Collection[int]
    ) -> tuple[torch.Tensor, torch.Tensor, dict[int, torch.Tensor]]: ...

    def forward(
        self,
        features: torch.Tensor,
        feature_lengths: torch.Tensor,
        return_block_outputs: Collection[int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, dict[int, torch.Tensor]]:
        """Encode log-mel features.

        Args:
            features: ``(batch, frames, n_mels)``.
            feature_lengths: ``(batch,)`` int64 valid frames.
            return_block_outputs: 0-based block indices whose outputs to return as well; ``None``
                returns just the pair.

        Returns:
            ``(out, lengths)``: ``(batch, enc_frames, d_model)`` with padded frames zeroed and
            ``(batch,)``; plus ``{block index: (batch, enc_frames, d_model)}`` when
            ``return_block_outputs`` is given (an empty collection gives an empty dict).
        """
        self._check_lengths(features, feature_lengths)
        x, lengths = self.frontend(features, feature_lengths)
        if self.absolute_positions is not None:
            x = self.absolute_positions(x)
        x = self.dropout(x)
        wanted = set(return_block_outputs or ())
        block_outputs: dict[int, torch.Tensor] = {}
        for index, block in enumerate(self.blocks):
            x = block(x, lengths)
            if index in wanted:
                block_outputs[index] = x
        x = x.masked_fill(~valid_mask(lengths, x.shape[1])[..., None], 0.0)
        if return_block_outputs is None:
            return x, lengths
        return x, lengths, block_outputs

    def _check_lengths(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> None:
        if features.dim() != 3 or feature_lengths.shape != features.shape[:1]:
            raise ValueError(
                f"expected features (batch, frames, n_mels) and feature_lengths (batch,); got "
                f"{tuple(features.shape)} and {tuple(feature_lengths.shape)}"
            )
        longest = int(feature_lengths.max())
        if longest > features.shape[1]:
            raise ValueError(
                f"feature_lengths say {longest} frames but features have only {features.shape[1]}; "
                "lengths count valid frames of the padded batch"
            )
        shortest = int(feature_lengths.min())
        if int(self.output_lengths(feature_lengths.min()[None])) < 1:
            downsampling = math.prod(self.frontend.time_pools)
            raise ValueError(
                f"an input of {shortest} frames leaves no encoder frame after the frontend's "
                f"{downsampling}x time downsampling; drop utterances shorter than {downsampling} frames"
            )
