"""Attention probabilities of a module that computes attention itself: a softmax over keys, or a
call of ``torch.nn.functional.scaled_dot_product_attention``.

Such modules (in-house and toolkit Conformers, older Hugging Face code) hand their probabilities to
nobody. While a trace wants them, a ``torch.overrides.TorchFunctionMode`` is active for exactly the
duration of the module's forward (entered by a forward pre-hook, left by an always-called forward
hook, so an exception leaves no mode behind). It watches the torch functions the module calls and
keeps

- the result of a softmax over the last axis of a ``(batch, heads, queries, keys)`` tensor: the
  probabilities the module multiplies with its values (the last such softmax, if several);
- for ``scaled_dot_product_attention``, ``softmax(query key^T * scale + mask)`` computed from the
  very query, key, mask, causal flag and scale of the call (the kernel itself is left alone, so the
  output does not change).

The mode only observes: every function runs as called and its result is returned untouched.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from attnprobe.capture import AttentionCapture, AttentionEmitter, Remover

from .hf_attention import attention_probabilities

SOFTMAX_FUNCTIONS = frozenset({torch.softmax, torch.nn.functional.softmax, torch.Tensor.softmax})
SCALED_DOT_PRODUCT = torch.nn.functional.scaled_dot_product_attention


class _Watch(TorchFunctionMode):
    """Keeps the attention probabilities of the torch calls made while it is active."""

    def __init__(self, module: nn.Module, emitter: AttentionEmitter) -> None:
        super().__init__()
        self.module = module
        self.emitter = emitter
        self.wanted: bool | None = None
        self.probabilities: torch.Tensor | None = None

    def __torch_function__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if func in SOFTMAX_FUNCTIONS:
            dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
            if (isinstance(result, torch.Tensor) and result.dim() == 4
                    and dim in (-1, 3) and self._wants(tuple(result.shape), result.dtype)):
                self.probabilities = result
        elif func is SCALED_DOT_PRODUCT:
            names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale")
            call = dict(zip(names, args, strict=False)) | kwargs
            query, key = call["query"], call["key"]
            shape = (*query.shape[:-1], key.shape[-2])
            if query.dim() == 4 and self._wants(shape, query.dtype):
                self.probabilities = attention_probabilities(
                    self.module, query, key, call.get("attn_mask"), call.get("scale"), "sdpa",
                    is_causal=bool(call.get("is_causal", False)))
        return result

    def _wants(self, shape: tuple[int, ...], dtype: torch.dtype) -> bool:
        """Ask the trace once per call (its memory budget counts every reservation)."""
        if self.wanted is None:
            self.wanted = self.emitter.reserve(shape, dtype)
        return self.wanted


class FunctionAttention(AttentionCapture):
    """Probabilities ``(batch, heads, query_frames, key_frames)`` of one module that computes
    attention with a softmax or ``scaled_dot_product_attention`` (module docstring)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def install(self, emitter: AttentionEmitter) -> Remover:
        active: list[_Watch] = []

        def before(module: nn.Module, _args: tuple) -> None:
            watch = _Watch(module, emitter)
            watch.__enter__()
            active.append(watch)

        def after(_module: nn.Module, _args: tuple, _output: Any) -> None:
            if not active:
                return
            watch = active.pop()
            watch.__exit__(None, None, None)
            if watch.wanted and watch.probabilities is not None:
                emitter.emit(watch.probabilities)

        pre = self.module.register_forward_pre_hook(before)
        post = self.module.register_forward_hook(after, always_call=True)

        def remove() -> None:
            pre.remove()
            post.remove()
            while active:
                active.pop().__exit__(None, None, None)

        return remove
