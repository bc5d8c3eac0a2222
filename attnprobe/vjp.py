"""Many vector-Jacobian products from one forward graph, batched where batching pays.

Gradient probes need the gradient of many scalars (one per label, one per output frame) with
respect to one tensor. Looping ``backward`` once per scalar repeats the whole backward graph walk
each time; ``torch.autograd.grad(..., is_grads_batched=True)`` vmaps the backward over a batch of
cotangents instead. Chunks bound the memory: each chunk holds ``chunk x input`` gradient values.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from .errors import GradientUnavailableError


def require_grad_mode(what: str) -> None:
    """Raise a clear error when autograd cannot run (``torch.inference_mode`` or ``no_grad``)."""
    if torch.is_inference_mode_enabled():
        raise GradientUnavailableError(
            f"{what} needs gradients, but torch.inference_mode() is active; call it outside "
            f"inference_mode (torch.no_grad() is fine to leave, attnprobe enables grad itself)")


def batched_vjp(
    output: torch.Tensor,
    inputs: torch.Tensor | tuple[torch.Tensor, ...],
    cotangents: torch.Tensor,
    chunk_size: int | None = None,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    retain_graph: bool = False,
    max_chunk_size: int | None = None,
) -> list[torch.Tensor]:
    """Gradients of ``(cotangent_k * output).sum()`` with respect to ``inputs``, for every k.

    Batching cotangents saves per-operation overhead, but only where every operation of the
    backward graph has a vmap batching rule; where one has none (on the CPU: convolution, layer
    norm and batch norm backward) torch loops inside the vmap and batching is slower than plain
    backward passes. So ``chunk_size=None`` searches: chunks of 1, 2, 4, ... cotangents while the
    time per cotangent falls, then the fastest size for the rest. Every chunk's gradients are kept,
    so the search costs only its slower chunks; the results do not depend on it.

    Args:
        output: any tensor in the graph of ``inputs``.
        inputs: a tensor (or several) that ``output`` depends on.
        cotangents: ``(k, *output.shape)``: one cotangent per requested gradient.
        chunk_size: cotangents per backward pass; ``None`` searches for the fastest.
        reduce: applied to each chunk's gradient ``(chunk, *input.shape)`` before it is kept, so
            that only the reduction (e.g. a norm over features) stays in memory.
        retain_graph: keep the graph after the last chunk, to take more gradients from the same
            forward pass (e.g. of several blocks' outputs).
        max_chunk_size: the largest chunk the search may try, and the cap of a given
            ``chunk_size`` (it bounds memory).

    Returns:
        One tensor per input: ``(k, *input.shape)``, or ``(k, ...)`` after ``reduce``.
    """
    require_grad_mode("a gradient probe")
    input_tuple = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    if not output.requires_grad:
        raise GradientUnavailableError(
            "the output does not depend on the inputs through autograd; make the inputs require "
            "grad before the forward pass (e.g. trace with attach=True) and run it with grad on")
    total = cotangents.shape[0]
    pieces: list[list[torch.Tensor]] = [[] for _ in input_tuple]
    largest = max(1, min(total, max_chunk_size or total))
    searching = chunk_size is None
    # A fixed chunk is capped too: max_chunk_size is the memory bound, whoever picks the size.
    size = 1 if searching else max(1, min(chunk_size or 1, largest))
    best_rate = float("inf")
    start = 0
    while start < total:
        chunk = cotangents[start : start + size]
        began = time.perf_counter()
        grads = _vjp_chunk(output, input_tuple, chunk,
                           retain_graph or start + chunk.shape[0] < total)
        for index, grad in enumerate(grads):
            pieces[index].append(reduce(grad) if reduce is not None else grad)
        start += chunk.shape[0]
        if searching:
            rate = (time.perf_counter() - began) / chunk.shape[0]
            if rate < 0.9 * best_rate and size < largest:
                best_rate, size = rate, min(2 * size, largest)
            else:
                searching = False
                if rate >= best_rate:
                    size = max(1, size // 2)
    return [torch.cat(parts) for parts in pieces]


def _vjp_chunk(output: torch.Tensor, inputs: tuple[torch.Tensor, ...], chunk: torch.Tensor,
               retain_graph: bool) -> list[torch.Tensor]:
    if chunk.shape[0] == 1:
        # A plain backward: vmap over a single cotangent would only add its overhead.
        grads = torch.autograd.grad(output, inputs, chunk[0], retain_graph=retain_graph,
                                    allow_unused=True)
        grads = tuple(None if grad is None else grad.unsqueeze(0) for grad in grads)
    else:
        grads = torch.autograd.grad(output, inputs, chunk, retain_graph=retain_graph,
                                    is_grads_batched=True, allow_unused=True)
    for index, grad in enumerate(grads):
        if grad is None:
            # A zero gradient would be a silent lie: this tensor is not on the path at all.
            raise GradientUnavailableError(
                f"input {index} is not on the autograd path to the output (it may be a copy made "
                f"after the forward pass, e.g. the batch-first record of a time-first site); take "
                f"gradients with respect to the model input or a batch-first site recorded with "
                f"attach=True")
    return list(grads)  # type: ignore[arg-type]
