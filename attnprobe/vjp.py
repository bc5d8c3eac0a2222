"""Many vector-Jacobian products in one batched backward pass.

Gradient probes need the gradient of many scalars (one per label, one per output frame) with
respect to one tensor. Looping ``backward`` once per scalar repeats the whole backward graph walk
each time; ``torch.autograd.grad(..., is_grads_batched=True)`` vmaps the backward over a batch of
cotangents instead. Chunks bound the memory: each chunk holds ``chunk x input`` gradient values.
"""

from __future__ import annotations

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
) -> list[torch.Tensor]:
    """Gradients of ``(cotangent_k * output).sum()`` with respect to ``inputs``, for every k.

    Args:
        output: any tensor in the graph of ``inputs``.
        inputs: a tensor (or several) that ``output`` depends on.
        cotangents: ``(k, *output.shape)``: one cotangent per requested gradient.
        chunk_size: cotangents per backward pass (``None``: all at once).
        reduce: applied to each chunk's gradient ``(chunk, *input.shape)`` before it is kept, so
            that only the reduction (e.g. a norm over features) stays in memory.

    Returns:
        One tensor per input: ``(k, *input.shape)``, or ``(k, ...)`` after ``reduce``.
    """
    require_grad_mode("a gradient probe")
    single = isinstance(inputs, torch.Tensor)
    input_tuple = (inputs,) if single else tuple(inputs)
    if not output.requires_grad:
        raise GradientUnavailableError(
            "the output does not depend on the inputs through autograd; make the inputs require "
            "grad before the forward pass (e.g. trace with attach=True) and run it with grad on")
    total = cotangents.shape[0]
    step = total if chunk_size is None else max(1, chunk_size)
    pieces: list[list[torch.Tensor]] = [[] for _ in input_tuple]
    for start in range(0, total, step):
        chunk = cotangents[start : start + step]
        last = start + step >= total
        grads = torch.autograd.grad(output, input_tuple, chunk, retain_graph=retain_graph or not last,
                                    is_grads_batched=True, allow_unused=True)
        for index, grad in enumerate(grads):
            if grad is None:
                # A zero gradient would be a silent lie: this tensor is not on the path at all.
                raise GradientUnavailableError(
                    f"input {index} is not on the autograd path to the output (it may be a copy "
                    f"made after the forward pass, e.g. the batch-first record of a time-first "
                    f"site); take gradients with respect to the model input or a batch-first "
                    f"site recorded with attach=True")
            pieces[index].append(reduce(grad) if reduce is not None else grad)
    return [torch.cat(parts) for parts in pieces]
