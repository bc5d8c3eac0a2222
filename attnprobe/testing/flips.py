"""Reversals like the ones training produces, planted exactly, each with its right answer.

:func:`~attnprobe.testing.plant_reversal` reverses a whole block output: every probe scores +-1
and the case is easy. The reversals that training produces are mixtures. These plantings make
them on purpose, in any model with an adapter, over each sequence's valid frames only (padding,
the frames that carry no audio, stays put), and leave the model as it was on exit:

- :func:`plant_branch_reversal`: the paper's mechanism (section 4). A block's self-attention
  branch attends the anti-diagonal (output frame ``t`` averages the branch input around frame
  ``L-1-t``, over ``spread`` frames) with identity values, times ``scale``, on a ``fraction`` of
  its channels (heads); the block's later branches and its LayerNorm follow as usual. The block
  output holds both orders: the residual's and the branch's.
- :func:`plant_channel_reversal`: a ``fraction`` of the channels of one block's output reversed
  in time, the rest kept.
- :func:`plant_partial_reversal`: after each given block, a given share of the mirror pairs
  ``(t, L-1-t)`` of frames swapped, cumulatively; shares growing over two or three consecutive
  blocks spread one reversal over them. Share 1 is :func:`plant_reversal`.

Each yields a :class:`PlantedReversal` that says what a perfect probe answers (section "what a
perfect probe answers" of :class:`PlantedReversal`); the answer assumes that the model's own
blocks keep time order, as random and unflipped trained models do.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..adapters import find_site_map
from ..capture import pick_argument, pick_tensor, replace_tensor
from ..probes.statistics import rank_correlation_with_position
from ..probes.verdict import REVERSAL_THRESHOLD, turning_block
from .plantings import _binding, _LengthWatcher, plant_permutation

GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass
class PlantedReversal:
    """A planting and what a perfect probe answers for the batches it last saw.

    What a perfect probe answers: per encoder block, :meth:`ideal_scores`, the score a probe that
    measures exactly which order the block output's content is in reports; the right verdict
    and block are :func:`attnprobe.probes.verdict.turning_block` of those scores
    (:meth:`answer`). Blocks before the first planted one score +1, and every block keeps the
    score of the planted block before it (the model's own blocks keep time order).

    - partial reversal (shares): the Spearman correlation of the planted frame order, averaged
      over the batch's sequences (``1 - 2 x`` the share, weighted by distance from the middle);
    - branch reversal: -1 where the reversed content outweighs the unreversed content it is added
      to (:attr:`ratios` > 1: mean over valid frames of ``|| reversed part || / || branch input +
      unreversed part of the branch ||``), +1 where it does not;
    - channel reversal: -1 where the reversed channels hold more than half the energy of the
      block output (:attr:`shares` > 1/2), +1 otherwise.

    A mixture near the balance point (ratio near 1, share near 1/2) holds both orders in equal
    measure, so no answer is right there; :meth:`margin` says how far from it a planting is.

    Attributes:
        blocks: every encoder block of the model, in order.
        kind: ``"partial"``, ``"branch"`` or ``"channels"``.
        planned: per planted block, the asked-for share (partial) or the nominal strength.
        ratios / shares: per planted block, measured in the last forward pass (branch /
            channels).
        lengths: valid encoder frames of the last batch.
    """

    blocks: list[int]
    kind: str
    planned: dict[int, float]
    ratios: dict[int, float] = field(default_factory=dict)
    shares: dict[int, float] = field(default_factory=dict)
    lengths: list[int] = field(default_factory=list)

    def planted_scores(self) -> dict[int, float]:
        """Per planted block, the ideal score of that block's output."""
        if self.kind == "partial":
            if not self.lengths:
                raise RuntimeError("run the model under the planting first: the ideal scores of "
                                   "a partial reversal depend on the sequence lengths")
            return {block: float(np.mean([rank_correlation_with_position(
                        cumulative_pairs(length, share)) for length in self.lengths]))
                    for block, share in self.planned.items()}
        measured = self.ratios if self.kind == "branch" else self.shares
        balance = 1.0 if self.kind == "branch" else 0.5
        if set(measured) != set(self.planned):
            raise RuntimeError("run the model under the planting first: the answer depends on "
                               "the norms it measures")
        return {block: -1.0 if value > balance else 1.0 for block, value in measured.items()}

    def ideal_scores(self) -> np.ndarray:
        """``(blocks,)`` what a perfect probe scores each block's output."""
        planted = self.planted_scores()
        scores, current = [], 1.0
        for block in self.blocks:
            current = planted.get(block, current)
            scores.append(current)
        return np.array(scores)

    def answer(self, threshold: float = REVERSAL_THRESHOLD) -> int | None:
        """The block where time turned, or ``None``: the rule on :meth:`ideal_scores`."""
        return turning_block(self.ideal_scores(), self.blocks, threshold)

    def margin(self, threshold: float = REVERSAL_THRESHOLD) -> float:
        """How clear the planting is: for mixtures, the smallest ``|log ratio|`` (branch) or
        ``|share - 1/2|`` (channels) over planted blocks; for partial reversals, in score units,
        the smaller of the planted scores' distance from ``+-threshold`` and half the gap between
        the largest and the next largest fall the rule compares (step 3)."""
        if self.kind == "branch":
            return min(abs(math.log(max(value, 1e-12))) for value in self.ratios.values())
        if self.kind == "channels":
            return min(abs(value - 0.5) for value in self.shares.values())
        planted = self.planted_scores()
        margin = min(abs(abs(score) - threshold) for score in planted.values())
        scores = self.ideal_scores()
        start = len(scores)
        while start > 0 and scores[start - 1] < threshold:
            start -= 1
        falls = sorted((np.concatenate([[1.0], scores[:-1]]) - scores)[start:], reverse=True)
        if len(falls) > 1:
            margin = min(margin, (falls[0] - falls[1]) / 2)
        return float(margin)


def pair_order(pairs: int) -> np.ndarray:
    """``(pairs,)`` the order in which mirror pairs are swapped as the share grows: a golden-ratio
    sequence, so that any share of them is spread evenly from the edges to the middle."""
    return np.argsort((np.arange(1, pairs + 1) * GOLDEN) % 1.0, kind="stable")


def cumulative_pairs(length: int, share: float) -> np.ndarray:
    """``(length,)`` frame order after swapping ``round(share x pairs)`` of the ``length // 2``
    mirror pairs ``(i, length-1-i)``: output frame ``t`` holds frame ``order[t]``."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"a share of mirror pairs lies in [0, 1], got {share}")
    order = np.arange(length)
    pairs = length // 2
    for pair in pair_order(pairs)[: round(share * pairs)]:
        order[pair], order[length - 1 - pair] = length - 1 - pair, pair
    return order


@contextmanager
def plant_partial_reversal(model: nn.Module, shares: Mapping[int, float]
                           ) -> Iterator[PlantedReversal]:
    """After each block ``b`` of ``shares``, ``shares[b]`` of the mirror pairs of frames are
    swapped, counted from the encoder input (a later block's share includes the earlier ones'
    swaps): ``{3: 1.0}`` is :func:`plant_reversal` at block 3; ``{2: 0.3, 3: 0.7, 4: 1.0}``
    spreads a reversal over blocks 2-4.

    Args:
        model: any supported model.
        shares: encoder block -> share of mirror pairs swapped after it, in [0, 1].
    """
    planted = PlantedReversal(_encoder_blocks(model), "partial", dict(sorted(shares.items())))
    previous: dict[int, float] = {}
    share_before = 0.0
    for block, share in planted.planned.items():
        previous[block] = share_before
        share_before = share

    def step(block: int) -> Any:
        def order(length: int) -> torch.Tensor:
            before = cumulative_pairs(length, previous[block])
            after = cumulative_pairs(length, planted.planned[block])
            # The stream holds frame before[t] at t; gather so that it holds after[t]: swaps are
            # their own inverse, so the frame that holds after[t] now is before[after[t]].
            return torch.from_numpy(before[after])
        return order

    with _recorded_lengths(model, planted), _nested(
            [plant_permutation(model, block, step(block)) for block in planted.planned]):
        yield planted


@contextmanager
def plant_channel_reversal(model: nn.Module, after_block: int, fraction: float
                           ) -> Iterator[PlantedReversal]:
    """Reverse in time channels ``0 .. round(fraction x width) - 1`` of encoder block
    ``after_block``'s output, over each sequence's valid frames; the other channels stay.

    :attr:`PlantedReversal.shares` holds the share of the output's energy (sum of squares over
    valid frames) in the reversed channels.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction is a share of channels in [0, 1], got {fraction}")
    site_map = find_site_map(model)
    binding = _binding(site_map, f"encoder.{after_block}")
    planted = PlantedReversal(_encoder_blocks(model), "channels", {after_block: fraction})
    lengths = _LengthWatcher(site_map)

    def reverse(_module: nn.Module, _args: tuple, _kwargs: dict, output: Any) -> Any:
        frames = _batch_first(pick_tensor(output, binding.output_index), binding.batch_first)
        valid = lengths.get("encoder", frames)
        channels = round(fraction * frames.shape[-1])
        mirrored = _mirror_frames(frames, valid)
        changed = torch.cat([mirrored[..., :channels], frames[..., channels:]], dim=-1)
        energy = _valid_sum(changed.detach().pow(2), valid)
        planted.shares[after_block] = float(_valid_sum(changed[..., :channels].detach().pow(2), valid).sum()
                                            / energy.sum().clamp_min(1e-30))
        planted.lengths = valid.tolist()
        return replace_tensor(output, binding.output_index,
                              _batch_first(changed, binding.batch_first))

    with lengths, _hook(binding.output_module or binding.module, reverse):
        yield planted


@contextmanager
def plant_branch_reversal(model: nn.Module, block: int, scale: float = 3.0, spread: int = 1,
                          fraction: float = 1.0, branch: str = "self_attn"
                          ) -> Iterator[PlantedReversal]:
    """The paper's flip: block ``block``'s ``branch`` attends the anti-diagonal and outgrows the
    residual it is added to.

    The branch's output becomes, on channels ``0 .. round(fraction x width) - 1``, ``scale`` times
    the mean of its input over the ``spread`` frames centred on the mirror frame ``L-1-t``
    (clipped to the valid frames); its own output on the other channels. Padded frames keep the
    branch's own output.

    Args:
        model: any supported model whose branch site is computed by a module of the model.
        block: encoder block index.
        scale: size of the reversed part next to the branch input (the paper saw about 3).
        spread: frames each output frame averages (1: exact mirror; more: a trained attention's
            band).
        fraction: share of channels (heads of a branch with identity values) reversed.
        branch: the branch site's last name part (``self_attn``, ``ffn1``, ``conv``, ...).
    """
    if spread < 1 or not 0.0 < fraction <= 1.0 or scale < 0.0:
        raise ValueError(f"spread must be >= 1, fraction in (0, 1] and scale >= 0; got "
                         f"{spread}, {fraction} and {scale}")
    site_map = find_site_map(model)
    binding = _binding(site_map, f"encoder.{block}.{branch}")
    module = binding.output_module or binding.module
    if binding.batch_first is False or not any(module is item for item in model.modules()):
        raise ValueError(f"encoder.{block}.{branch} is not a batch-first branch computed by a "
                         f"module of the model; plant the reversal in another branch")
    planted = PlantedReversal(_encoder_blocks(model), "branch", {block: scale})
    lengths = _LengthWatcher(site_map)

    def reverse(_module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        branch_input = pick_argument(args, kwargs, binding.input_position, binding.input_name)
        own = pick_tensor(output, binding.output_index)
        if branch_input is None or own is None or branch_input.shape != own.shape:
            raise TypeError(f"encoder.{block}.{branch}: cannot find a branch input shaped like "
                            f"its output to reverse")
        valid = lengths.get("encoder", own)
        channels = max(1, round(fraction * own.shape[-1]))
        reversed_part = scale * _mirror_average(branch_input, valid, spread)[..., :channels]
        valid_mask = _valid_mask(valid, own.shape[1], own.device)[..., None]
        changed = torch.cat([torch.where(valid_mask, reversed_part, own[..., :channels]),
                             own[..., channels:]], dim=-1)
        unreversed = branch_input + torch.cat(
            [torch.zeros_like(reversed_part), own[..., channels:]], dim=-1)
        ratio = (reversed_part.norm(dim=-1) / unreversed.norm(dim=-1).clamp_min(1e-30)).detach()
        planted.ratios[block] = float((_valid_sum(ratio[..., None], valid)
                                       / valid.clamp_min(1)).mean())
        planted.lengths = valid.tolist()
        return replace_tensor(output, binding.output_index, changed)

    with lengths, _hook(module, reverse):
        yield planted


def _encoder_blocks(model: nn.Module) -> list[int]:
    layers = find_site_map(model).encoder_layers
    if not layers:
        raise LookupError("the model's adapter exposes no encoder blocks to plant a reversal in")
    return list(layers)


def _valid_mask(lengths: torch.Tensor, frames: int, device: torch.device) -> torch.Tensor:
    return torch.arange(frames, device=device)[None, :] < lengths.to(device)[:, None]


def _valid_sum(values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``(batch, frames, channels)`` -> ``(batch,)`` sum over valid frames and channels."""
    mask = _valid_mask(lengths, values.shape[1], values.device)[..., None]
    return values.masked_fill(~mask, 0.0).sum(dim=(1, 2))


def _mirror_frames(frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``(batch, frames, channels)`` with each sequence's valid frames reversed."""
    index = torch.arange(frames.shape[1], device=frames.device).repeat(frames.shape[0], 1)
    for row, length in enumerate(lengths.tolist()):
        index[row, :length] = torch.arange(length - 1, -1, -1, device=frames.device)
    return frames.gather(1, index[..., None].expand_as(frames))


def _mirror_average(frames: torch.Tensor, lengths: torch.Tensor, spread: int) -> torch.Tensor:
    """``(batch, frames, channels)``: output frame ``t`` is the mean of the valid frames within
    the ``spread``-frame window centred on ``L-1-t``; padded frames 0."""
    averaged = torch.zeros_like(frames)
    for row, length in enumerate(lengths.tolist()):
        mirror = torch.arange(length - 1, -1, -1, device=frames.device)
        offsets = torch.arange(spread, device=frames.device) - (spread - 1) // 2
        window = (mirror[:, None] + offsets[None, :])
        inside = (window >= 0) & (window < length)
        weights = inside.to(frames.dtype) / inside.sum(-1, keepdim=True).to(frames.dtype)
        gathered = frames[row, window.clamp(0, length - 1)]      # (length, spread, channels)
        averaged[row, :length] = (weights[..., None] * gathered).sum(1)
    return averaged


def _batch_first(tensor: torch.Tensor | None, batch_first: bool) -> torch.Tensor:
    if tensor is None:
        raise TypeError("the block returned no tensor to plant a reversal in")
    return tensor if batch_first else tensor.transpose(0, 1)


@contextmanager
def _hook(module: nn.Module, change: Any) -> Iterator[None]:
    """A forward hook (with keyword arguments) that replaces the module's output, placed before
    any other hook so that traces see the changed output."""
    handle = module.register_forward_hook(change, with_kwargs=True, prepend=True)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def _recorded_lengths(model: nn.Module, planted: PlantedReversal) -> Iterator[None]:
    """Keep the valid encoder lengths of every forward pass in ``planted.lengths``."""
    watcher = _LengthWatcher(find_site_map(model))
    binding = _binding(find_site_map(model), f"encoder.{planted.blocks[0]}")

    def record(_module: nn.Module, _args: tuple, _kwargs: dict, output: Any) -> Any:
        frames = _batch_first(pick_tensor(output, binding.output_index), binding.batch_first)
        planted.lengths = watcher.get("encoder", frames).tolist()
        return output

    with watcher, _hook(binding.output_module or binding.module, record):
        yield


@contextmanager
def _nested(managers: list[Any]) -> Iterator[None]:
    if not managers:
        yield
        return
    with managers[0], _nested(managers[1:]):
        yield
