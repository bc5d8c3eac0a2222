"""The generic fallback: attention sites inferred from the modules of a model no adapter knows.

:func:`infer_site_map` runs every *finder* in :data:`FINDERS` over the model; each returns the
attention-site bindings of the modules it recognises. The built-in finder knows
``torch.nn.MultiheadAttention`` (:func:`find_multihead_attention`); other module families join with
:func:`register_finder` (e.g. Hugging Face attention modules, from ``adapters/hf_attention.py``),
using :func:`attention_site` so that every finder names sites the same way.

What is inferred, and how (written into ``site_map.notes``, and announced by one warning):

- kind: cross-attention when the module's own name contains ``cross``, ``encoder_attn`` or
  ``src_attn``, or when it is the ``multihead_attn`` of a ``torch.nn.TransformerDecoderLayer``;
  self-attention otherwise. Names are used rather than watching whether query is key at trace time
  because the kind is part of the site, which users select before any forward pass runs.
- stack: ``decoder`` for cross-attention; otherwise the innermost enclosing module whose name
  contains ``decoder`` or ``encoder``; ``encoder`` when none does.
- layer: the last number in the module path (``encoder.layers.3.self_attn`` -> 3). When a stack's
  sites of one kind have no number or repeat one, they are numbered in module order instead.
- lengths: from the model call's key-padding-mask arguments (``src_key_padding_mask``,
  ``memory_key_padding_mask`` -> encoder frames, ``tgt_key_padding_mask`` -> decoder positions,
  ``key_padding_mask`` -> encoder frames), when the mask pads at the end; otherwise unknown.

Only attention sites are inferred: what counts as a block, a feed-forward or a frontend differs too
much between models to guess. Inputs and outputs of torch's nested tensors (the inference fast path
of ``nn.TransformerEncoder`` with a padding mask) are recorded zero-padded.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from attnprobe.capture import pick_argument
from attnprobe.lengths import right_padded_lengths
from attnprobe.sites import Site

from .recompute import DerivedTap
from .site_map import LengthEntry, SiteBinding, SiteMap
from .torch_mha import MultiheadAttentionCapture

Finder = Callable[[nn.Module], list[SiteBinding]]
"""Returns the attention-site bindings of the modules it recognises in a model (empty if none)."""

CROSS_ATTENTION_MARKERS = ("cross", "encoder_attn", "src_attn")
PADDING_MASK_AXES = {"src_key_padding_mask": "encoder", "memory_key_padding_mask": "encoder",
                     "tgt_key_padding_mask": "decoder", "key_padding_mask": "encoder",
                     "attention_mask": "encoder", "decoder_attention_mask": "decoder"}
VALID_IS_ONE = frozenset({"attention_mask", "decoder_attention_mask"})
"""Hugging Face masks mark valid positions with 1; torch's key-padding masks mark padding."""


def attention_kind(name: str, parent: nn.Module | None) -> str:
    """``"cross_attn"`` or ``"self_attn"`` for the module called ``name`` inside ``parent``."""
    own_name = name.rsplit(".", 1)[-1].lower()
    if any(marker in own_name for marker in CROSS_ATTENTION_MARKERS):
        return "cross_attn"
    if own_name == "multihead_attn" and isinstance(parent, nn.TransformerDecoderLayer):
        return "cross_attn"
    return "self_attn"


def attention_site(path: str, kind: str) -> Site:
    """The site of an attention module at ``path`` (see the module docstring for the rules).

    The layer is ``None`` when the path has no number; :class:`InferredSites` then numbers the
    sites in module order.
    """
    parts = path.split(".")
    stack = "decoder" if kind == "cross_attn" else "encoder"
    if kind != "cross_attn":
        for part in reversed(parts[:-1]):
            if "decoder" in part.lower() or "encoder" in part.lower():
                stack = "decoder" if "decoder" in part.lower() else "encoder"
                break
    numbers = [int(part) for part in parts if re.fullmatch(r"\d+", part)]
    layer = numbers[-1] if numbers else None
    return Site(f"{stack}.{'?' if layer is None else layer}.{kind}", kind, stack, layer, path)


def find_multihead_attention(model: nn.Module) -> list[SiteBinding]:
    """Bindings for every ``torch.nn.MultiheadAttention`` in ``model``, in module order."""
    found = []
    for path, module in model.named_modules():
        if not isinstance(module, nn.MultiheadAttention):
            continue
        parent = model.get_submodule(path.rsplit(".", 1)[0]) if "." in path else model
        site = attention_site(path, attention_kind(path, parent))
        found.append(SiteBinding(
            site, DerivedTap(module, _dense_query, observe="input"),
            output_module=DerivedTap(module, _dense_output), input_name=None,
            batch_first=module.batch_first, attention=MultiheadAttentionCapture(module)))
    return found


def _dense(tensor: torch.Tensor | None) -> torch.Tensor | None:
    if tensor is not None and tensor.is_nested:
        return tensor.to_padded_tensor(0.0)
    return tensor


def _dense_query(args: tuple, kwargs: dict, _output: Any) -> torch.Tensor | None:
    return _dense(pick_argument(args, kwargs, 0, "query"))


def _dense_output(_args: tuple, _kwargs: dict, output: Any) -> torch.Tensor | None:
    return _dense(output[0])


FINDERS: list[Finder] = [find_multihead_attention]
"""Tried in order; every binding of every finder becomes a site."""


def register_finder(finder: Finder) -> Finder:
    """Add a finder (usable as a decorator); it sees every model the fallback is asked about."""
    if finder not in FINDERS:
        FINDERS.append(finder)
    return finder


class InferredSites(SiteMap):
    """Attention sites inferred by the finders; see the module docstring for the rules.

    Never chosen by the registry; :func:`infer_site_map` builds it for models no adapter matches.
    Pass ``adapter=InferredSites`` to ``attnprobe.trace`` to use it on any model.
    """

    family = "generic"
    description = "any model with torch.nn.MultiheadAttention (sites inferred from module names)"

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return False

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        order = {module: index for index, module in enumerate(model.modules())}
        found = [binding for finder in FINDERS for binding in finder(model)]
        found.sort(key=lambda binding: order.get(model.get_submodule(binding.site.module_path), 0))
        self._bindings = self._number_layers(found)
        self.notes.append("sites inferred: kind from module names (cross / encoder_attn / "
                          "src_attn, or multihead_attn of nn.TransformerDecoderLayer), stack from "
                          "'encoder'/'decoder' in module paths, layer from the last number")
        self._padding_masks = _padding_mask_parameters(model)
        if self._padding_masks:
            self.notes.append(f"lengths from the call's {', '.join(self._padding_masks)} "
                              f"(when it pads at the end)")
        else:
            self.notes.append("lengths unknown: the model's forward takes no key-padding mask")

    def _number_layers(self, found: list[SiteBinding]) -> list[SiteBinding]:
        groups: dict[tuple[str, str], list[SiteBinding]] = {}
        for binding in found:
            groups.setdefault((binding.site.stack, binding.site.kind), []).append(binding)
        for (stack, kind), members in groups.items():
            layers = [binding.site.layer for binding in members]
            if None not in layers and len(set(layers)) == len(layers):
                continue
            self.notes.append(f"{stack} {kind} sites numbered in module order (their module paths "
                              f"have no distinct layer numbers)")
            for layer, binding in enumerate(members):
                binding.site = dataclasses.replace(binding.site, layer=layer,
                                                   name=f"{stack}.{layer}.{kind}")
        return found

    def bindings(self) -> list[SiteBinding]:
        return list(self._bindings)

    def length_entries(self) -> list[LengthEntry]:
        if not self._padding_masks:
            return []
        signature = inspect.signature(self.model.forward)

        def lengths(args: tuple, kwargs: Mapping[str, Any]) -> dict[str, torch.Tensor]:
            try:
                call = signature.bind_partial(*args, **kwargs).arguments
            except TypeError:
                return {}
            found: dict[str, torch.Tensor] = {}
            for name in self._padding_masks:
                valid = right_padded_lengths(call.get(name), name in VALID_IS_ONE)
                if valid is not None:
                    found.setdefault(PADDING_MASK_AXES[name], valid)
            return found

        return [LengthEntry(self.model, lengths)]


def _padding_mask_parameters(model: nn.Module) -> list[str]:
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return []
    return [name for name in PADDING_MASK_AXES if name in parameters]


def infer_site_map(model: nn.Module) -> InferredSites | None:
    """An :class:`InferredSites` for ``model``, or ``None`` when no finder recognises anything.

    Emits one warning naming the inferred sites, so that a guess never goes unnoticed.
    """
    site_map = InferredSites(model)
    found = site_map.bindings()
    if not found:
        return None
    listing = ", ".join(f"{binding.site.name} <- {binding.site.module_path}" for binding in found)
    warnings.warn(
        f"attnprobe has no adapter for {type(model).__qualname__}; inferred {len(found)} attention "
        f"sites from module names: {listing}. Check them with trace.summary(), or register an "
        f"adapter for exact sites (attnprobe.adapters.register_adapter).", stacklevel=2)
    return site_map
