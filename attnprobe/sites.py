"""Sites: named places in a model where a trace can look.

A site is described by data only (name, kind, stack, layer, module path). Which tensors a site
yields and how they are obtained is the business of the adapter that found it
(:class:`attnprobe.adapters.base.SiteBinding`).

Names are stable and readable: ``encoder.frontend``, ``encoder.3`` (a block: its input and output
are the residual stream), ``encoder.3.self_attn``, ``encoder.3.ffn1``, ``encoder.3.conv``,
``decoder.1.cross_attn``. Layers count from 0.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, Union

SiteKind = Literal["frontend", "block", "self_attn", "cross_attn", "ffn", "conv"]
SITE_KINDS: tuple[str, ...] = ("frontend", "block", "self_attn", "cross_attn", "ffn", "conv")
ATTENTION_KINDS: frozenset[str] = frozenset({"self_attn", "cross_attn"})
Stack = Literal["encoder", "decoder"]
FRONTEND_SITE = "encoder.frontend"
"""The site whose output is what enters the first encoder block (the encoder input)."""


@dataclass(frozen=True)
class Site:
    """A named place in a model.

    Attributes:
        name: stable readable name, e.g. ``"encoder.3.self_attn"``.
        kind: one of :data:`SITE_KINDS`.
        stack: ``"encoder"`` or ``"decoder"``.
        layer: block index within the stack (from 0); ``None`` for the frontend.
        module_path: dotted path of the module in the model (``model.get_submodule(path)``).
    """

    name: str
    kind: str
    stack: str
    layer: int | None
    module_path: str

    def __post_init__(self) -> None:
        if self.kind not in SITE_KINDS:
            raise ValueError(f"site kind {self.kind!r} is not one of {SITE_KINDS}")

    @property
    def is_attention(self) -> bool:
        return self.kind in ATTENTION_KINDS


SiteFilter = Union[None, str, Iterable[str], Callable[[Site], bool]]


def site_matcher(
    names: SiteFilter = None,
    kind: str | Iterable[str] | None = None,
    stack: str | None = None,
    layer: int | Iterable[int] | None = None,
) -> Callable[[Site], bool]:
    """Build a predicate over sites.

    Args:
        names: ``None`` (all), a glob (``"encoder.*.self_attn"``), a list of globs, or a callable
            taking a :class:`Site` and returning ``True`` to keep it.
        kind: a kind or several kinds to keep.
        stack: ``"encoder"`` or ``"decoder"``.
        layer: a layer index or several.
    """
    kinds = _as_set(kind)
    layers = _as_set(layer)
    if kinds is not None:
        unknown = kinds - set(SITE_KINDS)
        if unknown:
            raise ValueError(f"unknown site kind(s) {sorted(unknown)}; kinds are {SITE_KINDS}")

    def matches(site: Site) -> bool:
        if kinds is not None and site.kind not in kinds:
            return False
        if stack is not None and site.stack != stack:
            return False
        if layers is not None and site.layer not in layers:
            return False
        return _name_matches(names, site)

    return matches


def _name_matches(names: SiteFilter, site: Site) -> bool:
    if names is None:
        return True
    if callable(names):
        return bool(names(site))
    patterns = [names] if isinstance(names, str) else list(names)
    return any(fnmatch.fnmatchcase(site.name, pattern) for pattern in patterns)


def _as_set(value: object) -> set | None:
    if value is None:
        return None
    if isinstance(value, (str, int)):
        return {value}
    return set(value)  # type: ignore[arg-type]


def format_sites(sites: Iterable[Site]) -> str:
    """A readable table of sites, one per line."""
    rows = [(s.name, s.kind, s.stack, "-" if s.layer is None else str(s.layer), s.module_path)
            for s in sites]
    header = ("name", "kind", "stack", "layer", "module")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)
