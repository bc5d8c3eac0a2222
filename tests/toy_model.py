"""A two-block toy encoder and its adapter: exercises the hook layer without any real family."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from attnprobe.adapters import LengthEntry, SiteBinding, SiteMap
from attnprobe.capture import TapAttention
from attnprobe.sites import Site
from attnprobe.taps import AttentionTap


class ToyAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.attention_tap = AttentionTap()

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        batch, frames, dim = x.shape
        q, k, v = self.qkv(x).view(batch, frames, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
        padded = torch.arange(frames)[None, :] >= lengths[:, None]
        scores = scores.masked_fill(padded[:, None, None, :], float("-inf"))
        probabilities = scores.softmax(-1)
        if self.attention_tap.active:
            self.attention_tap(probabilities)
        mixed = (probabilities @ v).transpose(1, 2).reshape(batch, frames, dim)
        return self.out(mixed)


class ToyBlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.self_attn = ToyAttention(dim, heads)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(x, lengths)
        return x + self.ffn(x)


class ToyEncoder(nn.Module):
    """``forward(features (batch, frames, in_dim), lengths (batch,)) -> (batch, frames, dim)``."""

    def __init__(self, in_dim: int = 6, dim: int = 8, heads: int = 2, blocks: int = 2) -> None:
        super().__init__()
        self.frontend = nn.Linear(in_dim, dim)
        self.blocks = nn.ModuleList(ToyBlock(dim, heads) for _ in range(blocks))

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.frontend(features)
        for block in self.blocks:
            x = block(x, lengths)
        return x


class ToyAdapter(SiteMap):
    family = "toy"

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return isinstance(model, ToyEncoder)

    def bindings(self) -> list[SiteBinding]:
        found = [SiteBinding(Site("encoder.frontend", "frontend", "encoder", None, "frontend"),
                             self.model.frontend)]
        for layer, block in enumerate(self.model.blocks):
            path = f"blocks.{layer}"
            found += [
                SiteBinding(Site(f"encoder.{layer}", "block", "encoder", layer, path), block),
                SiteBinding(Site(f"encoder.{layer}.self_attn", "self_attn", "encoder", layer,
                                 f"{path}.self_attn"), block.self_attn,
                            attention=TapAttention(block.self_attn.attention_tap)),
                SiteBinding(Site(f"encoder.{layer}.ffn", "ffn", "encoder", layer, f"{path}.ffn"),
                            block.ffn),
            ]
        return found

    def length_entries(self) -> list[LengthEntry]:
        def lengths(args: tuple, kwargs: Mapping[str, Any]) -> dict[str, torch.Tensor]:
            return {"features": args[1], "encoder": args[1]}

        return [LengthEntry(self.model, lengths)]


def all_hooks(model: nn.Module) -> dict[str, tuple[list, list, list]]:
    """Every hook dict of every module, as lists of hook objects (to compare before and after)."""
    return {name: (list(module._forward_hooks.values()), list(module._forward_pre_hooks.values()),
                   list(module._backward_hooks.values()))
            for name, module in model.named_modules()}


def padded_batch(lengths: list[int], dim: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(len(lengths), max(lengths), dim, generator=generator)
    return features, torch.tensor(lengths)
