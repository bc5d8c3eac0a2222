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
family's runner, unless the caller brings a runner of their own.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from torch import nn

from attnprobe.errors import UnsupportedModelError

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
                    "torchaudio_conformer", "torchaudio_emformer", "torchaudio_wav2vec2", "generic",
                    "hf_generic")
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


def find_site_map(model: nn.Module) -> SiteMap:
    """The site map for ``model``, bound to it.

    Raises:
        UnsupportedModelError: no site map matches and the generic fallback finds no attention
            module; the message lists the supported families and how to register one.
    """
    site_map_class = registry.find(model)
    if site_map_class is not None:
        return site_map_class(model)
    from .generic import infer_site_map

    inferred = infer_site_map(model)
    if inferred is not None:
        return inferred
    raise UnsupportedModelError(
        f"attnprobe has no adapter for {type(model).__module__}.{type(model).__qualname__}, and "
        f"found no torch.nn.MultiheadAttention or Hugging Face attention module in it to fall back "
        f"on. Supported families: {', '.join(registry.families())}. To add yours, subclass "
        f"attnprobe.adapters.SiteMap (a map from modules to sites) and decorate it with "
        f"@attnprobe.adapters.register_adapter; see the README section 'Adding an adapter'."
    )


def resolve_site_map(model: nn.Module, adapter: Any = None) -> SiteMap:
    """The site map to trace ``model`` with: ``None`` finds it; a :class:`SiteMap` class is bound
    to ``model``; a :class:`SiteMap` or :class:`Adapter` instance is used as it is."""
    if adapter is None:
        return find_site_map(model)
    if isinstance(adapter, Adapter):
        return adapter.site_map
    if isinstance(adapter, type):
        return adapter(model)
    return adapter


def resolve_adapter(model: nn.Module, adapter: Any = None, runner: Any = None) -> Adapter:
    """The site map and runner the probes use on ``model``.

    Args:
        adapter: ``None`` (find the site map), a :class:`SiteMap` class (bound to ``model``), a
            :class:`SiteMap` instance, or an :class:`Adapter` (used as it is).
        runner: ``None`` (the site map's family runner), a :class:`Runner` class (bound to
            ``model``) or instance.
    """
    if isinstance(adapter, Adapter) and runner is None:
        return adapter
    site_map = resolve_site_map(model, adapter)
    if runner is None:
        runner = site_map.runner_class(model)
    elif isinstance(runner, type):
        runner = runner(model)
    return Adapter(site_map, runner)

__all__ = [
    "Adapter",
    "LengthEntry",
    "Runner",
    "SiteBinding",
    "SiteMap",
    "find_site_map",
    "register_adapter",
    "register_builtin",
    "registry",
    "resolve_adapter",
    "resolve_site_map",
]
