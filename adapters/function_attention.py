"""Attention probabilities of a module that computes attention itself: a softmax over keys, or a
call of ``torch.nn.functional.scaled_dot_product_attention``.

Such modules (in-house and toolkit Conformers, older Hugging Face code) hand their probabilities to
nobody. While a trace wants them, a ``torch.overrides.TorchFunctionMode`` is active for exactly the
duration of the module's forward (entered by a forward pre-hook, left by an always-called forward
hook, so an exception leaves no mode behind). It watches the torch functions the module calls and
keeps

- the result of a softmax over the last axis of a ``(batch, heads, queries, keys)`` tensor, or of
  a ``(batch * heads, queries, keys)`` one (older code folds the heads into the batch): the
  probabilities the module multiplies with its values (the last such softmax, if several);
- for ``scaled_dot_product_attention``, ``softmax(query key^T * scale + mask)`` computed from the
  very query, key, mask, causal flag and scale of the call (the kernel itself is left alone, so the
  output does not change);
- for ``multi_head_attention_forward`` (a module reusing ``nn.MultiheadAttention``'s function),
  the per-head weights: the call runs with ``need_weights=True, average_attn_weights=False`` and
  the caller gets what it asked for (as :mod:`.torch_mha` does for the module; outputs agree up to
  float rounding where the caller had not asked for weights).

Otherwise the mode only observes: every function runs as called and its result is returned
untouched.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from attnprobe.capture import AttentionCapture, AttentionEmitter, Remover

from .hf_attention import attention_probabilities

SOFTMAX_FUNCTIONS = frozenset({torch.softmax, torch.nn.functional.softmax, torch.Tensor.softmax})
SCALED_DOT_PRODUCT = torch.nn.functional.scaled_dot_product_attention
MULTI_HEAD = torch.nn.functional.multi_head_attention_forward
_MULTI_HEAD_SIGNATURE = inspect.signature(MULTI_HEAD)


class _Watch(TorchFunctionMode):
    """Keeps the attention probabilities of the torch calls made while it is active."""

    def __init__(self, module: nn.Module, emitter: AttentionEmitter, batch: int | None) -> None:
        super().__init__()
        self.module = module
        self.emitter = emitter
        self.batch = batch
        self.wanted: bool | None = None
        self.probabilities: torch.Tensor | None = None

    def __torch_function__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is MULTI_HEAD:
            return self._multi_head(args, kwargs)
        result = func(*args, **kwargs)
        if func in SOFTMAX_FUNCTIONS:
            dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
            probabilities = self._per_head(result) if dim in (-1, result.dim() - 1) else None
            if probabilities is not None and self._wants(tuple(probabilities.shape),
                                                         probabilities.dtype):
                self.probabilities = probabilities
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

    def _per_head(self, result: Any) -> torch.Tensor | None:
        """``result`` as ``(batch, heads, queries, keys)``, or ``None`` when it is not one."""
        if not isinstance(result, torch.Tensor):
            return None
        if result.dim() == 4:
            return result
        if result.dim() == 3 and self.batch and result.shape[0] % self.batch == 0 \
                and result.shape[0] > self.batch:
            return result.view(self.batch, result.shape[0] // self.batch, *result.shape[1:])
        return None

    def _multi_head(self, args: tuple, kwargs: dict) -> Any:
        call = _MULTI_HEAD_SIGNATURE.bind(*args, **kwargs).arguments
        query, key = call["query"], call["key"]
        if query.dim() != 3:
            return MULTI_HEAD(*args, **kwargs)
        shape = (query.shape[1], call["num_heads"], query.shape[0], key.shape[0])
        if not self._wants(shape, query.dtype):
            return MULTI_HEAD(*args, **kwargs)
        asked = call.get("need_weights", True), call.get("average_attn_weights", True)
        output, weights = MULTI_HEAD(**{**call, "need_weights": True,
                                        "average_attn_weights": False})
        self.probabilities = weights
        if not asked[0]:
            return output, None
        return output, weights.mean(dim=1) if asked[1] else weights

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

        def before(module: nn.Module, args: tuple, kwargs: dict) -> None:
            stream = next((value for value in (*args, *kwargs.values())
                           if isinstance(value, torch.Tensor)), None)
            batch = stream.shape[0] if stream is not None and stream.dim() >= 2 else None
            watch = _Watch(module, emitter, batch)
            watch.__enter__()
            active.append(watch)

        def after(_module: nn.Module, _args: tuple, _output: Any) -> None:
            if not active:
                return
            watch = active.pop()
            watch.__exit__(None, None, None)
            if watch.wanted and watch.probabilities is not None:
                emitter.emit(watch.probabilities)

        pre = self.module.register_forward_pre_hook(before, with_kwargs=True)
        post = self.module.register_forward_hook(after, always_call=True)

        def remove() -> None:
            pre.remove()
            post.remove()
            while active:
                active.pop().__exit__(None, None, None)

        return remove
