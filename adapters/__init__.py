"""Adapters: the only place in attnprobe that knows model families.

Installed as ``attnprobe.adapters`` (the source lives in the top-level ``adapters/`` folder).
An adapter does two separate jobs, and each has its own class:

- the **site map** (:class:`SiteMap`, :mod:`.site_map`): which modules of the model are blocks,
  self- and cross-attention, feed-forward, convolution and frontend, how attention probabilities
  are obtained from that family's kernels, and how valid lengths are read from a padded batch.
  This is all :func:`attnprobe.trace` needs.
- the **runner** (:class:`Runner`, :mod:`.runner`): how to run a
  :class:`~attnprobe.batch.SpeechBatch` through the model, teacher-forced label log-probabilities,
  CTC log-probabilities, the frame shift and the subsampling factor. This is what the probes need
  on top of the trace, because they run the model themselves.

:func:`resolve_adapter` pairs the two for a model: the site map from the registry (each built-in
family is one module here and registers itself; :func:`register_adapter` adds yours) and its
family's runner, unless the caller brings a runner of their own. A model no site map matches gets
the generic one (:mod:`.generic`): its sites found by structure (:mod:`.discovery`), and the
generic Hugging Face runner (:mod:`.hf_generic`) for ``transformers`` models, or the runner the
caller passes for anything else. :func:`describe` says what was found and what was not.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from torch import nn

from attnprobe.errors import UnsupportedModelError

from .description import Description
from .runner import Runner
from .site_map import (
    LengthEntry,
    SiteBinding,
    SiteMap,
    register_adapter,
    register_builtin,
    registry,
)

# Tried in this order; each module registers its site maps at import. None imports an optional
# library (transformers, torchaudio) at module level.
_BUILTIN_MODULES = ("conformer", "hf_whisper", "hf_wav2vec2", "hf_speech2text", "hf_parakeet",
                    "torchaudio_conformer", "torchaudio_emformer", "torchaudio_wav2vec2")
for _name in _BUILTIN_MODULES:
    importlib.import_module(f"{__name__}.{_name}")


@dataclass(frozen=True)
class Adapter:
    """A model's site map and runner, bound to it: what the trace and the probes use.

    Attributes:
        site_map: where the sites are (:class:`SiteMap`).
        runner: how to run a batch (:class:`Runner`).
    """

    site_map: SiteMap
    runner: Runner

    @property
    def family(self) -> str:
        return self.site_map.family


def find_site_map(model: nn.Module, runner: Runner | None = None, example: Any = None
                  ) -> SiteMap:
    """The site map for ``model``, bound to it: the first registered one that matches, else the
    generic one (found by structure; ``runner`` and ``example`` let discovery run the model).

    Raises:
        UnsupportedModelError: no site map matches and discovery finds no attention stack; the
            message lists the supported families and how to register one.
    """
    site_map_class = registry.find(model)
    if site_map_class is not None:
        return site_map_class(model)
    from .generic import discover_site_map

    discovered = discover_site_map(model, runner, example)
    if discovered is not None:
        return discovered
    raise UnsupportedModelError(
        f"attnprobe has no adapter for {type(model).__module__}.{type(model).__qualname__}, and "
        f"found no stack of blocks with attention in it (attnprobe.describe(model) shows what it "
        f"looked for). Supported families: {', '.join(registry.families())}. To add yours, "
        f"subclass attnprobe.adapters.SiteMap (a map from modules to sites) and decorate it with "
        f"@attnprobe.adapters.register_adapter; see the README section 'Adding an adapter'."
    )


def resolve_site_map(model: nn.Module, adapter: Any = None, runner: Runner | None = None,
                     example: Any = None) -> SiteMap:
    """The site map to trace ``model`` with: ``None`` finds it; a :class:`SiteMap` class is bound
    to ``model``; a :class:`SiteMap` or :class:`Adapter` instance is used as it is. ``runner`` and
    ``example`` (a batch) serve site maps that discover the model by running it."""
    if adapter is None:
        return find_site_map(model, runner, example)
    if isinstance(adapter, Adapter):
        return adapter.site_map
    if isinstance(adapter, type):
        return adapter.bind(model, runner=runner, example=example)
    return adapter


def resolve_adapter(model: nn.Module, adapter: Any = None, runner: Any = None,
                    example: Any = None) -> Adapter:
    """The site map and runner the probes use on ``model``.

    Args:
        adapter: ``None`` (find the site map), a :class:`SiteMap` class (bound to ``model``), a
            :class:`SiteMap` instance, or an :class:`Adapter` (used as it is).
        runner: ``None`` (the site map's family runner), a :class:`Runner` class (bound to
            ``model``) or instance.
        example: the batch the probe will run (a :class:`~attnprobe.batch.SpeechBatch`); the
            generic site map watches one forward pass of it to find the model's structure.
    """
    if isinstance(adapter, Adapter) and runner is None:
        return adapter
    if isinstance(runner, type):
        runner = runner(model)
    site_map = resolve_site_map(model, adapter, runner, example)
    return Adapter(site_map, runner if runner is not None else site_map.default_runner())


def generic_adapter(model: nn.Module, runner: Any = None, example: Any = None) -> Adapter:
    """The generic site map and runner for ``model``, even where a hand-written site map exists
    (to compare the two, or where the hand-written one does not fit a variant)."""
    from .generic import DiscoveredSites

    return resolve_adapter(model, DiscoveredSites, runner, example)


def describe(model: nn.Module, adapter: Any = None, runner: Any = None,
             example: Any = None) -> Description:
    """What attnprobe found in ``model`` and what it did not, as
    :class:`~attnprobe.adapters.description.Description` (print it). Arguments as in
    :func:`resolve_adapter`."""
    from .description import describe_adapter

    return describe_adapter(model, resolve_adapter(model, adapter, runner, example))


__all__ = [
    "Adapter",
    "Description",
    "LengthEntry",
    "Runner",
    "SiteBinding",
    "SiteMap",
    "describe",
    "find_site_map",
    "generic_adapter",
    "register_adapter",
    "register_builtin",
    "registry",
    "resolve_adapter",
    "resolve_site_map",
]
