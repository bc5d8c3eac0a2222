"""The base class of every probe result.

Probe results are small dataclasses holding per-sequence numbers (so that a padded batch can be
compared with its sequences run one by one) plus derived summaries. :class:`ProbeResult` gives them
``summary()`` / ``str()``, ``to_dict()`` (plain JSON values, derived summaries included) and
``plot()``.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch


class ProbeResult(ABC):
    """Base of all probe results. Subclasses are dataclasses; names in ``derived`` are properties
    that :meth:`to_dict` includes next to the fields."""

    derived: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def summary(self) -> str:
        """A few readable lines: the verdict and the numbers behind it."""

    def plot(self) -> Any:
        """A matplotlib ``Figure`` of the result (needs ``pip install 'attnprobe[plot]'``)."""
        from attnprobe.plotting.probes import probe_figure

        return probe_figure(self)

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
    if isinstance(value, ProbeResult) or (dataclasses.is_dataclass(value)
                                          and not isinstance(value, type)
                                          and callable(getattr(value, "to_dict", None))):
        return to_json(value.to_dict())
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


