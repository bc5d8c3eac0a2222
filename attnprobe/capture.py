"""How tensors get out of a module: hook plumbing shared by all adapters.

An adapter says *where* a site's tensors are; the classes here say *how* they are pulled out without
changing what the module computes. Family-specific capture (Hugging Face attention functions,
``nn.MultiheadAttention`` weights, recomputation from query and key) lives in ``attnprobe.adapters``
and implements the same :class:`AttentionCapture` interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from .taps import Tap

Remover = Callable[[], None]


class AttentionEmitter(ABC):
    """What a capture hands attention probabilities to (implemented by the trace)."""

    @abstractmethod
    def reserve(self, shape: tuple[int, ...], dtype: torch.dtype) -> bool:
        """Call before materialising probabilities of ``shape`` (batch, heads, queries, keys).

        Returns ``False`` when nobody wants them (the capture may then skip the work). Raises
        :class:`attnprobe.errors.MemoryBudgetExceeded` when storing them would pass the budget.
        """

    @abstractmethod
    def emit(self, probabilities: torch.Tensor) -> None:
        """Hand over probabilities ``(batch, heads, query_frames, key_frames)``."""


class AttentionCapture(ABC):
    """A way to obtain one attention module's probabilities while it runs."""

    @abstractmethod
    def install(self, emitter: AttentionEmitter) -> Remover:
        """Start capturing into ``emitter``; return a function that undoes everything."""


class TapAttention(AttentionCapture):
    """Probabilities that the model itself passes through an :class:`~attnprobe.taps.AttentionTap`."""

    def __init__(self, tap: Tap) -> None:
        self.tap = tap

    def install(self, emitter: AttentionEmitter) -> Remover:
        def on_forward(_module: nn.Module, _args: tuple, probabilities: torch.Tensor) -> None:
            if emitter.reserve(tuple(probabilities.shape), probabilities.dtype):
                emitter.emit(probabilities)

        return hook_activating(self.tap, on_forward)


def hook_activating(module: nn.Module, hook: Callable[..., Any]) -> Remover:
    """Register a forward hook; if ``module`` is a :class:`Tap`, also switch it on."""
    handle = module.register_forward_hook(hook)
    if isinstance(module, Tap):
        module.active += 1

    def remove() -> None:
        handle.remove()
        if isinstance(module, Tap):
            module.active -= 1

    return remove


def pick_tensor(value: Any, index: int = 0) -> torch.Tensor | None:
    """The hidden-state tensor in a module's output: the tensor itself, element ``index`` of a
    tuple or list, or the first tensor of a mapping (Hugging Face ``ModelOutput``)."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        if index < len(value) and isinstance(value[index], torch.Tensor):
            return value[index]
        return None
    if isinstance(value, Mapping):
        for item in value.values():
            if isinstance(item, torch.Tensor):
                return item
    return None


def replace_tensor(value: Any, index: int, tensor: torch.Tensor) -> Any:
    """``value`` (a module's output) with the tensor :func:`pick_tensor` finds replaced by
    ``tensor``; tuples (named ones included) and lists are rebuilt, mappings changed in place.

    Raises:
        TypeError: ``value`` is not a tensor, tuple, list or mapping holding a tensor.
    """
    if isinstance(value, torch.Tensor):
        return tensor
    if isinstance(value, (tuple, list)):
        items = list(value)
        items[index] = tensor
        if hasattr(value, "_fields"):
            return type(value)(*items)
        return type(value)(items)
    if isinstance(value, Mapping):
        key = next((key for key, item in value.items() if isinstance(item, torch.Tensor)), None)
        if key is not None:
            value[key] = tensor
            return value
    raise TypeError(f"cannot replace a tensor inside a {type(value).__name__} output; tensor, "
                    f"tuple, list and mapping outputs are supported")


def pick_argument(args: tuple, kwargs: Mapping[str, Any], position: int, name: str | None
                  ) -> torch.Tensor | None:
    """The argument at ``position``, or keyword ``name``, if it is a tensor."""
    if position < len(args) and isinstance(args[position], torch.Tensor):
        return args[position]
    if name is not None and isinstance(kwargs.get(name), torch.Tensor):
        return kwargs[name]
    return None
