"""Tensors that no module hands over as such, derived from what a module actually computed.

Three tools for adapters whose model family hides a site's tensor:

- :class:`RecomputedAttention`: attention probabilities recomputed as
  ``softmax(q k^T * scale + mask)`` from the query and key a module really projected, for modules
  that compute attention inside a fused function (``scaled_dot_product_attention``) and never
  materialise the probabilities (torchaudio wav2vec2 / HuBERT).
- :func:`listen_to_method`: call a listener with the result of a method of one module instance (the
  method that returns the probabilities, e.g. torchaudio Emformer's ``_gen_attention_probs``); the
  instance is restored exactly when the last listener leaves.
- :class:`DerivedTap`: an identity tap fed with a tensor derived from another module's actual input
  or output (a slice of a concatenation, a scaled branch output, a padded copy of a nested tensor),
  for sites where no module's input or output is exactly the site's tensor.

None of them changes what the model computes.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from weakref import WeakKeyDictionary

import torch
from torch import nn

from attnprobe.capture import AttentionCapture, AttentionEmitter, Remover
from attnprobe.taps import Tap

MaskFunction = Callable[[tuple, dict], "torch.Tensor | None"]
"""Maps the attention module's call ``(args, kwargs)`` to the mask it applies: additive float,
or boolean with ``True`` = may attend (``scaled_dot_product_attention`` semantics), broadcastable to
``(batch, heads, query_frames, key_frames)``; ``None`` for no mask."""


class RecomputedAttention(AttentionCapture):
    """Probabilities recomputed from the query and key projections' actual outputs.

    While installed, forward hooks keep the outputs of ``query_projection`` and
    ``key_projection`` during each call of ``module`` and, when the call ends, compute
    ``softmax(q k^T * scale + mask)`` shaped ``(batch, heads, query_frames, key_frames)`` — the
    probabilities the fused kernel used, up to floating-point rounding.

    The recomputed tensor is not on the model's autograd path (the model used its fused kernel), and
    it is the probabilities before attention dropout (in training mode with dropout the model used a
    randomly dropped version of them).

    Args:
        module: the attention module; one call of it is one attention computation.
        query_projection: submodule returning queries ``(batch, query_frames, heads * head_dim)``.
        key_projection: submodule returning keys ``(batch, key_frames, heads * head_dim)``.
        num_heads: number of heads.
        scale: factor applied to ``q k^T`` (usually ``head_dim ** -0.5``).
        mask: how to read the mask from the module's call; ``None`` when the module takes none.
    """

    def __init__(self, module: nn.Module, query_projection: nn.Module, key_projection: nn.Module,
                 num_heads: int, scale: float, mask: MaskFunction | None = None) -> None:
        self.module = module
        self.query_projection = query_projection
        self.key_projection = key_projection
        self.num_heads = num_heads
        self.scale = scale
        self.mask = mask

    def install(self, emitter: AttentionEmitter) -> Remover:
        calls: list[_AttentionCall] = []

        def before(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            calls.append(_AttentionCall(self.mask(args, kwargs) if self.mask else None))

        def keep(role: str) -> Callable[[nn.Module, tuple, torch.Tensor], None]:
            def on_projection(_module: nn.Module, _args: tuple, output: torch.Tensor) -> None:
                if calls:
                    calls[-1].projections[role] = output
            return on_projection

        def after(_module: nn.Module, _args: tuple, output: Any) -> None:
            call = calls.pop() if calls else None
            # output is None when the forward raised (this hook is always called).
            if call is None or output is None or len(call.projections) < 2:
                return
            query = self._split_heads(call.projections["query"])
            key = self._split_heads(call.projections["key"])
            shape = (query.shape[0], self.num_heads, query.shape[2], key.shape[2])
            if emitter.reserve(shape, query.dtype):
                emitter.emit(attention_probabilities(query, key, self.scale, call.mask))

        handles = [
            self.module.register_forward_pre_hook(before, with_kwargs=True),
            self.query_projection.register_forward_hook(keep("query")),
            self.key_projection.register_forward_hook(keep("key")),
            self.module.register_forward_hook(after, always_call=True),
        ]
        return _remove_all(handles)

    def _split_heads(self, projected: torch.Tensor) -> torch.Tensor:
        """``(batch, frames, heads * head_dim)`` -> ``(batch, heads, frames, head_dim)``."""
        batch, frames, width = projected.shape
        head_dim = width // self.num_heads
        return projected.view(batch, frames, self.num_heads, head_dim).transpose(1, 2)


@dataclass
class _AttentionCall:
    mask: torch.Tensor | None
    projections: dict[str, torch.Tensor] = field(default_factory=dict)


def attention_probabilities(query: torch.Tensor, key: torch.Tensor, scale: float,
                            mask: torch.Tensor | None) -> torch.Tensor:
    """``softmax(q k^T * scale + mask)`` over keys, computed in float32, returned in q's dtype.

    Args:
        query: ``(batch, heads, query_frames, head_dim)``.
        key: ``(batch, heads, key_frames, head_dim)``.
        scale: factor on the dot products.
        mask: additive float mask, or boolean with ``True`` = may attend, broadcastable to
            ``(batch, heads, query_frames, key_frames)``; or ``None``.

    Returns:
        ``(batch, heads, query_frames, key_frames)``.
    """
    scores = torch.matmul(query.float(), key.float().transpose(-1, -2)) * scale
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask.float()
    return torch.softmax(scores, dim=-1).to(query.dtype)


MethodListener = Callable[[tuple, dict, Any], None]
"""Called with ``(args, kwargs, result)`` after each call of the listened method."""


@dataclass
class _MethodWrap:
    """The wrapper standing in for one method of one instance, shared by all its listeners."""

    had_own_attribute: bool
    previous: Any
    wrapper: Callable[..., Any]
    listeners: list[MethodListener]


_method_wraps: WeakKeyDictionary[nn.Module, dict[str, _MethodWrap]] = WeakKeyDictionary()


def listen_to_method(instance: nn.Module, name: str, listener: MethodListener) -> Remover:
    """Call ``listener(args, kwargs, result)`` after every call of ``instance.<name>``.

    The method is replaced by a wrapper on the instance only (its class is untouched). Nested
    listeners share one wrapper, so they may be removed in any order; when the last one leaves, the
    instance gets back exactly what it had: no attribute if the method came from the class, the
    previous attribute otherwise. A listener sees the result after the method returned, and the
    method's caller receives that result unchanged.

    Returns:
        A function that removes the listener.
    """
    wraps = _method_wraps.setdefault(instance, {})
    wrap = wraps.get(name)
    if wrap is None:
        original = getattr(instance, name)
        listeners: list[MethodListener] = []

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            for each in list(listeners):
                each(args, kwargs, result)
            return result

        wrap = _MethodWrap(name in instance.__dict__, instance.__dict__.get(name), wrapper,
                           listeners)
        instance.__dict__[name] = wrapper
        wraps[name] = wrap
    wrap.listeners.append(listener)

    def remove() -> None:
        if listener not in wrap.listeners:
            return
        wrap.listeners.remove(listener)
        if wrap.listeners:
            return
        del wraps[name]
        if not wraps:
            del _method_wraps[instance]
        if instance.__dict__.get(name) is not wrap.wrapper:
            warnings.warn(f"{type(instance).__name__}.{name} was replaced by someone else while "
                          f"attnprobe listened to it; leaving the replacement in place "
                          f"(attnprobe's wrapper inside it now only passes calls through)",
                          stacklevel=2)
            return
        if wrap.had_own_attribute:
            instance.__dict__[name] = wrap.previous
        else:
            del instance.__dict__[name]

    return remove


Derive = Callable[[tuple, dict, Any], "torch.Tensor | None"]
"""Maps the source module's call ``(args, kwargs, output)`` to the site's tensor, or ``None`` to
skip this call; ``output`` is ``None`` for a tap that observes inputs."""


class DerivedTap(Tap):
    """An identity tap, fed with a tensor derived from another module's actual input or output.

    Bind a site's ``output_module`` (or its ``module``, for the input) to a ``DerivedTap`` when no
    module's output (input) is exactly the site's tensor. The tap listens to ``source`` only while
    something is hooked on the tap itself, so outside a trace the model carries no hook of ours.

    A derived tensor that is a new computation (a slice, a scaled copy) is not on the model's
    autograd path: gradients with respect to it cannot be taken. Derive the module's own tensor
    where one exists.

    Args:
        source: the model's module whose calls are observed.
        derive: ``(args, kwargs, output) -> tensor | None``.
        observe: ``"output"`` (after ``source`` ran) or ``"input"`` (before it runs).
    """

    def __init__(self, source: nn.Module, derive: Derive,
                 observe: Literal["input", "output"] = "output") -> None:
        super().__init__()
        # Stored outside nn.Module's registry: the source belongs to the model, not to this tap.
        object.__setattr__(self, "source", source)
        self.derive = derive
        self.observe = observe
        self._feeder: torch.utils.hooks.RemovableHandle | None = None
        self._listeners = 0

    def register_forward_hook(self, hook: Callable[..., Any], **options: Any) -> _JointHandle:
        return _JointHandle(super().register_forward_hook(hook, **options), self._listen())

    def register_forward_pre_hook(self, hook: Callable[..., Any], **options: Any) -> _JointHandle:
        return _JointHandle(super().register_forward_pre_hook(hook, **options), self._listen())

    def _listen(self) -> Remover:
        if self._feeder is None:
            if self.observe == "output":
                def feed_output(_module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
                    self._feed(self.derive(args, kwargs, output))

                self._feeder = self.source.register_forward_hook(feed_output, with_kwargs=True)
            else:
                def feed_input(_module: nn.Module, args: tuple, kwargs: dict) -> None:
                    self._feed(self.derive(args, kwargs, None))

                self._feeder = self.source.register_forward_pre_hook(feed_input, with_kwargs=True)
        self._listeners += 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self._listeners -= 1
            if self._listeners == 0 and self._feeder is not None:
                self._feeder.remove()
                self._feeder = None

        return release

    def _feed(self, tensor: torch.Tensor | None) -> None:
        if tensor is not None:
            self(tensor)


class _JointHandle:
    """A hook handle that also releases the tap's listening when removed."""

    def __init__(self, handle: torch.utils.hooks.RemovableHandle, release: Remover) -> None:
        self.handle = handle
        self.release = release

    def remove(self) -> None:
        self.handle.remove()
        self.release()


def _remove_all(handles: list[torch.utils.hooks.RemovableHandle]) -> Remover:
    def remove() -> None:
        for handle in handles:
            handle.remove()

    return remove
