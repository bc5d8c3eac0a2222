"""A decoder that reads the encoder output in order, without training: for checking the decoder's
probes (gradient maps, cross-attention) on random models."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

PINNED_PATTERNS = ("diagonal", "reversed")


@contextmanager
def pin_cross_attention(model: nn.Module, pattern: str = "diagonal") -> Iterator[None]:
    """Pin the cross-attention of attnprobe's :class:`~attnprobe.models.ConformerAED` to a
    one-hot path over the encoder output: ``"diagonal"`` (label position ``s`` of ``P`` on frame
    ``round((T-1) s / (P-1))``) or ``"reversed"`` (its mirror), with the model's own hard
    cross-attention switch. A random model then has a decoder that aligns: its cross-attention is
    monotone, and its gradient maps put label ``s`` where the encoder keeps the content of that
    frame.

    Raises:
        TypeError: the model is not a ConformerAED (other families have no such switch).
        ValueError: an unknown pattern.
    """
    if pattern not in PINNED_PATTERNS:
        raise ValueError(f"pattern {pattern!r} is not one of {PINNED_PATTERNS}")
    attention = getattr(getattr(model, "decoder", None), "cross_attn", None)
    if attention is None or not hasattr(attention, "hard_center_weight"):
        raise TypeError(f"{type(model).__name__} has no hard cross-attention switch to pin; "
                        f"pin_cross_attention works on attnprobe.models.ConformerAED")
    saved = (attention.hard_center_weight, attention.hard_target)
    attention.hard_center_weight, attention.hard_target = 1.0, pattern
    try:
        yield
    finally:
        attention.hard_center_weight, attention.hard_target = saved
