"""What every reversal probe shares: the result base class, rank correlation, and input checks.

Probe results are small dataclasses holding per-sequence numbers (so that a padded batch can be
compared with its sequences run one by one) plus derived summaries. :class:`ProbeResult` gives them
``summary()`` / ``str()``, ``to_dict()`` (plain JSON values, derived summaries included) and
``plot()``.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar, Union

import numpy as np
import torch
from torch import nn

from attnprobe.adapters import find_adapter
from attnprobe.batch import SpeechBatch
from attnprobe.errors import InputError
from attnprobe.records import Record
from attnprobe.reducers import StreamingReducer

MINIMUM_POSITIONS = 4
"""Fewest valid positions (labels or frames) the probes rank: two distinct values always correlate
perfectly and three have only six orders, so fewer than four carry next to no evidence."""

REVERSAL_THRESHOLD = 0.5
"""A rank correlation at or below ``-REVERSAL_THRESHOLD`` counts as reversed, at or above
``+REVERSAL_THRESHOLD`` as monotone. An unflipped trained model scores close to +1 and a flipped
one close to -1; untrained models scatter around values that depend on the probe, so 0.5 leaves a
wide margin on both sides."""

TIE_DECIMALS = 6
"""Positions (frames) are rounded to this many decimals before ranking, so that values equal up to
float noise rank as ties whichever batch layout computed them."""

RecordSource = Union[Mapping[str, Record], Iterable[Record]]
"""An :class:`attnprobe.Trace` (an iterable of records), ``{site name: Record}``, or records."""


class ProbeResult(ABC):
    """Base of all probe results. Subclasses are dataclasses; names in ``derived`` are properties
    that :meth:`to_dict` includes next to the fields."""

    derived: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def summary(self) -> str:
        """A few readable lines: the verdict and the numbers behind it."""

    def plot(self) -> Any:
        """A matplotlib ``Figure`` of the result (needs ``pip install attnprobe[plot]``)."""
        # Imported on use: the plot module imports every result class.
        from . import plot

        return plot.plot_result(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable values: arrays become nested lists, NaN becomes ``None``."""
        assert dataclasses.is_dataclass(self)
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        values.update({name: getattr(self, name) for name in self.derived})
        return {name: to_json(value) for name, value in values.items()}

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.summary().splitlines()[0]}>"


def to_json(value: Any) -> Any:
    """``value`` with arrays, tensors, numpy scalars and nested results turned into JSON values."""
    if isinstance(value, ProbeResult):
        return value.to_dict()
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return to_json(value.tolist())
    if isinstance(value, np.generic):
        return to_json(value.item())
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, Mapping):
        return {str(key): to_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    return value


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


def records_of(source: RecordSource) -> list[Record]:
    """The records of a trace, of a ``{name: Record}`` mapping, or of an iterable of records."""
    records = getattr(source, "records", source)
    if isinstance(records, Mapping):
        return list(records.values())
    return list(records)


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


def as_speech_batch(batch: SpeechBatch | tuple) -> SpeechBatch:
    """Accept a :class:`SpeechBatch` or ``(features, lengths[, labels, label_lengths])``."""
    if isinstance(batch, SpeechBatch):
        return batch
    if isinstance(batch, (tuple, list)) and len(batch) in (2, 4):
        return SpeechBatch(*batch)
    raise InputError("pass a SpeechBatch or a tuple (features, lengths) or (features, lengths, "
                     "labels, label_lengths)")


def reversal_verdict(scores: Iterable[float], layers: Iterable[int], threshold: float
                     ) -> int | None:
    """The layer where the final run of reversed layers starts, or ``None``.

    A layer is reversed when its score is at or below ``-threshold``. Only the run that reaches the
    last layer counts: a stack that reverses and reverses back leaves its output unreversed.
    """
    turned_at: int | None = None
    for score, layer in zip(scores, layers):
        if score <= -threshold:
            if turned_at is None:
                turned_at = layer
        else:
            turned_at = None
    return turned_at


def find_adapter_for(model: nn.Module, adapter: Any = None) -> Any:
    """``adapter`` if given (an instance, or a class to bind to ``model``), else the one
    :func:`attnprobe.adapters.find_adapter` picks."""
    if adapter is None:
        return find_adapter(model)
    return adapter(model) if isinstance(adapter, type) else adapter


@contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[None]:
    """Switch ``model`` to eval mode (no dropout, fixed batch-norm statistics), then restore every
    submodule's own training flag."""
    flags = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, training in flags.items():
            module.training = training
