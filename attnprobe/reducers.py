"""Streaming reducers: statistics computed while the forward pass runs, so full tensors such as
``(layers, heads, T, T)`` attention never have to be stored.

A reducer sees every tensor a trace captures, the moment it is produced, and keeps only what it
needs. Pass reducers to ``attnprobe.trace(..., reducers=[...], store=False)`` for constant memory::

    counter = CallCounter()
    with attnprobe.trace(model, reducers=[counter], store=False):
        model(features, lengths)
    counter.counts   # {"encoder.0.self_attn": {"attention": 1, "output": 1}, ...}
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from .records import Captured, Record
from .sites import Site


@runtime_checkable
class StreamingReducer(Protocol):
    """Anything with an ``update`` method is a reducer."""

    def update(self, site: Site, what: str, captured: Captured) -> None:
        """Fold one captured tensor into the running statistics.

        Args:
            site: where it was captured.
            what: ``"output"``, ``"input"`` or ``"attention"``.
            captured: the tensor with its valid lengths (see :class:`attnprobe.records.Captured`).
        """


class CallCounter:
    """Counts captures per site and kind; the smallest useful reducer (and a test double)."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def update(self, site: Site, what: str, captured: Captured) -> None:
        self.counts[site.name][what] += 1


def replay(records: Iterable[Record], reducer: StreamingReducer) -> None:
    """Feed stored records to ``reducer`` call by call: each call's input, then its output, then
    its attention, as a live trace would have. This is how the streaming probes give their
    full-tensor results: both come from the same code."""
    for record in records:
        for call in range(record.calls):
            for what, captured in (("input", record.inputs), ("output", record.outputs),
                                   ("attention", record.attentions)):
                if call < len(captured):
                    reducer.update(record.site, what, captured[call])
