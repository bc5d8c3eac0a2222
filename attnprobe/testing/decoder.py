"""A decoder that reads the encoder output in order, without training: for checking the decoder's
probes (gradient maps, cross-attention) on random models."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

PINNED_PATTERNS = ("diagonal", "reversed")


@contextmanager
def pin_cross_attention(model: nn.Module, pattern: str = "diagonal",
                        channels: int | None = None) -> Iterator[None]:
    """Pin the cross-attention of attnprobe's :class:`~attnprobe.models.ConformerAED` to a
    one-hot path over the encoder output: ``"diagonal"`` (label position ``s`` of ``P`` on frame
    ``round((T-1) s / (P-1))``) or ``"reversed"`` (its mirror), with the model's own hard
    cross-attention switch. A random model then has a decoder that aligns: its cross-attention is
    monotone, and its gradient maps put label ``s`` where the encoder keeps the content of that
    frame.

    Args:
        model: a ConformerAED.
        pattern: one of :data:`PINNED_PATTERNS`.
        channels: ``None`` (default): the decoder reads every channel of the encoder output.
            ``k``: it reads channels ``0 .. k-1`` only (the others are zeroed on the way into the
            teacher-forced decoder), as a trained decoder reads a subspace of the encoder output;
            with :func:`~attnprobe.testing.plant_branch_reversal` of a ``fraction`` of ``k`` out
            of the width, the decoder then reads the reversed content while the unreversed
            residual holds most of the energy (a reversal only the decoder's probes see).

    Raises:
        TypeError: the model is not a ConformerAED (other families have no such switch).
        ValueError: an unknown pattern, or ``channels`` below 1.
    """
    if pattern not in PINNED_PATTERNS:
        raise ValueError(f"pattern {pattern!r} is not one of {PINNED_PATTERNS}")
    if channels is not None and channels < 1:
        raise ValueError(f"channels is how many encoder-output channels the decoder reads "
                         f"(at least 1), or None for all; got {channels}")
    decoder = getattr(model, "decoder", None)
    attention = getattr(decoder, "cross_attn", None)
    if attention is None or not hasattr(attention, "hard_center_weight"):
        raise TypeError(f"{type(model).__name__} has no hard cross-attention switch to pin; "
                        f"pin_cross_attention works on attnprobe.models.ConformerAED")
    saved = (attention.hard_center_weight, attention.hard_target)
    handle = None if channels is None else \
        decoder.register_forward_pre_hook(_reading_first(channels), with_kwargs=True)
    attention.hard_center_weight, attention.hard_target = 1.0, pattern
    try:
        yield
    finally:
        attention.hard_center_weight, attention.hard_target = saved
        if handle is not None:
            handle.remove()


def _reading_first(channels: int) -> Callable[[nn.Module, tuple, dict], tuple[tuple, dict]]:
    """A forward pre-hook of :class:`~attnprobe.models.decoder.LSTMDecoder` that zeroes channels
    ``channels ..`` of its ``encoder_out (batch, frames, d_model)``."""

    def keep(encoder_out: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros(encoder_out.shape[-1], dtype=encoder_out.dtype,
                           device=encoder_out.device)
        mask[:channels] = 1.0
        return encoder_out * mask

    def hook(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if args:
            return (keep(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "encoder_out": keep(kwargs["encoder_out"])}

    return hook
