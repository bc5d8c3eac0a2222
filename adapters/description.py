"""``attnprobe.describe(model)``: what attnprobe found in a model and what it did not, so that a
user can see why a probe is unavailable before running it.

Usage::

    print(attnprobe.describe(model))                    # sites, stacks, frontend, probes, notes
    print(attnprobe.describe(model, runner=MyRunner))   # with your runner
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from torch import nn

from attnprobe.sites import Site

from .runner import Runner

if TYPE_CHECKING:
    from . import Adapter

CAPABILITIES = ("run", "label_log_probs", "ctc_log_probs")


@dataclass
class Description:
    """What was found in one model.

    Attributes:
        model: the model's class name.
        family: the site map's family (``"generic"`` when found by structure).
        runner: the runner's family.
        sites: every site, in forward order.
        stacks: ``(role, module path, blocks)`` of every stack found (generic site map only;
            stacks that are not probed have roles ``lm`` or ``extra``).
        probes: per probe, ``None`` when it can run, else why not.
        frame_shift_seconds: the runner's, or ``None`` (alignments then count frames).
        notes: what the site map guessed and could not find.
    """

    model: str
    family: str
    runner: str
    sites: list[Site]
    stacks: list[tuple[str, str, int]] = field(default_factory=list)
    probes: dict[str, str | None] = field(default_factory=dict)
    frame_shift_seconds: float | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{self.model}: site map {self.family!r}, runner {self.runner!r}"]
        if self.stacks:
            lines.append("stacks:")
            lines += [f"  {role:<8} {path} ({blocks} blocks)"
                      + ("" if role in ("encoder", "decoder") else ": not probed")
                      for role, path, blocks in self.stacks]
        lines.append("sites:")
        lines += [f"  {line}" for line in _site_lines(self.sites)]
        shift = ("unknown: alignments count frames, not seconds"
                 if self.frame_shift_seconds is None else f"{self.frame_shift_seconds * 1000:g} ms")
        lines.append(f"input frame shift: {shift}")
        lines.append("probes:")
        lines += [f"  {name}: {'yes' if reason is None else 'no, ' + reason}"
                  for name, reason in self.probes.items()]
        if self.notes:
            lines.append("notes:")
            lines += [f"  - {note}" for note in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    __repr__ = __str__  # what an interactive session shows for attnprobe.describe(model)


def _site_lines(sites: list[Site]) -> list[str]:
    """One line per stack layout: the frontend, then each stack's first block and its branches."""
    lines = []
    for site in sites:
        if site.kind == "frontend":
            lines.append(f"encoder.frontend <- {site.module_path}")
    for stack in ("encoder", "decoder"):
        blocks = [site for site in sites if site.stack == stack and site.kind == "block"]
        if not blocks:
            lines.append(f"{stack}: none")
            continue
        branches = [site.name.rsplit(".", 1)[-1] for site in sites
                    if site.stack == stack and site.layer == blocks[0].layer
                    and site.kind not in ("block", "frontend")]
        lines.append(f"{stack}.0 .. {stack}.{len(blocks) - 1} <- {blocks[0].module_path} ...; "
                     f"branches: {', '.join(branches) or 'none found'}")
    return lines


def capabilities(runner: Runner) -> dict[str, bool]:
    """Which of :data:`CAPABILITIES` ``runner`` provides: the runner's own answer where it has
    one (``runner.capabilities()``), else the methods its class overrides."""
    own = getattr(runner, "capabilities", None)
    if callable(own):
        return dict(own())
    return {name: getattr(type(runner), name) is not getattr(Runner, name)
            for name in CAPABILITIES}


def describe_adapter(model: nn.Module, adapter: Adapter) -> Description:
    """The :class:`Description` of ``model`` under ``adapter``."""
    site_map, runner = adapter.site_map, adapter.runner
    sites = [binding.site for binding in site_map.bindings()]
    can = capabilities(runner)
    structure = getattr(site_map, "structure", None)
    stacks = [] if structure is None else [(stack.role, stack.path, len(stack.blocks))
                                           for stack in structure.stacks]
    description = Description(type(model).__name__, site_map.family, runner.family, sites, stacks,
                              frame_shift_seconds=runner.frame_shift_seconds,
                              notes=list(site_map.notes))
    description.probes = probe_availability(sites, can)
    return description


def probe_availability(sites: list[Site], can: dict[str, bool]) -> dict[str, str | None]:
    """Per probe, ``None`` when the sites and runner support it, else why not (labels in the
    batch are assumed where a probe needs them)."""
    def having(kind: str, stack: str) -> bool:
        return any(site.kind == kind and site.stack == stack for site in sites)

    cannot_run = None if can["run"] else "the runner cannot run the model (pass runner=)"
    no_blocks = None if having("block", "encoder") else "no encoder blocks found"
    no_decoder = None if having("cross_attn", "decoder") else \
        "no decoder with cross-attention found"
    no_labels = None if can["label_log_probs"] else \
        "the runner has no teacher-forced label log-probabilities"
    encoder_branches = any(site.stack == "encoder" and site.kind in ("self_attn", "ffn", "conv")
                           for site in sites)
    return {
        "frame mapping (the verdict)": cannot_run or no_blocks,
        "self-attention diagonality": cannot_run or (None if having("self_attn", "encoder")
                                                     else "no encoder self-attention found"),
        "branch dominance": cannot_run or no_blocks or (None if encoder_branches else
                                                        "no branches found in the encoder blocks"),
        "cross-attention monotonicity": cannot_run or no_decoder,
        "gradient maps": cannot_run or no_decoder or no_labels,
        "gradient alignment": None if can["label_log_probs"] or can["ctc_log_probs"] else
        "the runner has neither label log-probabilities nor CTC log-probabilities",
    }
