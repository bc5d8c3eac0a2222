"""The verdict rule: from per-block scores to the block where the encoder reversed time.

Every probe scores each block with a correlation in [-1, 1] (+1 time order kept, -1 reversed).
:func:`reversal_verdict` reads one probe's scores; :func:`combined_verdict` is the rule of
:func:`attnprobe.reversal_report` and :class:`attnprobe.FlipMonitor`, which decides between the
probes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .cross_attention import CrossAttentionMonotonicity
    from .frame_mapping import FrameMapping
    from .gradient_maps import GradientMaps

REVERSAL_THRESHOLD = 0.5
"""A rank correlation at or below ``-REVERSAL_THRESHOLD`` counts as reversed, at or above
``+REVERSAL_THRESHOLD`` as monotone. An unflipped trained model scores close to +1 and a flipped
one close to -1; untrained models scatter around values that depend on the probe, so 0.5 leaves a
wide margin on both sides."""

DECIDED_BY_FRAME_MAPPING = "frame mapping"
DECIDED_BY_DECODER = "gradient maps and cross-attention"
DECIDED_BY_NOTHING = "nothing (no probe that decides could run)"


def reversal_verdict(scores: Iterable[float], layers: Iterable[int], threshold: float
                     ) -> int | None:
    """The layer where the final run of reversed layers starts, or ``None``.

    A layer is reversed when its score is at or below ``-threshold``. Only the run that reaches the
    last layer counts: a stack that reverses and reverses back leaves its output unreversed.
    """
    reversed_at: int | None = None
    for score, layer in zip(scores, layers):
        if score <= -threshold:
            if reversed_at is None:
                reversed_at = layer
        else:
            reversed_at = None
    return reversed_at


def combined_verdict(mapping: FrameMapping | None, maps: GradientMaps | None,
                     cross: CrossAttentionMonotonicity | None) -> tuple[int | None, str]:
    """The reversed block (or ``None``) and which probes decided it.

    The frame mapping decides, unless it sees no reversal while an aligned decoder's gradient
    maps turn at a block and its cross-attention runs backwards: the residual path keeps each
    output frame's largest input derivative at home, so the frame mapping can miss a reversal that
    the label evidence shows (``docs/reproduction.md``). Without a frame mapping only that decoder
    evidence decides; without either, nothing does.
    """
    if ((mapping is None or mapping.reversed_at is None) and maps is not None and maps.aligned
            and maps.reversed_at is not None and cross is not None
            and cross.verdict == "reversed"):
        return maps.reversed_at, DECIDED_BY_DECODER
    if mapping is None:
        return None, DECIDED_BY_NOTHING
    return mapping.reversed_at, DECIDED_BY_FRAME_MAPPING
