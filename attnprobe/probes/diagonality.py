"""Self-attention diagonality: does a layer attend near the query frame, or near its mirror image?

In the block where the paper's encoder reverses time, self-attention forms an anti-diagonal: query
frame ``t`` attends key frame ``L-1-t`` of its sequence (``L`` valid frames; paper section 3).

Per layer and head, and per sequence:

- ``near_diagonal``: attention mass on keys within ``band`` frames of the query (``|j - t| <=
  band``), averaged over queries; ``near_anti_diagonal``: the same around the mirror frame
  ``L-1-t``. Queries near the centre, where the two bands share keys (``|2t - (L-1)| <= 2 band``),
  cannot tell the lines apart and are left out.
- score ``(near_diagonal - near_anti_diagonal) / (near_diagonal + near_anti_diagonal)`` in
  [-1, 1]: +1 attention on the diagonal, -1 on the anti-diagonal, exactly 0 for uniform attention
  (the reflection ``j -> L-1-j`` maps one band onto the other), 0 when neither band has mass.
- the distribution of relative offsets ``j - t``: a histogram over ``-max_offset .. max_offset``
  (the end bins collect everything beyond), averaged over queries.

Attention is read in chunks of query rows, so no temporary grows beyond
``heads x chunk x frames`` next to the attention tensor itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from attnprobe.errors import CapabilityError, InputError
from attnprobe.records import Captured, RecordSource, records_of
from attnprobe.reducers import replay
from attnprobe.sites import Site

from .result import ProbeResult
from .statistics import MINIMUM_POSITIONS
from .verdict import REVERSAL_THRESHOLD

DEFAULT_MAX_OFFSET = 16
"""Histogram range in frames; 16 is the relative-position clip of the paper's model."""
DEFAULT_BAND = 1
"""Keys within this many frames of a line count as near it."""
QUERY_CHUNK = 256


@dataclass(repr=False)
class SelfAttentionDiagonality(ProbeResult):
    """Diagonal versus anti-diagonal attention per encoder layer and head.

    Attributes:
        sites: the self-attention sites, in layer order.
        layers: their layer indices.
        near_diagonal / near_anti_diagonal: ``(sequences, layers, heads)`` mean attention mass
            within ``band`` frames of each line; NaN where a layer has fewer heads.
        offset_histogram: ``(sequences, layers, heads, 2 * max_offset + 1)`` share of attention
            at each relative offset ``key - query``.
        band / max_offset: see the module docstring.
        threshold: a layer is ``"anti-diagonal"`` at mean score <= -threshold, ``"diagonal"`` at
            >= threshold.
        notes: caveats found while reading the records.
    """

    sites: list[str]
    layers: list[int]
    near_diagonal: np.ndarray
    near_anti_diagonal: np.ndarray
    offset_histogram: np.ndarray
    band: int = DEFAULT_BAND
    max_offset: int = DEFAULT_MAX_OFFSET
    threshold: float = REVERSAL_THRESHOLD
    notes: list[str] = field(default_factory=list)

    derived: ClassVar[tuple[str, ...]] = ("scores", "layer_scores", "verdicts",
                                          "reversed_at")

    @property
    def per_sequence(self) -> np.ndarray:
        """``(sequences, layers, heads)`` scores in [-1, 1]."""
        total = self.near_diagonal + self.near_anti_diagonal
        difference = self.near_diagonal - self.near_anti_diagonal
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, difference / total, np.where(np.isnan(total), np.nan, 0.0))

    @property
    def offsets(self) -> np.ndarray:
        """``(2 * max_offset + 1,)`` the relative offsets of the histogram bins."""
        return np.arange(-self.max_offset, self.max_offset + 1)

    @property
    def scores(self) -> np.ndarray:
        """``(layers, heads)`` scores averaged over sequences."""
        return self.per_sequence.mean(axis=0)

    @property
    def layer_scores(self) -> np.ndarray:
        """``(layers,)`` scores averaged over sequences and heads."""
        return np.nanmean(self.scores, axis=1)

    @property
    def histogram(self) -> np.ndarray:
        """``(layers, heads, offsets)`` offset histogram averaged over sequences."""
        return self.offset_histogram.mean(axis=0)

    @property
    def verdicts(self) -> list[str]:
        """Per layer: ``"diagonal"``, ``"anti-diagonal"`` or ``"neither"``."""
        return [_classify(score, self.threshold) for score in self.layer_scores]

    @property
    def reversed_at(self) -> int | None:
        """The first layer whose heads, on average, attend near the anti-diagonal: the block
        that turns time shows such attention (paper section 3)."""
        for layer, verdict in zip(self.layers, self.verdicts):
            if verdict == "anti-diagonal":
                return layer
        return None

    def summary(self) -> str:
        lines = [f"self-attention diagonality (+1 diagonal, -1 anti-diagonal, 0 uniform; band "
                 f"+-{self.band} frames; {self.near_diagonal.shape[0]} sequences)"]
        for site, score, verdict, row in zip(self.sites, self.layer_scores, self.verdicts,
                                             self.scores):
            heads = " ".join(f"{value:+.2f}" for value in row if not np.isnan(value))
            lines.append(f"  {site}: {score:+.2f} {verdict} (heads {heads})")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def _classify(score: float, threshold: float) -> str:
    if score <= -threshold:
        return "anti-diagonal"
    if score >= threshold:
        return "diagonal"
    return "neither"


class SelfAttentionDiagonalityReducer:
    """Streaming version: keeps a few numbers per sequence, layer and head.

    Args:
        max_offset: histogram range in frames.
        threshold: see :class:`SelfAttentionDiagonality`.
        band: keys within this many frames of a line count as near it.
        stack: which stack's self-attention to score.
    """

    def __init__(self, max_offset: int = DEFAULT_MAX_OFFSET,
                 threshold: float = REVERSAL_THRESHOLD, band: int = DEFAULT_BAND,
                 stack: str = "encoder") -> None:
        if max_offset < 1 or band < 0:
            raise ValueError(f"max_offset must be >= 1 and band >= 0 frames, got {max_offset} "
                             f"and {band}")
        self.max_offset = max_offset
        self.threshold = threshold
        self.band = band
        self.stack = stack
        self._calls: dict[Site, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        self._notes: list[str] = []

    def update(self, site: Site, what: str, captured: Captured) -> None:
        if site.kind != "self_attn" or site.stack != self.stack or what != "attention":
            return
        self._calls.setdefault(site, []).append(
            diagonality_of_call(captured, self.band, self.max_offset))
        if not captured.lengths_known and captured.value.shape[0] > 1:
            note = (f"{site.name}: valid lengths unknown, so the whole padded length was scored; "
                    f"call the model itself (not a submodule) inside the trace")
            if note not in self._notes:
                self._notes.append(note)

    def result(self) -> SelfAttentionDiagonality:
        """The result over every call seen so far."""
        if not self._calls:
            raise CapabilityError(
                f"no {self.stack} self-attention probabilities were captured; trace the "
                f"'self_attn' sites with attention capture on (the default), and check "
                f"trace.summary() lists them")
        sites = sorted(self._calls, key=lambda site: (site.layer is None, site.layer, site.name))
        per_site = [[np.concatenate(part) for part in zip(*self._calls[site])] for site in sites]
        sequences = {parts[0].shape[0] for parts in per_site}
        if len(sequences) != 1:
            raise InputError(f"self-attention layers ran for different numbers of sequences "
                             f"{sorted(sequences)}; trace whole forward passes of the model")
        count = sequences.pop()
        heads = max(parts[0].shape[1] for parts in per_site)
        near = np.full((count, len(sites), heads), np.nan)
        anti = np.full_like(near, np.nan)
        histogram = np.full((count, len(sites), heads, 2 * self.max_offset + 1), np.nan)
        for layer, (site_near, site_anti, site_histogram) in enumerate(per_site):
            width = site_near.shape[1]
            near[:, layer, :width] = site_near
            anti[:, layer, :width] = site_anti
            histogram[:, layer, :width] = site_histogram
        return SelfAttentionDiagonality(
            sites=[site.name for site in sites],
            layers=[-1 if site.layer is None else site.layer for site in sites],
            near_diagonal=near, near_anti_diagonal=anti, offset_histogram=histogram,
            band=self.band, max_offset=self.max_offset, threshold=self.threshold,
            notes=list(self._notes))


def diagonality_of_call(captured: Captured, band: int = DEFAULT_BAND,
                        max_offset: int = DEFAULT_MAX_OFFSET
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Band masses and offset histograms of one self-attention call.

    Args:
        captured: attention ``(batch, heads, frames, frames)`` with its valid ``lengths``.
        band: keys within this many frames of a line count as near it.
        max_offset: histogram range.

    Returns:
        ``(batch, heads)`` mass near the diagonal, the same near the anti-diagonal, and
        ``(batch, heads, 2 * max_offset + 1)`` histograms.
    """
    attention = captured.value.detach()
    batch, heads, queries, keys = attention.shape
    if queries != keys:
        raise InputError(f"self-attention must be square, got {queries} queries x {keys} keys")
    minimum = max(MINIMUM_POSITIONS, 2 * band + 2)
    short = [index for index, length in enumerate(captured.lengths.tolist()) if length < minimum]
    if short:
        raise InputError(
            f"sequence {short[0]} has {int(captured.lengths[short[0]])} valid frames, but "
            f"self-attention diagonality with band {band} needs at least {minimum} (fewer leave "
            f"no query whose diagonal and anti-diagonal bands are apart); use longer inputs")
    near = np.empty((batch, heads))
    anti = np.empty((batch, heads))
    histograms = np.empty((batch, heads, 2 * max_offset + 1))
    for index in range(batch):
        length = int(captured.lengths[index])
        sums = torch.zeros(3, heads, dtype=torch.float64, device=attention.device)
        histogram = torch.zeros(heads, 2 * max_offset + 1, device=attention.device)
        for start in range(0, length, QUERY_CHUNK):
            rows = attention[index, :, start : min(start + QUERY_CHUNK, length), :length].float()
            sums += _band_sums(rows, start, length, band)
            histogram += _offset_histogram(rows, start, max_offset)
        informative = sums[2].clamp_min(1)
        near[index] = (sums[0] / informative).cpu().numpy()
        anti[index] = (sums[1] / informative).cpu().numpy()
        histograms[index] = (histogram / length).cpu().numpy()
    return near, anti, histograms


def _band_sums(rows: torch.Tensor, start: int, length: int, band: int) -> torch.Tensor:
    """``(3, heads)``: summed band masses around the diagonal and the anti-diagonal over the
    informative queries of ``rows (heads, chunk, length)`` (queries ``start ..``), and their
    count."""
    heads, chunk, _ = rows.shape
    query = torch.arange(start, start + chunk, device=rows.device)
    informative = (2 * query - (length - 1)).abs() > 2 * band
    sums = []
    for line in (query, length - 1 - query):
        mass = rows.new_zeros(heads, chunk)
        for offset in range(-band, band + 1):
            key = line + offset
            inside = (key >= 0) & (key < length)
            index = key.clamp(0, length - 1)[None, :, None].expand(heads, chunk, 1)
            mass += rows.gather(-1, index).squeeze(-1) * inside
        sums.append(mass[:, informative].double().sum(-1))
    count = informative.sum().to(torch.float64).expand(heads)
    return torch.stack([*sums, count])


def _offset_histogram(rows: torch.Tensor, start: int, max_offset: int) -> torch.Tensor:
    """``(heads, 2 * max_offset + 1)`` attention mass of ``rows (heads, chunk, length)`` per
    relative offset, summed over the chunk's queries."""
    heads, chunk, length = rows.shape
    query = torch.arange(start, start + chunk, device=rows.device)
    key = torch.arange(length, device=rows.device)
    offsets = (key[None, :] - query[:, None]).clamp(-max_offset, max_offset) + max_offset
    histogram = rows.new_zeros(heads, 2 * max_offset + 1)
    histogram.index_add_(1, offsets.flatten(), rows.reshape(heads, chunk * length))
    return histogram


def self_attention_diagonality(source: RecordSource, max_offset: int = DEFAULT_MAX_OFFSET,
                               threshold: float = REVERSAL_THRESHOLD, band: int = DEFAULT_BAND,
                               stack: str = "encoder") -> SelfAttentionDiagonality:
    """Diagonality of every traced self-attention layer of ``stack``, from stored records.

    Args:
        source: a trace, ``{name: Record}`` or records holding ``self_attn`` attentions.
        max_offset: histogram range in frames.
        threshold: layer verdict threshold.
        band: keys within this many frames of a line count as near it.
        stack: ``"encoder"`` (default) or ``"decoder"``.

    Raises:
        CapabilityError: no self-attention probabilities in the records.
        InputError: a sequence too short to have a query whose two bands are apart.
    """
    reducer = SelfAttentionDiagonalityReducer(max_offset, threshold, band, stack)
    replay(records_of(source), reducer)
    return reducer.result()
