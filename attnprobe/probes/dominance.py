"""Branch dominance: how large each branch's contribution is next to the residual it is added to.

Paper section 4: in the block where time reverses, the MHSA branch output grows much larger than the
residual stream; the block's final LayerNorm then erases most of the small (unreversed) part. This
probe measures, per encoder block: the L2 norm over features, averaged over valid frames, of each
branch output (FF1, MHSA, conv, FF2) and of the branch input (the residual stream it is added to),
their ratio, and the cosine similarity between block input and block output, i.e. how much of
the input survives the block.

The branch input is the residual stream for pre-norm blocks (attnprobe's Conformer, Whisper); for
post-norm families the adapter's branch module may see a normalised stream instead.

Branch inputs are not captured by default; trace with::

    with attnprobe.trace(model, kind=("block", "ffn", "self_attn", "conv"), stack="encoder",
                         capture={"input", "output"}) as t:
        model(features, feature_lengths)
    branch_dominance(t)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from attnprobe.errors import CapabilityError, InputError
from attnprobe.lengths import valid_mask
from attnprobe.records import Captured, RecordSource, records_of
from attnprobe.reducers import replay
from attnprobe.sites import Site

from .result import ProbeResult

BRANCH_KINDS = ("ffn", "self_attn", "conv")


@dataclass(repr=False)
class BranchDominance(ProbeResult):
    """Norms per encoder block and branch, per sequence.

    Attributes:
        layers: encoder block indices.
        branches: branch names in forward order (``ffn1``, ``self_attn``, ``conv``, ``ffn2`` for a
            Conformer block).
        branch_norm: ``(sequences, layers, branches)`` mean L2 norm of the branch output; NaN where
            a block lacks that branch.
        residual_norm: ``(sequences, layers, branches)`` mean L2 norm of the branch input.
        block_input_norm / block_output_norm: ``(sequences, layers)``.
        survival: ``(sequences, layers)`` mean cosine similarity of block input and output frames.
    """

    layers: list[int]
    branches: list[str]
    branch_norm: np.ndarray
    residual_norm: np.ndarray
    block_input_norm: np.ndarray
    block_output_norm: np.ndarray
    survival: np.ndarray

    derived: ClassVar[tuple[str, ...]] = ("ratio", "mean_survival", "dominating")

    @property
    def per_sequence_ratio(self) -> np.ndarray:
        """``(sequences, layers, branches)`` branch norm / residual norm."""
        return self.branch_norm / self.residual_norm

    @property
    def ratio(self) -> np.ndarray:
        """``(layers, branches)`` branch / residual norm, averaged over sequences."""
        return self.per_sequence_ratio.mean(axis=0)

    @property
    def mean_survival(self) -> np.ndarray:
        """``(layers,)`` cosine(block input, block output), averaged over sequences."""
        return self.survival.mean(axis=0)

    @property
    def dominating(self) -> list[tuple[int, str]]:
        """``(layer, branch)`` pairs whose branch output is larger than the residual it joins."""
        return [(layer, branch) for layer, row in zip(self.layers, self.ratio)
                for branch, value in zip(self.branches, row) if value > 1.0]

    def summary(self) -> str:
        header = "  block " + " ".join(f"{branch:>10}" for branch in self.branches) + "  survival"
        lines = [f"branch dominance (branch norm / residual norm; {self.branch_norm.shape[0]} "
                 f"sequences)", header]
        for layer, row, survival in zip(self.layers, self.ratio, self.mean_survival):
            cells = " ".join(f"{value:>10.2f}" for value in row)
            lines.append(f"  {layer:>5} {cells}  {survival:>8.2f}")
        if self.dominating:
            where = ", ".join(f"{branch}@{layer}" for layer, branch in self.dominating)
            lines.append(f"  branches larger than their residual: {where}")
        return "\n".join(lines)


class BranchDominanceReducer:
    """Streaming version: keeps per-sequence mean norms per site; a block's input is held only
    until that block's output arrives."""

    def __init__(self, stack: str = "encoder") -> None:
        self.stack = stack
        # (site, "input" | "output" | "survival") -> per-call (batch,) values
        self._values: dict[tuple[Site, str], list[np.ndarray]] = {}
        self._pending_inputs: dict[Site, Captured] = {}
        self._refused: str | None = None

    def update(self, site: Site, what: str, captured: Captured) -> None:
        if (site.stack != self.stack or site.layer is None or what not in ("input", "output")
                or site.kind not in ("block", *BRANCH_KINDS) or self._refused is not None):
            return
        if site.kind == "block" and what == "output" and site in self._pending_inputs \
                and self._pending_inputs[site].value.shape != captured.value.shape:
            # Said by result(), so that the other probes of the same pass still report.
            self._refused = (f"{site.name} changes the shape of the residual stream (input "
                             f"{tuple(self._pending_inputs[site].value.shape)}, output "
                             f"{tuple(captured.value.shape)}): dominance compares branches with "
                             f"a residual that keeps frames and width")
            return
        self._values.setdefault((site, what), []).append(_mean_frame_norm(captured))
        if site.kind != "block":
            return
        if what == "input":
            self._pending_inputs[site] = captured
        elif site in self._pending_inputs:
            block_input = self._pending_inputs.pop(site)
            self._values.setdefault((site, "survival"), []).append(
                _mean_cosine(block_input, captured))

    def result(self) -> BranchDominance:
        """The result over every call seen so far."""
        if self._refused is not None:
            raise CapabilityError(self._refused)
        blocks = sorted({site for site, _ in self._values if site.kind == "block"}, key=_layer)
        layers = [_layer(site) for site in blocks]
        branch_sites = [site for site, what in self._values if site.kind != "block"
                        and what == "output" and _layer(site) in layers]
        branches = list(dict.fromkeys(site.name.rsplit(".", 1)[-1] for site in branch_sites))
        missing = [site.name for site in [*blocks, *branch_sites]
                   if (site, "input") not in self._values]
        if not blocks or not branches or missing:
            raise CapabilityError(
                "branch dominance needs the inputs and outputs of the blocks and of their "
                "branches; trace with attnprobe.trace(model, kind=('block', 'ffn', 'self_attn', "
                "'conv'), stack='encoder', capture={'input', 'output'})"
                + (f" (no inputs captured at {', '.join(missing[:3])})" if missing else ""))
        sequences = self._sequence_count(blocks[0])
        shape = (sequences, len(layers), len(branches))
        branch_norm, residual_norm = np.full(shape, np.nan), np.full(shape, np.nan)
        for site in branch_sites:
            position = (slice(None), layers.index(_layer(site)),
                        branches.index(site.name.rsplit(".", 1)[-1]))
            branch_norm[position] = self._stacked(site, "output", sequences)
            residual_norm[position] = self._stacked(site, "input", sequences)
        return BranchDominance(
            layers=layers, branches=branches,
            branch_norm=branch_norm, residual_norm=residual_norm,
            block_input_norm=np.stack([self._stacked(b, "input", sequences) for b in blocks], 1),
            block_output_norm=np.stack([self._stacked(b, "output", sequences) for b in blocks], 1),
            survival=np.stack([self._stacked(b, "survival", sequences) for b in blocks], 1))

    def _sequence_count(self, site: Site) -> int:
        return int(sum(len(values) for values in self._values.get((site, "output"), [])))

    def _stacked(self, site: Site, what: str, sequences: int) -> np.ndarray:
        values = np.concatenate(self._values.get((site, what), [np.empty(0)]))
        if values.shape[0] != sequences:
            raise InputError(f"{site.name} captured {what}s for {values.shape[0]} sequences but "
                             f"the blocks for {sequences}; trace whole forward passes of the model")
        return values


def _layer(site: Site) -> int:
    assert site.layer is not None, "update() keeps only sites with a layer"
    return site.layer


def _masked_mean(values: torch.Tensor, captured: Captured) -> np.ndarray:
    """``(batch, frames)`` -> ``(batch,)`` mean over each sequence's valid frames."""
    valid = valid_mask(captured.lengths.to(values.device), values.shape[1])
    total = values.masked_fill(~valid, 0.0).sum(1)
    return (total / captured.lengths.clamp_min(1).to(total.dtype)).detach().cpu().double().numpy()


def _mean_frame_norm(captured: Captured) -> np.ndarray:
    """``(batch,)`` mean over valid frames of the L2 norm over features."""
    return _masked_mean(torch.linalg.vector_norm(captured.value.detach().float(), dim=-1), captured)


def _mean_cosine(block_input: Captured, block_output: Captured) -> np.ndarray:
    """``(batch,)`` mean over valid frames of cos(input frame, output frame)."""
    if block_input.value.shape != block_output.value.shape:
        raise InputError(f"block input {tuple(block_input.value.shape)} and output "
                         f"{tuple(block_output.value.shape)} differ in shape; cosine survival "
                         f"needs a block that keeps frames and width")
    cosine = F.cosine_similarity(block_input.value.detach().float(),
                                 block_output.value.detach().float(), dim=-1)
    return _masked_mean(cosine, block_output)


def branch_dominance(source: RecordSource, stack: str = "encoder") -> BranchDominance:
    """Branch dominance from stored records (traced with ``capture={"input", "output"}``)."""
    reducer = BranchDominanceReducer(stack)
    replay(records_of(source), reducer)
    return reducer.result()
