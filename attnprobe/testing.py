"""Planting known behaviour in a model, to check that the probes find it.

Every helper is a context manager that works for any model attnprobe has an adapter for, and
leaves the model exactly as it was on exit (normal or by exception)::

    with plant_reversal(model, after_block=3):          # output of encoder.3 reversed in time
        report = attnprobe.reversal_report(model, batch)
    report.reversed_at                                   # 3

- :func:`plant_permutation` / :func:`plant_reversal` permute the valid frames of one encoder block's
  output (a forward hook that replaces it), so every later block computes on permuted frames.
- :func:`scale_branch` multiplies one branch's output (what its block adds to the residual).
- :func:`force_attention` replaces the attention probabilities that traces *see* at chosen sites
  with a diagonal, anti-diagonal or uniform pattern over each sequence's valid region; the model's
  own computation is unchanged. It checks the attention probes end to end: capture, lengths,
  padding, streaming.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .adapters import (
    Adapter,
    LengthEntry,
    SiteBinding,
    SiteMap,
    find_site_map,
    register_adapter,
    registry,
    resolve_adapter,
    resolve_site_map,
)
from .capture import AttentionCapture, AttentionEmitter, Remover, pick_tensor, replace_tensor
from .sites import SiteFilter, site_matcher

Permutation = Callable[[int], torch.Tensor]
"""Maps a valid length ``L`` to ``(L,)`` int64: output frame ``t`` takes ``permutation[t]``."""

PATTERNS = ("diagonal", "anti-diagonal", "uniform")


def reversal(length: int) -> torch.Tensor:
    """The time reversal of ``length`` frames: ``t -> L-1-t``."""
    return torch.arange(length - 1, -1, -1)


@contextmanager
def plant_permutation(model: nn.Module, after_block: int, permutation: Permutation, *,
                      adapter: Adapter | SiteMap | None = None,
                      input_lengths: torch.Tensor | None = None) -> Iterator[None]:
    """Permute the valid frames of the output of encoder block ``after_block``.

    Args:
        model: any supported model.
        after_block: index of the encoder block (site ``encoder.{after_block}``).
        permutation: per valid length, which frame each output frame takes; padding stays put.
        adapter: whose sites and lengths to use (default: the site map found for ``model``).
        input_lengths: ``(batch,)`` valid input frames of the batch that will run, for models
            whose encoder call reveals no padding (Whisper): only the encoder frames that carry
            audio are permuted, as the probes see them.
    """
    site_map = find_site_map(model) if adapter is None else resolve_site_map(model, adapter)
    binding = _binding(site_map, f"encoder.{after_block}")
    lengths = _LengthWatcher(site_map, input_lengths)

    def permute(output: Any) -> Any:
        tensor = pick_tensor(output, binding.output_index)
        if tensor is None:
            raise TypeError(f"encoder.{after_block} returned no tensor at index "
                            f"{binding.output_index} to permute")
        frames = tensor if binding.batch_first else tensor.transpose(0, 1)
        index = _permutation_index(lengths.get("encoder", frames), frames.shape[1], permutation,
                                   frames.device)
        permuted = frames.gather(1, index[..., None].expand_as(frames))
        if not binding.batch_first:
            permuted = permuted.transpose(0, 1).contiguous()
        return replace_tensor(output, binding.output_index, permuted)

    with lengths, _output_hook(binding, permute):
        yield


@contextmanager
def plant_reversal(model: nn.Module, after_block: int, *,
                   adapter: Adapter | SiteMap | None = None,
                   input_lengths: torch.Tensor | None = None) -> Iterator[None]:
    """Reverse in time the valid frames of encoder block ``after_block``'s output (arguments as in
    :func:`plant_permutation`)."""
    with plant_permutation(model, after_block, reversal, adapter=adapter,
                           input_lengths=input_lengths):
        yield


@contextmanager
def scale_branch(model: nn.Module, site: str, factor: float) -> Iterator[None]:
    """Multiply the output of branch site ``site`` (e.g. ``"encoder.2.self_attn"``) by ``factor``.

    Raises:
        ValueError: the site's output is derived by the adapter (e.g. torchaudio's half-step
            feed-forward), not computed by a module of the model, so scaling it would change what
            traces see but not what the model computes.
    """
    binding = _binding(find_site_map(model), site)
    module = binding.output_module or binding.module
    if not any(module is candidate for candidate in model.modules()):
        raise ValueError(f"{site}'s output is derived by the adapter, not computed by a module "
                         f"of the model; scaling it would not change the model. Scale another "
                         f"branch, or the module that computes this one")

    def scale(output: Any) -> Any:
        tensor = pick_tensor(output, binding.output_index)
        if tensor is None:
            raise TypeError(f"{site} returned no tensor at index {binding.output_index} to scale")
        return replace_tensor(output, binding.output_index, tensor * factor)

    with _output_hook(binding, scale):
        yield


@contextmanager
def force_attention(model: nn.Module, pattern: str, sites: SiteFilter = "encoder.*.self_attn",
                    adapter: Adapter | SiteMap | None = None) -> Iterator[None]:
    """Make traces of ``model`` see ``pattern`` as the attention probabilities of ``sites``.

    Args:
        model: any supported model.
        pattern: ``"diagonal"`` (query ``q`` of ``Q`` attends key ``round(q (K-1) / (Q-1))``),
            ``"anti-diagonal"`` (key ``K-1`` minus that) or ``"uniform"``, over each sequence's
            ``Q`` valid queries and ``K`` valid keys; padded keys get 0.
        sites: which attention sites (a glob, list of globs or predicate).
        adapter: the site map (or adapter) whose sites and runner to keep (default: the ones
            :func:`attnprobe.adapters.resolve_adapter` picks for ``model``).
    """
    if pattern not in PATTERNS:
        raise ValueError(f"pattern {pattern!r} is not one of {PATTERNS}")
    paired = resolve_adapter(model, adapter)
    original = paired.site_map
    select = site_matcher(sites)
    lengths: dict[str, torch.Tensor] = {}

    class ForcedAttentionSites(SiteMap):
        family = f"{original.family} (forced {pattern} attention)"
        # The original runner itself, with whatever was set on it (e.g. a decoder prompt).
        runner_class = staticmethod(lambda _model: paired.runner)  # type: ignore[assignment]

        @classmethod
        def matches(cls, candidate: nn.Module) -> bool:
            return candidate is model

        def bindings(self) -> list[SiteBinding]:
            return [dataclasses.replace(binding, attention=_ForcedAttention(
                        binding.attention, pattern, lengths, binding.site.kind))
                    if binding.attention is not None and select(binding.site) else binding
                    for binding in original.bindings()]

        def length_entries(self) -> list[LengthEntry]:
            return [LengthEntry(entry.module, _recording(entry.lengths, lengths))
                    for entry in original.length_entries()]

    register_adapter(ForcedAttentionSites)
    try:
        yield
    finally:
        registry.site_maps.remove(ForcedAttentionSites)


def attention_pattern(pattern: str, queries: int, keys: int, query_lengths: torch.Tensor,
                      key_lengths: torch.Tensor) -> torch.Tensor:
    """``(batch, queries, keys)`` probabilities of ``pattern`` over each sequence's valid region;
    padded query rows are uniform over the valid keys."""
    batch = query_lengths.shape[0]
    probabilities = torch.zeros(batch, queries, keys)
    for index in range(batch):
        valid_queries, valid_keys = int(query_lengths[index]), int(key_lengths[index])
        probabilities[index, :, :valid_keys] = 1.0 / valid_keys
        if pattern == "uniform":
            continue
        rows = torch.arange(valid_queries)
        stretch = (valid_keys - 1) / max(valid_queries - 1, 1)
        columns = torch.round(rows * stretch).long()
        if pattern == "anti-diagonal":
            columns = valid_keys - 1 - columns
        probabilities[index, :valid_queries] = 0.0
        probabilities[index, rows, columns] = 1.0
    return probabilities


class _ForcedAttention(AttentionCapture):
    """Installs the original capture, but hands its emitter the forced pattern instead."""

    def __init__(self, original: AttentionCapture, pattern: str,
                 lengths: Mapping[str, torch.Tensor], kind: str) -> None:
        self.original = original
        self.pattern = pattern
        self.lengths = lengths
        self.query_axis = "decoder" if kind == "cross_attn" else "encoder"

    def install(self, emitter: AttentionEmitter) -> Remover:
        return self.original.install(_ForcingEmitter(emitter, self))


class _ForcingEmitter(AttentionEmitter):
    def __init__(self, inner: AttentionEmitter, forced: _ForcedAttention) -> None:
        self.inner = inner
        self.forced = forced

    def reserve(self, shape: tuple[int, ...], dtype: torch.dtype) -> bool:
        return self.inner.reserve(shape, dtype)

    def emit(self, probabilities: torch.Tensor) -> None:
        batch, heads, queries, keys = probabilities.shape
        query_lengths = _known(self.forced.lengths, self.forced.query_axis, batch, queries)
        key_lengths = _known(self.forced.lengths, "encoder", batch, keys)
        pattern = attention_pattern(self.forced.pattern, queries, keys, query_lengths, key_lengths)
        self.inner.emit(pattern[:, None].expand(batch, heads, queries, keys)
                        .to(device=probabilities.device, dtype=probabilities.dtype))


def _known(lengths: Mapping[str, torch.Tensor], axis: str, batch: int, frames: int
           ) -> torch.Tensor:
    known = lengths.get(axis)
    if known is not None and known.numel() == batch and int(known.max()) <= frames:
        return known.cpu()
    return torch.full((batch,), frames, dtype=torch.long)


def _fits(lengths: Mapping[str, torch.Tensor], axis: str, frames: torch.Tensor) -> bool:
    known = lengths.get(axis)
    return (known is not None and known.numel() == frames.shape[0]
            and int(known.max()) <= frames.shape[1])


def _recording(function: Callable[[tuple, Mapping[str, Any]], Mapping[str, torch.Tensor]],
               into: dict[str, torch.Tensor]
               ) -> Callable[[tuple, Mapping[str, Any]], Mapping[str, torch.Tensor]]:
    def lengths(args: tuple, kwargs: Mapping[str, Any]) -> Mapping[str, torch.Tensor]:
        found = function(args, kwargs)
        into.update({axis: value.detach() for axis, value in found.items() if value is not None})
        return found

    return lengths


class _LengthWatcher:
    """Records the valid lengths the adapter derives from each forward call, while entered."""

    def __init__(self, site_map: SiteMap, input_lengths: torch.Tensor | None = None) -> None:
        self.entries = site_map.length_entries()
        self.lengths: dict[str, torch.Tensor] = {}
        self.given = {} if input_lengths is None else site_map.lengths_for_inputs(input_lengths)
        self.handles: list[Any] = []

    def __enter__(self) -> _LengthWatcher:
        for entry in self.entries:
            self.handles.append(entry.module.register_forward_pre_hook(
                self._watcher(entry.lengths), with_kwargs=True))
        return self

    def _watcher(self, function: Callable[[tuple, Mapping[str, Any]], Mapping[str, torch.Tensor]]
                 ) -> Callable[[nn.Module, tuple, dict], None]:
        record = _recording(function, self.lengths)

        def before_forward(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            record(args, kwargs)

        return before_forward

    def __exit__(self, *exc_info: object) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def get(self, axis: str, frames: torch.Tensor) -> torch.Tensor:
        """Valid lengths along ``axis`` for batch-first ``frames`` (the given ones first, as in
        the trace); the full length if unknown."""
        source = self.given if _fits(self.given, axis, frames) else self.lengths
        return _known(source, axis, frames.shape[0], frames.shape[1])


def _permutation_index(lengths: torch.Tensor, frames: int, permutation: Permutation,
                       device: torch.device) -> torch.Tensor:
    """``(batch, frames)`` gather index: the permutation on valid frames, identity on padding."""
    index = torch.arange(frames).repeat(lengths.shape[0], 1)
    for row, length in enumerate(lengths.tolist()):
        order = torch.as_tensor(permutation(length), dtype=torch.long).cpu()
        if sorted(order.tolist()) != list(range(length)):
            raise ValueError(f"permutation({length}) is not a permutation of 0..{length - 1}")
        index[row, :length] = order
    return index.to(device)


def _binding(site_map: SiteMap, name: str) -> SiteBinding:
    binding = site_map.binding(name)
    if binding is None:
        names = ", ".join(binding.site.name for binding in site_map.bindings())
        raise LookupError(f"the {site_map.family} adapter has no site {name!r}; sites: {names}")
    return binding


@contextmanager
def _output_hook(binding: SiteBinding, change: Callable[[Any], Any]) -> Iterator[None]:
    """A forward hook that replaces the site's output, placed before any other hook so that
    traces see the changed output."""
    module = binding.output_module or binding.module
    handle = module.register_forward_hook(lambda _module, _args, output: change(output),
                                          prepend=True)
    try:
        yield
    finally:
        handle.remove()
