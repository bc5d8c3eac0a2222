"""The gradients of many labels from one forward graph, in as few backward passes as pays off.

Every label's gradient costs a full backward pass's arithmetic whichever way it is computed, so
batching labels (``torch.autograd.grad(..., is_grads_batched=True)``, a vmap over cotangents)
saves only per-operation overhead: kernel launches and small-tensor dispatch, which dominate on a
GPU and for short inputs. For long inputs on a CPU the backward is bound by its matrix products,
and vmap's batching rules add copies (saved activations are expanded to the batch of cotangents),
so one label per pass can be as fast or faster (measured in ``benchmarks/gradient_speed.py``).

Hence the default: a search. Chunks of labels double in size (1, 2, 4, ...) while the time per
label falls, up to the largest chunk the memory budget allows, and the fastest size is kept for the
remaining labels. Every chunk's gradients are used, so the search costs only its slower chunks; the
results do not depend on it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from attnprobe.vjp import require_grad_mode

DEFAULT_MEMORY_BUDGET = 2 * 2**30
"""Bytes the backward pass of one chunk of labels may use (see :func:`largest_chunk`)."""


@dataclass
class LabelGradients:
    """Gradients of every label position.

    Attributes:
        values: ``(labels, batch, frames, *features)``, or what ``reduce`` made of it.
        chunk_size: labels per backward pass used (after the search, the size it kept).
    """

    values: torch.Tensor
    chunk_size: int


def label_gradients(
    label_log_probs: torch.Tensor,
    target: torch.Tensor,
    *,
    chunk_size: int | None = None,
    max_chunk_size: int | None = None,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> LabelGradients:
    """``d log p(a_s) / d target`` of every label position ``s``, for every item at once.

    Args:
        label_log_probs: ``(batch, labels)`` in the graph of ``target``; the graph is freed after
            the last label.
        target: ``(batch, frames, *features)``.
        chunk_size: labels per backward pass; ``None`` searches for the fastest (see the module
            docs).
        max_chunk_size: the largest chunk the search may try (``None``: all labels).
        reduce: applied to each chunk's ``(chunk, batch, frames, *features)`` gradients, so that
            only the reduction (e.g. a norm per frame) is kept.
    """
    require_grad_mode("gradient scoring")
    batch, labels = label_log_probs.shape
    # Cotangent s is 1 at label s of every item: the items of a batch share each backward pass,
    # which is exact because items do not interact in eval mode.
    cotangents = torch.eye(labels, dtype=label_log_probs.dtype, device=label_log_probs.device)
    cotangents = cotangents[:, None, :].expand(labels, batch, labels)
    search = ChunkSearch(chunk_size, max_chunk_size or labels)
    pieces = []
    start = 0
    while start < labels:
        size = min(search.size, labels - start)
        began = time.perf_counter()
        gradients = _backward(label_log_probs, target, cotangents[start : start + size],
                              retain_graph=start + size < labels)
        pieces.append(reduce(gradients) if reduce is not None else gradients)
        _wait_for(gradients)
        search.observe(size, time.perf_counter() - began)
        start += size
    return LabelGradients(torch.cat(pieces), search.size)


class ChunkSearch:
    """Chooses labels per backward pass: ``fixed`` if given, else by timing.

    The first chunk (one label) warms up and is not timed; then the size doubles while the time
    per label falls and the next size fits ``largest``, and the fastest size seen is kept.
    """

    def __init__(self, fixed: int | None, largest: int) -> None:
        self.size = max(1, fixed) if fixed else 1
        self.largest = max(1, largest)
        self._searching = not fixed
        self._warmed_up = False
        self._best_size = self.size
        self._best_time = math.inf

    def observe(self, size: int, seconds: float) -> None:
        if not self._searching or size != self.size:
            return
        if not self._warmed_up:
            self._warmed_up = True
            return
        per_label = seconds / size
        improved = per_label < self._best_time
        if improved:
            self._best_size, self._best_time = size, per_label
        if improved and 2 * size <= self.largest:
            self.size = 2 * size
        else:
            self.size = self._best_size
            self._searching = False


def largest_chunk(saved_bytes: int, target: torch.Tensor, labels: int,
                  memory_budget: int | None) -> int:
    """The most labels one backward pass may take within ``memory_budget`` bytes.

    A batched backward holds, per label in the chunk, at most one gradient per tensor autograd
    saved in the forward pass plus the gradient of the target, so ``saved_bytes + target bytes``
    per label is a conservative estimate.
    """
    if memory_budget is None:
        return labels
    per_label = max(1, saved_bytes + target.numel() * target.element_size())
    return max(1, min(labels, memory_budget // per_label))


@dataclass
class SavedBytesCounter:
    """Bytes of the distinct storages autograd saved while counting."""

    total: int = 0


@contextmanager
def counting_saved_bytes() -> Iterator[SavedBytesCounter]:
    """Count what autograd saves for the backward (each storage once).

    Only first-order gradients may be taken from a graph built inside (no ``create_graph``).
    """
    counter = SavedBytesCounter()
    seen: set[int] = set()

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            counter.total += storage.nbytes()
        # Keeping the tensor itself would tie a saved output to its own grad_fn in a reference
        # cycle that outlives the pass; a detached view shares the storage without the cycle.
        # The backward is first order only, so nothing needs the saved tensors' history.
        return tensor.detach()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        yield counter


def _backward(output: torch.Tensor, target: torch.Tensor, cotangents: torch.Tensor,
              retain_graph: bool) -> torch.Tensor:
    """``(chunk, *target.shape)`` gradients of ``(cotangent_k * output).sum()``."""
    if cotangents.shape[0] == 1:
        # A plain backward: vmap over a single cotangent would only add its overhead.
        (gradient,) = torch.autograd.grad(output, target, cotangents[0],
                                          retain_graph=retain_graph, allow_unused=True)
        gradients = None if gradient is None else gradient[None]
    else:
        (gradients,) = torch.autograd.grad(output, target, cotangents, retain_graph=retain_graph,
                                           is_grads_batched=True, allow_unused=True)
    if gradients is None:
        return target.new_zeros((cotangents.shape[0], *target.shape))
    return gradients


def _wait_for(tensor: torch.Tensor) -> None:
    """Let an accelerator finish ``tensor`` so that the chunk's time is its real cost."""
    if tensor.device.type == "cuda":
        torch.cuda.synchronize(tensor.device)
