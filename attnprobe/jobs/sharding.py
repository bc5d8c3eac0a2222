"""Deterministic shards of a job, balanced by work: each rank of a distributed run computes the
same shards from the same list, so no rank needs to be told which items are its own.

Longest processing time first: items in decreasing weight (audio seconds; ties by position) go,
one by one, to the rank with the least work so far (ties to the lowest rank). Every rank's total
is then within one item's weight of the lightest rank's, and at most 4/3 of the best possible
largest shard.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence


def balanced_shards(weights: Sequence[float], ranks: int) -> list[list[int]]:
    """Indices of ``weights`` for each of ``ranks`` shards, each shard in increasing index order.

    Args:
        weights: the work of each item (e.g. audio duration in seconds), all >= 0.
        ranks: number of shards (>= 1).
    """
    if ranks < 1:
        raise ValueError(f"ranks must be at least 1, got {ranks}")
    shards: list[list[int]] = [[] for _ in range(ranks)]
    loads = [(0.0, rank) for rank in range(ranks)]
    for index in sorted(range(len(weights)), key=lambda position: (-weights[position], position)):
        load, rank = heapq.heappop(loads)
        shards[rank].append(index)
        heapq.heappush(loads, (load + float(weights[index]), rank))
    return [sorted(shard) for shard in shards]
