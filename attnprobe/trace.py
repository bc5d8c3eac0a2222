"""``attnprobe.trace``: the context manager that installs hooks, collects records, and restores the
model exactly as it was.

Usage::

    with attnprobe.trace(model) as t:
        model(features, feature_lengths)          # any forward calls, as often as you like
    t.sites                                       # what was traced
    t["encoder.3.self_attn"].attention            # (batch, heads, query_frames, key_frames)
    t.select(kind="ffn", stack="encoder")         # records by kind / glob / layer

Nothing the model computes changes: hooks only read tensors (attention captures that need a
switch flipped restore it on exit), and every hook the trace installed is removed when the
``with`` block ends, normally or by exception. Hooks others installed are never touched.

A trace belongs to the thread that entered it (calls from other threads stay out of its records;
a second thread's trace of the same model is refused), and a call through a ``torch.compile``
wrapper of the traced model ends it with an error that says what to call instead
(:mod:`attnprobe.trace_guard`).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .adapters import resolve_site_map
from .capture import AttentionEmitter, Remover, hook_activating, pick_argument, pick_tensor
from .errors import MemoryBudgetExceeded, UnsupportedModelError
from .records import Captured, Record
from .reducers import StreamingReducer
from .sites import Site, SiteFilter, format_sites, site_matcher
from .trace_guard import TraceGuard

DEFAULT_MEMORY_BUDGET = 4 * 2**30
CAPTURE_KINDS = ("output", "input", "attention")

class Trace:
    """Hooks on one model for the duration of a ``with`` block. Build it with :func:`trace`."""

    def __init__(
        self,
        model: nn.Module,
        sites: SiteFilter = None,
        *,
        kind: str | Iterable[str] | None = None,
        stack: str | None = None,
        layer: int | Iterable[int] | None = None,
        capture: Iterable[str] | None = None,
        device: str | torch.device | None = None,
        attach: bool | SiteFilter = False,
        reducers: Sequence[StreamingReducer] = (),
        store: bool = True,
        memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
        adapter: Any = None,
        input_lengths: torch.Tensor | None = None,
    ) -> None:
        if capture is not None:
            capture = set(capture)
            unknown = capture - set(CAPTURE_KINDS)
            if unknown:
                raise ValueError(f"capture={sorted(unknown)} is not understood; use a subset of "
                                 f"{CAPTURE_KINDS}")
        self.model = model
        self._select = site_matcher(sites, kind, stack, layer)
        self._capture = capture
        self._device = torch.device(device) if device is not None else None
        self._attach = attach
        self._reducers = list(reducers)
        self._store = store
        self._memory_budget = memory_budget
        self._adapter = adapter
        self.site_map: Any = None
        self.records: dict[str, Record] = {}
        self.all_sites: list[Site] = []
        self._removers: list[Remover] = []
        self._lengths: dict[str, torch.Tensor] = {}
        self._input_lengths = input_lengths
        self._given_lengths: dict[str, torch.Tensor] = {}
        self._stored_bytes = 0
        self._pending_attention: set[str] = set()
        self._active = False
        self._guard = TraceGuard(model)

    # ----------------------------------------------------------------- context management
    def __enter__(self) -> Trace:
        if self._active:
            raise RuntimeError("this trace is already active; create a new attnprobe.trace(...)")
        self._guard.claim()
        try:
            site_map = resolve_site_map(self.model, self._adapter)
        except BaseException:
            self._guard.release()
            raise
        self.site_map = site_map
        bindings = site_map.bindings()
        self.all_sites = [binding.site for binding in bindings]
        chosen = [binding for binding in bindings if self._select(binding.site)]
        if not bindings:
            self._guard.release()
            raise UnsupportedModelError(
                f"the {getattr(site_map, 'family', '?')} site map found no sites in "
                f"{type(self.model).__name__}; attnprobe.describe(model) says what it looked for "
                f"and what it found")
        if not chosen:
            self._guard.release()
            raise ValueError(
                "the site selection matched nothing; available sites:\n"
                + format_sites(self.all_sites)
            )
        self._active = True
        try:
            if self._input_lengths is not None:
                self._given_lengths = {
                    axis: value.detach().long().cpu()
                    for axis, value in site_map.lengths_for_inputs(self._input_lengths).items()}
            self._removers.append(self._guard.install_compile_check())
            for entry in site_map.length_entries():
                self._install_length_entry(entry.module, entry.lengths)
            for binding in chosen:
                self.records[binding.site.name] = Record(binding.site)
                self._install_binding(binding)
        except BaseException:
            self._remove_all()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        self._remove_all()
        self._guard.verdict(failed=exc_type is not None)

    def _remove_all(self) -> None:
        errors: list[BaseException] = []
        while self._removers:
            remover = self._removers.pop()
            try:
                remover()
            except BaseException as error:  # keep removing the rest; report afterwards
                errors.append(error)
        self._active = False
        self._lengths = {}
        self._guard.release()
        if errors:
            raise errors[0]

    # ----------------------------------------------------------------- installation
    def _install_length_entry(self, module: nn.Module,
                              lengths: Callable[[tuple, Mapping[str, Any]], Mapping]) -> None:
        def before_forward(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            if not self._guard.in_own_thread():
                return
            found = lengths(args, kwargs)
            self._lengths.update({key: value.detach().long() for key, value in found.items()
                                  if value is not None})
            self._pending_attention.clear()

        handle = module.register_forward_pre_hook(before_forward, with_kwargs=True)
        self._removers.append(handle.remove)

    def _install_binding(self, binding: Any) -> None:
        site: Site = binding.site
        wanted = self._wanted(site)
        if "output" in wanted:
            def after_forward(_module: nn.Module, _args: tuple, output: Any) -> None:
                tensor = pick_tensor(output, binding.output_index)
                if tensor is not None:
                    self._take(site, "output", self._batch_first(tensor, binding.batch_first))

            self._removers.append(hook_activating(binding.output_module or binding.module,
                                                  after_forward))
        if "input" in wanted:
            def before_forward(_module: nn.Module, args: tuple, kwargs: dict) -> None:
                tensor = pick_argument(args, kwargs, binding.input_position, binding.input_name)
                if tensor is not None:
                    self._take(site, "input", self._batch_first(tensor, binding.batch_first))

            handle = binding.module.register_forward_pre_hook(before_forward, with_kwargs=True)
            self._removers.append(handle.remove)
        if "attention" in wanted:
            if binding.attention is None:
                raise RuntimeError(f"site map {type(self.site_map).__name__} gave attention site "
                                   f"{site.name!r} no attention capture")
            self._removers.append(binding.attention.install(_Emitter(self, site)))

    def _wanted(self, site: Site) -> set[str]:
        if self._capture is not None:
            wanted = set(self._capture)
        else:
            wanted = {"output"}
            if site.kind in ("frontend", "block"):
                wanted.add("input")
        if site.is_attention and (self._capture is None or "attention" in self._capture):
            wanted.add("attention")
        else:
            wanted.discard("attention")
        return wanted

    @staticmethod
    def _batch_first(tensor: torch.Tensor, batch_first: bool) -> torch.Tensor:
        return tensor if batch_first else tensor.transpose(0, 1)

    # ----------------------------------------------------------------- capture
    def _axis_lengths(self, site: Site, what: str) -> str:
        if site.kind == "frontend":
            return "features" if what == "input" else "encoder"
        return site.stack

    def _lengths_for(self, axis: str, batch: int, frames: int) -> tuple[torch.Tensor, bool]:
        given = self._given_lengths.get(axis)
        if given is not None and given.numel() == batch and int(given.max()) <= frames:
            return given, True
        known = self._lengths.get(axis)
        if known is not None and known.numel() == batch and int(known.max()) <= frames:
            return known, True
        return torch.full((batch,), frames, dtype=torch.long), False

    def _take(self, site: Site, what: str, tensor: torch.Tensor,
              key_frames: int | None = None) -> None:
        if not self._guard.in_own_thread():
            return
        if tensor.is_nested:
            # torch's nested fast path (nn.TransformerEncoder with a padding mask): records are
            # dense, zero-padded, like every other padded batch.
            tensor = tensor.to_padded_tensor(0.0)
        if tensor.dim() < 2:
            return
        lengths, known = self._lengths_for(self._axis_lengths(site, what), tensor.shape[0],
                                           tensor.shape[-2] if what == "attention"
                                           else tensor.shape[1])
        key_lengths = None
        if what == "attention":
            key_axis = "encoder" if site.kind == "cross_attn" else self._axis_lengths(site, what)
            key_lengths, key_known = self._lengths_for(key_axis, tensor.shape[0], tensor.shape[-1])
            known = known and key_known
        attached = self._is_attached(site)
        value = tensor if attached else tensor.detach()
        if self._device is not None and not attached:
            value = value.to(self._device)
        captured = Captured(value, lengths.to(value.device), None if key_lengths is None
                            else key_lengths.to(value.device), known)
        for reducer in self._reducers:
            reducer.update(site, what, captured)
        if not self._store:
            return
        nbytes = value.numel() * value.element_size()
        if what != "attention":
            self._check_budget(site, nbytes, projected=nbytes)
        self._stored_bytes += nbytes
        record = self.records[site.name]
        {"output": record.outputs, "input": record.inputs,
         "attention": record.attentions}[what].append(captured)

    def _is_attached(self, site: Site) -> bool:
        if isinstance(self._attach, bool):
            return self._attach
        return site_matcher(self._attach)(site)

    def _check_budget(self, site: Site, nbytes: int, projected: int) -> None:
        if self._memory_budget is None or self._stored_bytes + projected <= self._memory_budget:
            return
        raise MemoryBudgetExceeded(
            f"storing {site.name} would bring this trace to about "
            f"{(self._stored_bytes + projected) / 2**20:.0f} MiB, past its memory budget of "
            f"{self._memory_budget / 2**20:.0f} MiB ({nbytes / 2**20:.1f} MiB for this tensor). "
            f"Trace fewer sites (e.g. sites='encoder.1[01].*', kind='self_attn', layer=[...]), "
            f"skip attention probabilities (capture={{'output'}}), stream reductions instead of "
            f"storing (store=False with reducers=[...], e.g. the reversal probes' streaming "
            f"reducers), move tensors off the accelerator (device='cpu'), or raise the budget "
            f"(memory_budget=<bytes>, None for no limit)."
        )

    def _reserve_attention(self, site: Site, shape: tuple[int, ...], dtype: torch.dtype) -> bool:
        if not self._guard.is_own_thread():
            return False  # another thread's call: nothing is computed for it
        if not self._store:
            return bool(self._reducers)
        element = torch.empty((), dtype=dtype).element_size()
        nbytes = element
        for size in shape:
            nbytes *= size
        # Project the whole pass: every attention site of this stack not yet seen in this pass
        # will store a tensor of about this size, so fail on the first one, not the last.
        same_stack = [name for name, record in self.records.items()
                      if record.site.is_attention and record.site.stack == site.stack
                      and name not in self._pending_attention]
        self._pending_attention.add(site.name)
        self._check_budget(site, nbytes, projected=nbytes * max(1, len(same_stack)))
        return True

    # ----------------------------------------------------------------- reading results
    @property
    def sites(self) -> list[Site]:
        """The traced sites, in forward order."""
        return [record.site for record in self.records.values()]

    def __getitem__(self, name: str) -> Record:
        try:
            return self.records[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self.records), n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise LookupError(f"no traced site named {name!r}.{hint} Traced sites: "
                              f"{', '.join(self.records) or 'none'}") from None

    def __contains__(self, name: object) -> bool:
        return name in self.records

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records.values())

    def __len__(self) -> int:
        return len(self.records)

    def select(self, names: SiteFilter = None, *, kind: str | Iterable[str] | None = None,
               stack: str | None = None, layer: int | Iterable[int] | None = None) -> list[Record]:
        """Records whose site matches a glob / kind / stack / layer, in forward order."""
        matcher = site_matcher(names, kind, stack, layer)
        return [record for record in self.records.values() if matcher(record.site)]

    @property
    def stored_bytes(self) -> int:
        """Bytes held by stored tensors (what the memory budget counts)."""
        return self._stored_bytes

    def summary(self) -> str:
        """A readable table of the traced sites and what each captured."""
        family = getattr(self.site_map, "family", "?")
        lines = [f"attnprobe trace of {type(self.model).__name__} (adapter: {family}), "
                 f"{len(self.records)} sites, {self._stored_bytes / 2**20:.1f} MiB stored"]
        lines += [f"  {record!r}" for record in self.records.values()]
        notes = getattr(self.site_map, "notes", [])
        lines += [f"  note: {note}" for note in notes]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<attnprobe.Trace {type(self.model).__name__}: {len(self.records)} sites>"


class _Emitter(AttentionEmitter):
    """Routes one site's attention probabilities into its trace."""

    def __init__(self, trace: Trace, site: Site) -> None:
        self.trace = trace
        self.site = site

    def reserve(self, shape: tuple[int, ...], dtype: torch.dtype) -> bool:
        return self.trace._reserve_attention(self.site, shape, dtype)

    def emit(self, probabilities: torch.Tensor) -> None:
        self.trace._take(self.site, "attention", probabilities)


def trace(
    model: nn.Module,
    sites: SiteFilter = None,
    *,
    kind: str | Iterable[str] | None = None,
    stack: str | None = None,
    layer: int | Iterable[int] | None = None,
    capture: Iterable[str] | None = None,
    device: str | torch.device | None = None,
    attach: bool | SiteFilter = False,
    reducers: Sequence[StreamingReducer] = (),
    store: bool = True,
    memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
    adapter: Any = None,
    input_lengths: torch.Tensor | None = None,
) -> Trace:
    """Trace ``model``: use as ``with attnprobe.trace(model) as t: model(...)``.

    Args:
        model: any supported model (attnprobe's Conformer AED, Hugging Face Whisper / Wav2Vec2 /
            HuBERT / Wav2Vec2-Conformer / Speech2Text / Parakeet, torchaudio Conformer / Emformer /
            wav2vec2 / HuBERT), or any model with a stack of attention blocks (the generic site
            map finds its sites by structure; ``attnprobe.describe(model)`` shows them).
        sites: which sites to trace: ``None`` (all), a glob such as ``"encoder.*.self_attn"``,
            a list of globs, or a callable ``Site -> bool``.
        kind: keep only this site kind or these kinds (``"self_attn"``, ``"cross_attn"``,
            ``"ffn"``, ``"conv"``, ``"block"``, ``"frontend"``).
        stack: ``"encoder"`` or ``"decoder"``.
        layer: layer index or indices to keep.
        capture: subset of ``{"output", "input", "attention"}``; default: outputs everywhere,
            attention probabilities at attention sites, inputs at blocks and the frontend.
        device: move stored tensors there (e.g. ``"cpu"``); default: leave them where they are.
        attach: keep tensors attached to the autograd graph (``True``, or a site filter) — needed
            by gradient probes; default detached.
        reducers: streaming reducers that see every captured tensor as it is produced.
        store: ``False`` to keep nothing but what the reducers reduce (constant memory).
        memory_budget: bytes the stored tensors may take before the trace raises
            :class:`attnprobe.errors.MemoryBudgetExceeded` (checked before attention
            probabilities are materialised); ``None`` for no limit. Default 4 GiB.
        adapter: an :class:`attnprobe.adapters.SiteMap` class or instance (or an
            :class:`attnprobe.adapters.Adapter`) to use instead of the automatic choice.
        input_lengths: ``(batch,)`` valid frames (or samples) of the batch you will run, as the
            feature extractor gave them. For models whose encoder gets no padding mask (Whisper
            pads every input to 30 s), the site map turns them into the valid encoder frames, so
            that records mark the padding as padding; they win over what the call reveals.

    Returns:
        The :class:`Trace`; its records fill while the ``with`` block runs.
    """
    return Trace(model, sites, kind=kind, stack=stack, layer=layer, capture=capture,
                 device=device, attach=attach, reducers=reducers, store=store,
                 memory_budget=memory_budget, adapter=adapter, input_lengths=input_lengths)
