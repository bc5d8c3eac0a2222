"""How the labels share backward passes: one cotangent per label position, every item at once,
in chunks whose size :func:`attnprobe.vjp.batched_vjp` searches for speed under a memory cap.

Every label's gradient costs a full backward pass's arithmetic whichever way it is computed, so
batching labels (``is_grads_batched``, a vmap over cotangents) saves only per-operation overhead:
kernel launches and small-tensor dispatch, which dominate on a GPU and for short inputs. For long
inputs on a CPU the backward is bound by its matrix products, and vmap's batching rules add copies
and loops, so one label per pass can be as fast (``benchmarks/gradient_speed.py`` measures both).
``batched_vjp`` therefore tries chunks of 1, 2, 4, ... labels and keeps the fastest; this module
caps the chunk by a memory budget, estimated from what autograd saved in the forward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from attnprobe.vjp import batched_vjp

DEFAULT_MEMORY_BUDGET = 2 * 2**30
"""Bytes the backward pass of one chunk of labels may use (see :func:`largest_chunk`)."""


def label_gradients(
    label_log_probs: torch.Tensor,
    target: torch.Tensor,
    *,
    chunk_size: int | None = None,
    max_chunk_size: int | None = None,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """``d log p(a_s) / d target`` of every label position ``s``, for every item at once.

    Args:
        label_log_probs: ``(batch, labels)`` in the graph of ``target``; the graph is freed after
            the last label.
        target: ``(batch, frames, *features)``.
        chunk_size: labels per backward pass; ``None`` searches for the fastest.
        max_chunk_size: the largest chunk the search may try (``None``: all labels).
        reduce: applied to each chunk's ``(chunk, batch, frames, *features)`` gradients, so that
            only the reduction (e.g. a norm per frame) is kept.

    Returns:
        ``(labels, batch, frames, *features)``, or what ``reduce`` made of it.
    """
    batch, labels = label_log_probs.shape
    # Cotangent s is 1 at label s of every item: the items of a batch share each backward pass,
    # which is exact because items do not interact in eval mode.
    cotangents = torch.eye(labels, dtype=label_log_probs.dtype, device=label_log_probs.device)
    cotangents = cotangents[:, None, :].expand(labels, batch, labels)
    (gradients,) = batched_vjp(label_log_probs, target, cotangents, chunk_size, reduce,
                               max_chunk_size=max_chunk_size)
    return gradients


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
