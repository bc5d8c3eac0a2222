"""Generic-fallback finder for Hugging Face attention modules in models no adapter knows.

Any module of a ``transformers`` modeling file whose ``forward`` looks its attention function up in
the registry (``ALL_ATTENTION_FUNCTIONS``, as the attention modules of the transformers 5 code base
do) and that carries a ``config`` becomes an attention site, named by the generic rules of :mod:`attnprobe.adapters.generic`. Its probabilities come from
the same registry capture the dedicated Hugging Face adapters use.
"""

from __future__ import annotations

import functools
import inspect

from torch import nn

from .generic import attention_kind, attention_site, register_finder
from .site_map import SiteBinding


def _is_hf_attention(module: nn.Module) -> bool:
    return (type(module).__module__.startswith("transformers.models.")
            and hasattr(getattr(module, "config", None), "_attn_implementation_internal")
            and _calls_attention_registry(type(module)))


@functools.cache
def _calls_attention_registry(module_class: type) -> bool:
    try:
        source = inspect.getsource(module_class.forward)
    except (OSError, TypeError):
        return False
    return "ALL_ATTENTION_FUNCTIONS" in source


@register_finder
def find_hf_attention(model: nn.Module) -> list[SiteBinding]:
    """Bindings for every Hugging Face attention module in ``model``, in module order."""
    candidates = [(path, module) for path, module in model.named_modules()
                  if path and _is_hf_attention(module)]
    if not candidates:
        return []
    from .hf_attention import ImplementationSwitch, RegistryAttention

    switch = ImplementationSwitch(model)
    found = []
    for path, module in candidates:
        parent = model.get_submodule(path.rsplit(".", 1)[0]) if "." in path else model
        site = attention_site(path, attention_kind(path, parent))
        found.append(SiteBinding(site, module, output_index=0,
                                 attention=RegistryAttention(module, switch)))
    return found
