"""Attention probabilities of Hugging Face models, whichever attention implementation they run.

A Hugging Face attention module does not compute attention itself: it calls the function that
``transformers.AttentionInterface`` registers under ``config._attn_implementation`` (``"eager"``,
``"sdpa"``, ...), and the model builds its masks with the function that
``transformers.masking_utils.AttentionMaskInterface`` registers under the same name. While a trace
wants probabilities, attnprobe registers one more implementation, ``"attnprobe"``, and switches the
model's configs to it:

- its mask function calls the mask function of the original implementation, so causal and padding
  masks are exactly the ones the model would have built;
- its attention function computes the module's output with the original implementation (the
  registered ``sdpa`` function, or the family's own ``eager_attention_forward``), so outputs do not
  change; only when an emitter's ``reserve`` asks for them does it also compute the probabilities
  ``softmax(query key^T * scaling + position_bias + mask)`` from the very query, key, mask and
  scaling the module passed (under eager without dropout it reuses the weights eager returned).

Switching is reference-counted per config object: nested traces of one model, and traces of models
that share a config, share the switch, and the last one out restores the original implementation
exactly, and takes ``"attnprobe"`` out of both registries again, so nothing of it outlives the
trace. Probabilities reach their traces through a process-wide map from attention module to the
emitters attached to it; two models traced in two threads never see each other's emitters.
"""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from attnprobe.capture import AttentionCapture, AttentionEmitter, Remover

IMPLEMENTATION = "attnprobe"
SUPPORTED_ORIGINALS = ("eager", "sdpa")
"""Implementations whose masks attnprobe can read: ``None``/causal flag, boolean, or additive."""

AttentionFunction = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]


@dataclass
class _SwitchedConfig:
    config: Any
    original: str
    holders: int


_lock = threading.Lock()
_switched: dict[int, _SwitchedConfig] = {}
# Values are tuples, replaced (never mutated) under the lock, so the attention function reads them
# without taking it.
_emitters: dict[nn.Module, tuple[AttentionEmitter, ...]] = {}


class RegistryAttention(AttentionCapture):
    """Probabilities of one Hugging Face attention module, through the ``"attnprobe"`` function.

    Args:
        module: the attention module (it calls ``ALL_ATTENTION_FUNCTIONS.get_interface(...)``).
        switch: the implementation switch of the model that holds ``module`` (one per adapter).
    """

    def __init__(self, module: nn.Module, switch: ImplementationSwitch) -> None:
        self.module = module
        self.switch = switch

    def install(self, emitter: AttentionEmitter) -> Remover:
        release = self.switch.acquire()
        try:
            detach = attach_emitter(self.module, emitter)
        except BaseException:
            release()
            raise

        def remove() -> None:
            detach()
            release()

        return remove


class ImplementationSwitch:
    """Switches every attention config of one model to ``"attnprobe"`` and back.

    The configs are the model's own, its sub-configs at any depth, and the ``config`` of every
    submodule. A config whose implementation is ``None`` is left alone: transformers resolves the
    implementation of every config its modules run with, so ``None`` marks one nothing runs with.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    @functools.cached_property
    def configs(self) -> list[Any]:
        from transformers import PreTrainedConfig

        found: dict[int, Any] = {}
        pending = [getattr(module, "config", None) for module in self.model.modules()]
        while pending:
            config = pending.pop()
            if not isinstance(config, PreTrainedConfig) or id(config) in found:
                continue
            found[id(config)] = config
            pending += [getattr(config, key, None) for key in config.sub_configs]
        return [config for config in found.values()
                if config._attn_implementation_internal is not None]

    def acquire(self) -> Remover:
        """Switch (or keep switched) every config; return the function that gives the hold back."""
        configs = self.configs
        with _lock:
            _register_implementation()
            for config in configs:
                if id(config) not in _switched:
                    _check_supported(config)
            for config in configs:
                held = _switched.get(id(config))
                if held is None:
                    _switched[id(config)] = _SwitchedConfig(
                        config, config._attn_implementation_internal, 1)
                    config._attn_implementation_internal = IMPLEMENTATION
                else:
                    held.holders += 1
        released = False

        def release() -> None:
            nonlocal released
            with _lock:
                if released:
                    return
                released = True
                for config in configs:
                    held = _switched[id(config)]
                    held.holders -= 1
                    if held.holders == 0:
                        config._attn_implementation_internal = held.original
                        del _switched[id(config)]
                if not _switched:
                    _unregister_implementation()

        return release


def attach_emitter(module: nn.Module, emitter: AttentionEmitter) -> Remover:
    """Send ``module``'s probabilities to ``emitter`` (besides any emitter already attached)."""
    with _lock:
        _emitters[module] = (*_emitters.get(module, ()), emitter)
    detached = False

    def detach() -> None:
        nonlocal detached
        with _lock:
            if detached:
                return
            detached = True
            remaining = list(_emitters[module])
            remaining.remove(emitter)
            if remaining:
                _emitters[module] = tuple(remaining)
            else:
                del _emitters[module]

    return detach


def original_implementation(config: Any) -> str:
    """The implementation ``config`` had before attnprobe switched it."""
    held = _switched.get(id(config))
    if held is None or held.config is not config:
        raise RuntimeError(
            f"{type(config).__name__} says attn_implementation={IMPLEMENTATION!r}, but no active "
            f"attnprobe trace switched it (was the model copied or saved inside a trace?). Give it "
            f"a real implementation back with model.set_attn_implementation('sdpa') or 'eager'."
        )
    return held.original


def attnprobe_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor,
                        value: torch.Tensor, attention_mask: torch.Tensor | None,
                        scaling: float | None = None, dropout: float = 0.0, **kwargs: Any
                        ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The ``"attnprobe"`` attention function: the original implementation's output and weights,
    plus probabilities ``(batch, heads, query_frames, key_frames)`` for the attached emitters.

    Where probabilities are wanted from an sdpa model in eval mode, the output is computed from
    them (``P @ V``, equal to the kernel's within float rounding) instead of running the kernel as
    well: the scores would otherwise be computed twice.
    """
    original = original_implementation(module.config)
    emitters = _emitters.get(module, ())
    shape = (query.shape[0], query.shape[1], query.shape[2], key.shape[2])
    wanting = [emitter for emitter in emitters if emitter.reserve(shape, query.dtype)]
    dropping = module.training and dropout > 0
    # In training mode the kernel still runs: downstream statistics (BatchNorm running averages)
    # must stay bit-identical to an untraced step.
    if wanting and original != "eager" and not module.training:
        probabilities = attention_probabilities(
            module, query, key, attention_mask, scaling, original, kwargs.get("position_bias"),
            kwargs.get("is_causal"))
        if value.shape[1] != query.shape[1]:
            value = value.repeat_interleave(query.shape[1] // value.shape[1], dim=1)
        output = torch.matmul(probabilities, value).transpose(1, 2).contiguous()
        for emitter in wanting:
            emitter.emit(probabilities)
        return output, None
    output, weights = original_function(type(module), original)(
        module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    if wanting:
        exact_weights = (original == "eager" and weights is not None
                         and tuple(weights.shape) == shape and not dropping)
        probabilities = weights if exact_weights else attention_probabilities(
            module, query, key, attention_mask, scaling, original, kwargs.get("position_bias"),
            kwargs.get("is_causal"))
        for emitter in wanting:
            emitter.emit(probabilities)
    return output, weights


def attnprobe_mask(**kwargs: Any) -> torch.Tensor | None:
    """The ``"attnprobe"`` mask function: the original implementation's mask for this config."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    return ALL_MASK_ATTENTION_FUNCTIONS[original_implementation(kwargs["config"])](**kwargs)


def attention_probabilities(module: nn.Module, query: torch.Tensor, key: torch.Tensor,
                            attention_mask: torch.Tensor | None, scaling: float | None,
                            original: str, position_bias: torch.Tensor | None = None,
                            is_causal: bool | None = None) -> torch.Tensor:
    """Softmax over keys of ``query key^T * scaling + position_bias + mask``, as the original
    implementation weighs the values.

    Args:
        query: ``(batch, heads, query_frames, head_dim)``.
        key: ``(batch, key_heads, key_frames, head_dim)``; key heads shared by several query heads
            (grouped-query attention) are repeated.
        attention_mask: ``None``, boolean (True = attend) or additive, broadcastable to
            ``(batch, heads, query_frames, key_frames)``.
        original: ``"eager"`` or ``"sdpa"``; decides what a missing mask means (sdpa then applies
            the module's causal flag, eager nothing).

    Returns:
        ``(batch, heads, query_frames, key_frames)`` in ``query``'s dtype.
    """
    if key.shape[1] != query.shape[1]:
        key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if position_bias is not None:
        scores = scores + position_bias
    lowest = torch.finfo(scores.dtype).min
    if attention_mask is None:
        causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
        if original == "sdpa" and causal and query.shape[2] > 1:
            # sdpa's is_causal aligns the triangle to the top-left corner (it crops longer keys).
            allowed = torch.ones(query.shape[2], key.shape[2], dtype=torch.bool,
                                 device=scores.device).tril()
            scores = scores.masked_fill(~allowed, lowest)
    elif attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention_mask, lowest)
    else:
        scores = scores + attention_mask
    return torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)


@functools.cache
def original_function(module_class: type, original: str) -> AttentionFunction:
    """What ``module_class`` itself would call for ``original``: ``get_interface`` on the attention
    registry its python module uses, with the family's ``eager_attention_forward`` as default."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    for klass in module_class.__mro__:
        namespace = vars(sys.modules[klass.__module__]) if klass.__module__ in sys.modules else {}
        eager = namespace.get("eager_attention_forward")
        if eager is not None:
            interface = namespace.get("ALL_ATTENTION_FUNCTIONS", ALL_ATTENTION_FUNCTIONS)
            return interface.get_interface(original, eager)
    if original == "eager":
        raise RuntimeError(
            f"{module_class.__qualname__} runs 'eager' attention, but attnprobe found no "
            f"eager_attention_forward in its python module; load the model with "
            f"attn_implementation='sdpa' to trace its attention"
        )
    return ALL_ATTENTION_FUNCTIONS.get_interface(original, None)


def _check_supported(config: Any) -> None:
    original = config._attn_implementation_internal
    if original not in SUPPORTED_ORIGINALS:
        raise RuntimeError(
            f"attnprobe reads attention probabilities through the 'eager' or 'sdpa' "
            f"implementation, but {type(config).__name__} uses {original!r}. Switch before "
            f"tracing with model.set_attn_implementation('sdpa') (or load it with "
            f"attn_implementation='sdpa'), or trace without probabilities: "
            f"attnprobe.trace(model, capture={{'output', 'input'}})."
        )


def _register_implementation() -> None:
    """Add ``"attnprobe"`` to transformers' attention and mask registries (under ``_lock``)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(IMPLEMENTATION, attnprobe_attention)
    AttentionMaskInterface.register(IMPLEMENTATION, attnprobe_mask)


def _unregister_implementation() -> None:
    """Take ``"attnprobe"`` out of both registries again once no config is switched (under
    ``_lock``): a later ``set_attn_implementation("attnprobe")`` must be refused as unknown.
    transformers has no public way to unregister, so the class-wide mapping ``register``
    wrote to is edited directly."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    for interface in (AttentionInterface, AttentionMaskInterface):
        interface._global_mapping.pop(IMPLEMENTATION, None)
