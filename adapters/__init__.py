"""Adapters: the only place in attnprobe that knows model families.

Installed as ``attnprobe.adapters`` (the source lives in the top-level ``adapters/`` folder).
Each built-in family is one module here; :func:`find_adapter` picks the adapter for a model, and
:func:`register_adapter` adds your own (see :mod:`attnprobe.adapters.base` for an example).
"""

from __future__ import annotations

import importlib

from torch import nn

from attnprobe.errors import UnsupportedModelError

from .base import Adapter, LengthEntry, SiteBinding, register_adapter, registry

# Tried in this order; each module registers its adapters at import. None imports an optional
# library (transformers, torchaudio) at module level.
_BUILTIN_MODULES = ("conformer", "hf_whisper", "hf_wav2vec2", "hf_speech2text", "hf_parakeet",
                    "torchaudio_conformer", "torchaudio_emformer", "torchaudio_wav2vec2", "generic",
                    "hf_generic")
for _name in _BUILTIN_MODULES:
    importlib.import_module(f"{__name__}.{_name}")


def find_adapter(model: nn.Module) -> Adapter:
    """The adapter for ``model``, bound to it.

    Raises:
        UnsupportedModelError: no adapter matches and the generic fallback finds no attention
            module; the message lists the supported families and how to register an adapter.
    """
    adapter_class = registry.find(model)
    if adapter_class is not None:
        return adapter_class(model)
    fallback = _generic_fallback(model)
    if fallback is not None:
        return fallback
    raise UnsupportedModelError(
        f"attnprobe has no adapter for {type(model).__module__}.{type(model).__qualname__}, and "
        f"found no torch.nn.MultiheadAttention or Hugging Face attention module in it to fall back "
        f"on. Supported families: {', '.join(registry.families())}. To add yours, subclass "
        f"attnprobe.adapters.Adapter (a map from modules to sites) and decorate it with "
        f"@attnprobe.adapters.register_adapter; see the README section 'Adding an adapter'."
    )


def _generic_fallback(model: nn.Module) -> Adapter | None:
    if "generic" not in _BUILTIN_MODULES:
        return None
    generic = importlib.import_module(f"{__name__}.generic")
    return generic.infer_adapter(model)


__all__ = [
    "Adapter",
    "LengthEntry",
    "SiteBinding",
    "find_adapter",
    "register_adapter",
    "registry",
]
