"""What an adapter is: data saying where a model family keeps its sites, plus the few functions
that data cannot express.

Adding a model family means writing one module in ``adapters/`` with a subclass of :class:`Adapter`
and calling :func:`attnprobe.adapters.register_adapter` on it::

    from attnprobe.adapters import Adapter, SiteBinding, register_adapter
    from attnprobe.sites import Site

    @register_adapter
    class MyModelAdapter(Adapter):
        family = "my-model"

        @classmethod
        def matches(cls, model):
            return type(model).__name__ == "MyModel"

        def bindings(self):
            return [SiteBinding(Site(f"encoder.{i}", "block", "encoder", i, f"layers.{i}"),
                                self.model.layers[i]) for i in range(len(self.model.layers))]
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from attnprobe.batch import SpeechBatch
from attnprobe.capture import AttentionCapture
from attnprobe.errors import CapabilityError
from attnprobe.sites import Site

LengthFunction = Callable[[tuple, Mapping[str, Any]], Mapping[str, torch.Tensor]]
"""Maps a forward call's ``(args, kwargs)`` to valid lengths per axis name.

Axis names: ``"features"`` (frontend input frames), ``"encoder"`` (encoder frames), ``"decoder"``
(label positions). Each value is ``(batch,)`` int64."""


@dataclass
class SiteBinding:
    """A site together with how to capture its tensors.

    Attributes:
        site: the site's description.
        module: the module whose forward input / output are the site's input / output.
        output_module: hook this module for the output instead (e.g. a :class:`~attnprobe.taps.Tap`
            that the model calls with the tensor); defaults to ``module``.
        output_index: element of a tuple output holding the hidden state.
        input_position / input_name: where the hidden-state input sits in the forward call.
        batch_first: ``False`` when the module's tensors are ``(frames, batch, features)``.
        attention: how to obtain attention probabilities (attention sites only).
    """

    site: Site
    module: nn.Module
    output_module: nn.Module | None = None
    output_index: int = 0
    input_position: int = 0
    input_name: str | None = "hidden_states"
    batch_first: bool = True
    attention: AttentionCapture | None = None


@dataclass
class LengthEntry:
    """A module whose forward call reveals the valid lengths (usually the model itself)."""

    module: nn.Module
    lengths: LengthFunction


class Adapter(ABC):
    """Knows one model family. Instances are bound to one model.

    Subclasses set ``family`` and implement :meth:`matches` and :meth:`bindings`; they add
    :meth:`length_entries` when the model takes padded batches, and may add family-specific
    capabilities used by probes (e.g. teacher-forced label log-probabilities).
    """

    family: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.notes: list[str] = []

    @classmethod
    @abstractmethod
    def matches(cls, model: nn.Module) -> bool:
        """Whether this adapter knows ``model``. Must not import optional libraries eagerly."""

    @abstractmethod
    def bindings(self) -> list[SiteBinding]:
        """Every site of the model, in forward order."""

    def length_entries(self) -> list[LengthEntry]:
        """Modules whose calls reveal valid lengths; empty when the model takes no padding."""
        return []

    # Capabilities used by probes. A family that lacks one says so with an error naming the
    # alternative; a family that has it overrides the method.

    def run(self, batch: SpeechBatch) -> Any:
        """One forward pass of the model on ``batch`` (teacher-forced when it carries labels)."""
        raise CapabilityError(f"the {self.family} adapter cannot run a batch by itself; call the "
                              f"model yourself inside attnprobe.trace(...)")

    def label_log_probs(self, batch: SpeechBatch) -> torch.Tensor:
        """Teacher-forced ``log p(a_s | a_<s, X)`` per reference label, ``(batch, labels)``.

        Differentiable with respect to ``batch.inputs``; 0 at padded label positions.
        """
        raise CapabilityError(f"the {self.family} adapter has no teacher-forced label "
                              f"probabilities; gradient alignment needs a decoder or CTC head")

    def ctc_log_probs(self, batch: SpeechBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """CTC log-posteriors ``(batch, frames, vocab)`` and valid frames ``(batch,)``.

        Differentiable with respect to ``batch.inputs``.
        """
        raise CapabilityError(f"the {self.family} adapter has no CTC output; use "
                              f"label_log_probs for attention decoders")

    @property
    def subsampling(self) -> int:
        """Input frames (of ``batch.inputs``) per output frame of the encoder."""
        raise CapabilityError(f"the {self.family} adapter does not know its subsampling factor")

    @property
    def has_decoder(self) -> bool:
        """Whether the model has an attention decoder (cross-attention) to probe."""
        return any(binding.site.kind == "cross_attn" for binding in self.bindings())

    @property
    def frame_shift_seconds(self) -> float:
        """Seconds between two frames of ``batch.inputs`` (0.01 for 10 ms features)."""
        return 0.01


@dataclass
class AdapterRegistry:
    """Adapters tried in order; the first whose ``matches`` says yes wins."""

    adapters: list[type[Adapter]] = field(default_factory=list)

    def register(self, adapter: type[Adapter], first: bool = True) -> type[Adapter]:
        if adapter in self.adapters:
            self.adapters.remove(adapter)
        if first:
            self.adapters.insert(0, adapter)
        else:
            self.adapters.append(adapter)
        return adapter

    def find(self, model: nn.Module) -> type[Adapter] | None:
        for adapter in self.adapters:
            if adapter.matches(model):
                return adapter
        return None

    def families(self) -> list[str]:
        return [adapter.family for adapter in self.adapters]


registry = AdapterRegistry()
"""The process-wide registry; built-in adapters append themselves when their module is imported."""


def register_adapter(adapter: type[Adapter]) -> type[Adapter]:
    """Register ``adapter`` ahead of the built-in ones (usable as a class decorator)."""
    return registry.register(adapter, first=True)


def register_builtin(adapter: type[Adapter]) -> type[Adapter]:
    """Append a built-in adapter (tried after any the user registered)."""
    return registry.register(adapter, first=False)
