"""Records: what a trace captured at one site, with the valid length of every sequence.

All hidden-state tensors are stored batch-first, ``(batch, frames, features)``, whatever layout the
model uses internally; attention probabilities are ``(batch, heads, query_frames, key_frames)``.
Every captured tensor carries the valid lengths of its time axes, so probes never average padding.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Union

import torch

from .sites import Site


@dataclass(frozen=True)
class Captured:
    """One tensor captured during one call of a site's module.

    Attributes:
        value: the tensor; hidden states ``(batch, frames, features)``, attention
            ``(batch, heads, query_frames, key_frames)``.
        lengths: ``(batch,)`` int64, valid frames along axis 1 (hidden states) or the query axis
            (attention).
        key_lengths: ``(batch,)`` valid key frames, attention only.
        lengths_known: ``False`` when the adapter could not derive lengths from the model's inputs
            (e.g. a submodule was called directly); ``lengths`` then equals the full size.
    """

    value: torch.Tensor
    lengths: torch.Tensor
    key_lengths: torch.Tensor | None = None
    lengths_known: bool = True


@dataclass
class Record:
    """Everything captured at one :class:`Site` during a trace.

    A site's module may run several times inside one trace (several forward passes, or a decoder
    stepping through labels); each run appends to the lists. The singular properties
    (``output``, ``attention``, ...) return the tensor of a single run and raise a clear error when
    there were several.
    """

    site: Site
    outputs: list[Captured] = field(default_factory=list)
    inputs: list[Captured] = field(default_factory=list)
    attentions: list[Captured] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.site.name

    @property
    def output(self) -> torch.Tensor:
        """Output of the single call, ``(batch, frames, features)``."""
        return self._single(self.outputs, "outputs").value

    @property
    def input(self) -> torch.Tensor:
        """Input of the single call, ``(batch, frames, features)``."""
        return self._single(self.inputs, "inputs").value

    @property
    def attention(self) -> torch.Tensor:
        """Attention probabilities of the single call, ``(batch, heads, query_frames, key_frames)``."""
        return self._single(self.attentions, "attentions").value

    @property
    def lengths(self) -> torch.Tensor:
        """``(batch,)`` valid frames of the output (or of the attention queries)."""
        source = self.outputs or self.attentions or self.inputs
        return self._single(source, "outputs").lengths

    @property
    def input_lengths(self) -> torch.Tensor:
        """``(batch,)`` valid frames of the input (differs from ``lengths`` for the frontend)."""
        return self._single(self.inputs, "inputs").lengths

    @property
    def key_lengths(self) -> torch.Tensor:
        """``(batch,)`` valid key frames of the single attention call."""
        lengths = self._single(self.attentions, "attentions").key_lengths
        assert lengths is not None
        return lengths

    @property
    def calls(self) -> int:
        return max(len(self.outputs), len(self.inputs), len(self.attentions))

    def _single(self, captured: list[Captured], what: str) -> Captured:
        if len(captured) == 1:
            return captured[0]
        if not captured:
            raise LookupError(
                f"site {self.site.name!r} captured no {what}: it did not run inside the trace, or "
                f"{what} were not requested (see attnprobe.trace(..., capture=...))"
            )
        raise LookupError(
            f"site {self.site.name!r} ran {len(captured)} times in this trace; pick one call with "
            f"record.{what}[i].value (and .lengths), or trace a single forward pass"
        )

    def __repr__(self) -> str:
        parts = []
        for label, items in (("output", self.outputs), ("input", self.inputs),
                             ("attention", self.attentions)):
            if items:
                shape = tuple(items[-1].value.shape)
                parts.append(f"{label}={shape}" + (f" x{len(items)}" if len(items) > 1 else ""))
        return f"Record({self.site.name!r}, {self.site.kind}, {', '.join(parts) or 'empty'})"


RecordSource = Union[Mapping[str, Record], Iterable[Record]]
"""An :class:`attnprobe.Trace` (an iterable of records), ``{site name: Record}``, or records."""


def records_of(source: RecordSource) -> list[Record]:
    """The records of a trace, of a ``{name: Record}`` mapping, or of an iterable of records."""
    records = getattr(source, "records", source)
    if isinstance(records, Mapping):
        return list(records.values())
    return list(records)
