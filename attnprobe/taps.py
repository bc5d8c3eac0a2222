"""Identity modules placed where a tensor that no submodule returns should be visible.

A model that wants its attention probabilities to be traceable without always paying for them
calls its tap like this::

    if self.attention_tap.active:
        self.attention_tap(probabilities)          # (batch, heads, query_frames, key_frames)

``active`` is a counter, not a flag, so that nested traces of one model each switch it on and off
without stepping on each other. ``attnprobe.trace`` registers an ordinary forward hook on the tap,
so a tap behaves like any other module to hooks the user installs.
"""

from __future__ import annotations

import torch
from torch import nn


class Tap(nn.Module):
    """Returns its input unchanged; exists so that hooks can see a tensor.

    ``active`` counts the traces that currently want this tap's tensor. The model computes the
    tensor (which may cost time, e.g. explicit attention probabilities) only while it is positive.
    """

    def __init__(self) -> None:
        super().__init__()
        self.active = 0

    def forward(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor


class AttentionTap(Tap):
    """A tap for attention probabilities shaped ``(batch, heads, query_frames, key_frames)``."""
