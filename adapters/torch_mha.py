"""Attention probabilities of ``torch.nn.MultiheadAttention``, asked for through the call itself.

``nn.MultiheadAttention`` returns per-head probabilities when called with ``need_weights=True,
average_attn_weights=False``; most callers (``nn.TransformerEncoderLayer``, torchaudio's Conformer)
pass ``need_weights=False``. While a trace wants the probabilities, a forward pre-hook rewrites the
call's keyword arguments to ask for per-head weights and remembers what the caller asked for; a
forward hook hands the weights to the trace and gives the caller exactly the output it asked for:
weights ``None`` for ``need_weights=False``, head-averaged weights for
``average_attn_weights=True``.

What changes while capturing: the module takes its explicit-softmax path instead of
``scaled_dot_product_attention``, so outputs agree with an untraced call up to floating-point
rounding (about 1e-7 in float32), not bit for bit. The captured weights are the ones the module
multiplied with the values: in training mode with attention dropout, they are the dropped-out
weights.

Hooks of your own: the forward hook is registered in front of all others, so every hook you have
on the module sees the output the caller expects; a forward pre-hook you register *while* a trace is
active runs after ours and sees ``need_weights=True``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from attnprobe.capture import AttentionCapture, AttentionEmitter, Remover

# nn.MultiheadAttention.forward's parameters, in order.
ARGUMENT_NAMES = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask",
                  "average_attn_weights", "is_causal")
_FIRST_OPTION = ARGUMENT_NAMES.index("need_weights")


@dataclass(frozen=True)
class _CallerRequest:
    """What one caller of the module asked for, and whether its input had a batch axis."""

    need_weights: bool
    average_heads: bool
    batched: bool


class MultiheadAttentionCapture(AttentionCapture):
    """Per-head probabilities ``(batch, heads, query_frames, key_frames)`` of one
    ``nn.MultiheadAttention``, for either ``batch_first`` setting and for unbatched calls.

    Several captures of one module (nested traces) nest like onion layers: each pre-hook sees the
    call as the previous one rewrote it, each forward hook restores what its pre-hook saw.
    """

    def __init__(self, module: nn.MultiheadAttention) -> None:
        self.module = module

    def install(self, emitter: AttentionEmitter) -> Remover:
        requests: list[_CallerRequest | None] = []

        def before(module: nn.MultiheadAttention, args: tuple, kwargs: dict
                   ) -> tuple[tuple, dict] | None:
            # Pushed first so that the always-called forward hook pops this call's entry even if
            # reserve() raises (memory budget).
            requests.append(None)
            call = dict(zip(ARGUMENT_NAMES, args, strict=False)) | kwargs
            query, key = call["query"], call["key"]
            if not emitter.reserve(weights_shape(module, query, key), query.dtype):
                return None
            requests[-1] = _CallerRequest(bool(call.get("need_weights", True)),
                                          bool(call.get("average_attn_weights", True)),
                                          query.is_nested or query.dim() == 3)
            options = dict(zip(ARGUMENT_NAMES[_FIRST_OPTION:], args[_FIRST_OPTION:], strict=False))
            return args[:_FIRST_OPTION], {**options, **kwargs, "need_weights": True,
                                          "average_attn_weights": False}

        def after(_module: nn.Module, _args: tuple, output: Any) -> Any:
            request = requests.pop() if requests else None
            # output is None when the forward raised (this hook is always called).
            if request is None or output is None:
                return None
            attention_output, weights = output
            emitter.emit(weights if request.batched else weights.unsqueeze(0))
            if not request.need_weights:
                return attention_output, None
            if request.average_heads:
                return attention_output, weights.mean(dim=-3)
            return output

        pre = self.module.register_forward_pre_hook(before, with_kwargs=True)
        post = self.module.register_forward_hook(after, prepend=True, always_call=True)

        def remove() -> None:
            pre.remove()
            post.remove()

        return remove


def weights_shape(module: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor
                  ) -> tuple[int, int, int, int]:
    """``(batch, heads, query_frames, key_frames)`` of the weights one call will return.

    Handles ``batch_first``, unbatched ``(frames, dim)`` inputs, the nested tensors of
    ``nn.TransformerEncoder``'s inference fast path (weights are padded to the longest sequence),
    and the extra key of ``bias_k`` / ``add_zero_attn``.
    """
    if query.is_nested:
        batch = query.size(0)
        query_frames = max(item.size(0) for item in query.unbind())
        key_frames = max(item.size(0) for item in key.unbind())
    elif query.dim() == 3:
        time_axis = 1 if module.batch_first else 0
        batch = query.size(1 - time_axis)
        query_frames, key_frames = query.size(time_axis), key.size(time_axis)
    else:
        batch, query_frames, key_frames = 1, query.size(0), key.size(0)
    key_frames += int(module.bias_k is not None) + int(module.add_zero_attn)
    return batch, module.num_heads, query_frames, key_frames
