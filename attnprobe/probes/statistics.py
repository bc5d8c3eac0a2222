"""The statistics the reversal probes rank with: Spearman correlation with position, centre of
mass, and the fewest positions a ranking needs."""

from __future__ import annotations

import math

import numpy as np
import torch

from attnprobe.errors import InputError

MINIMUM_POSITIONS = 4
"""Fewest valid positions (labels or frames) the probes rank: two distinct values always correlate
perfectly and three have only six orders, so fewer than four carry next to no evidence."""

TIE_DECIMALS = 6
"""Positions (frames) are rounded to this many decimals before ranking, so that values equal up to
float noise rank as ties whichever batch layout computed them."""


def rank_correlation_with_position(values: np.ndarray) -> float:
    """Spearman's rank correlation between ``values (n,)`` and their positions ``0 .. n-1``.

    +1 when the values increase with position, -1 when they decrease; ties get average ranks.
    Constant values carry no order and give 0.
    """
    values = np.round(np.asarray(values, dtype=np.float64), TIE_DECIMALS)
    count = values.shape[0]
    if count < 2:
        raise InputError(f"a rank correlation needs at least 2 values, got {count}")
    ranks = _average_ranks(values)
    positions = np.arange(count, dtype=np.float64)
    ranks -= ranks.mean()
    positions -= positions.mean()
    spread = math.sqrt(float((ranks**2).sum()) * float((positions**2).sum()))
    if spread == 0.0:
        return 0.0
    return float(np.clip((ranks * positions).sum() / spread, -1.0, 1.0))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    _, first, counts = np.unique(values[order], return_index=True, return_counts=True)
    ranks = np.empty(values.shape[0], dtype=np.float64)
    ranks[order] = np.repeat(first + (counts - 1) / 2.0, counts)
    return ranks


def centre_of_mass(weights: torch.Tensor) -> torch.Tensor:
    """Mean position along the last axis of non-negative ``weights (..., positions)``; ``(...)``.

    Rows without mass get the middle position (no evidence either way).
    """
    positions = torch.arange(weights.shape[-1], device=weights.device, dtype=weights.dtype)
    mass = weights.sum(-1)
    middle = (weights.shape[-1] - 1) / 2.0
    centre = (weights * positions).sum(-1) / mass.clamp_min(torch.finfo(weights.dtype).tiny)
    return torch.where(mass > 0, centre, torch.full_like(centre, middle))


def require_positions(counts: torch.Tensor | list[int], what: str, fix: str) -> None:
    """Raise :class:`InputError` when a sequence has fewer than :data:`MINIMUM_POSITIONS`.

    Args:
        counts: valid positions per sequence, ``(batch,)``.
        what: what is counted, e.g. ``"encoder frames"``.
        fix: how to get more, e.g. ``"use inputs of at least 18 feature frames"``.
    """
    values = [int(count) for count in counts]
    short = [index for index, count in enumerate(values) if count < MINIMUM_POSITIONS]
    if short:
        index = short[0]
        raise InputError(
            f"sequence {index} has {values[index]} valid {what}, but the reversal probes need at "
            f"least {MINIMUM_POSITIONS} (a rank correlation over fewer says next to nothing); "
            f"{fix}")
