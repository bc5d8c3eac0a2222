"""The site map: which modules of a model are its blocks, attention, feed-forward, convolution and
frontend, and how to read the valid lengths of a padded batch from its forward calls.

A site map is mostly data. Adding a model family means one module in ``adapters/`` with a
subclass of :class:`SiteMap`, registered with :func:`attnprobe.adapters.register_adapter`::

    from attnprobe.adapters import SiteBinding, SiteMap, register_adapter
    from attnprobe.sites import Site

    @register_adapter
    class MyModelSites(SiteMap):
        family = "my-model"

        @classmethod
        def matches(cls, model):
            return type(model).__name__ == "MyModel"

        def bindings(self):
            return [SiteBinding(Site(f"encoder.{i}", "block", "encoder", i, f"layers.{i}"),
                                self.model.layers[i]) for i in range(len(self.model.layers))]

How to *run* the model (a batch in, label log-probabilities out) is the runner's job
(:mod:`attnprobe.adapters.runner`); a site map names its family's runner in ``runner_class``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from attnprobe.capture import AttentionCapture
from attnprobe.sites import Site

from .runner import Runner

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


class SiteMap(ABC):
    """Knows where one model family keeps its sites. Instances are bound to one model.

    Subclasses set ``family`` (and ``runner_class``, the family's :class:`Runner`) and implement
    :meth:`matches` and :meth:`bindings`; they add :meth:`length_entries` when the model takes
    padded batches.
    """

    family: ClassVar[str] = ""
    description: ClassVar[str] = ""
    runner_class: ClassVar[type[Runner]] = Runner

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.notes: list[str] = []

    @classmethod
    def bind(cls, model: nn.Module, runner: Runner | None = None,
             example: Any = None) -> SiteMap:
        """This site map bound to ``model``. ``runner`` and ``example`` (a batch the probes will
        run) are for site maps that discover the model by running it; others ignore them."""
        return cls(model)

    def default_runner(self) -> Runner:
        """The runner of this site map's family, bound to the model."""
        return self.runner_class(self.model)

    @classmethod
    @abstractmethod
    def matches(cls, model: nn.Module) -> bool:
        """Whether this site map knows ``model``. Must not import optional libraries eagerly."""

    @abstractmethod
    def bindings(self) -> list[SiteBinding]:
        """Every site of the model, in forward order."""

    def length_entries(self) -> list[LengthEntry]:
        """Modules whose calls reveal valid lengths; empty when the model takes no padding."""
        return []

    def lengths_for_inputs(self, input_lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        """Valid lengths per axis (``"features"``, ``"encoder"``) of a batch whose inputs have
        ``input_lengths`` valid frames, for models whose forward call does not reveal them (an
        encoder without a padding mask). A trace told the input lengths prefers these over what
        :meth:`length_entries` read from the call. Default: none."""
        return {}

    def binding(self, name: str) -> SiteBinding | None:
        """The binding of the site called ``name``, or ``None``."""
        return next((binding for binding in self.bindings() if binding.site.name == name), None)

    @property
    def has_decoder(self) -> bool:
        """Whether the model has an attention decoder (cross-attention) to probe."""
        return any(binding.site.kind == "cross_attn" for binding in self.bindings())

    @property
    def encoder_layers(self) -> list[int]:
        """Indices of the encoder block sites (``encoder.<i>``), in order."""
        return sorted(binding.site.layer for binding in self.bindings()
                      if binding.site.kind == "block" and binding.site.stack == "encoder"
                      and binding.site.layer is not None)


@dataclass
class SiteMapRegistry:
    """Site maps tried in order; the first whose ``matches`` says yes wins."""

    site_maps: list[type[SiteMap]] = field(default_factory=list)

    def register(self, site_map: type[SiteMap], first: bool = True) -> type[SiteMap]:
        if site_map in self.site_maps:
            self.site_maps.remove(site_map)
        if first:
            self.site_maps.insert(0, site_map)
        else:
            self.site_maps.append(site_map)
        return site_map

    def find(self, model: nn.Module) -> type[SiteMap] | None:
        for site_map in self.site_maps:
            if site_map.matches(model):
                return site_map
        return None

    def families(self) -> list[str]:
        return [site_map.family for site_map in self.site_maps]


registry = SiteMapRegistry()
"""The process-wide registry; built-in site maps append themselves when their module is imported."""


def register_adapter(site_map: type[SiteMap]) -> type[SiteMap]:
    """Register ``site_map`` ahead of the built-in ones (usable as a class decorator)."""
    return registry.register(site_map, first=True)


def register_builtin(site_map: type[SiteMap]) -> type[SiteMap]:
    """Append a built-in site map (tried after any the user registered)."""
    return registry.register(site_map, first=False)
