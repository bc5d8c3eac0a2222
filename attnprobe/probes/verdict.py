"""The localisation rule: from the probes' per-block scores to one verdict and one block.

Every probe scores each encoder block in [-1, 1] (+1: the block's output keeps time order, -1:
reversed). :func:`localise` is the rule of :func:`attnprobe.reversal_report` and
:class:`attnprobe.FlipMonitor` (README, "Where did it turn?"):

1. **Which probe decides.** The gradient maps, when the model has a decoder, the batch has labels
   and the decoder reads the encoder output in an order: its cross-attention is monotone
   (``|Spearman| >= threshold``) and the gradient map of the encoder output runs the same way,
   both beyond chance (:data:`SIGNIFICANCE` standard errors of a Spearman correlation of randomly
   ordered labels: a random decoder's cross-attention over a few labels looks monotone by chance,
   and its label evidence then points nowhere in particular). Otherwise the frame mapping. The
   gradient
   maps measure where, in each block's output, the evidence sits that the model's output
   actually uses. The frame mapping measures every dependency, including content nothing
   downstream reads: a block whose self-attention branch brings in the reversed sequence still
   carries the unreversed one on its residual path, and when the decoder reads only the reversed
   copy, only the label evidence says so (``docs/reproduction.md``). Without an aligned decoder
   the label evidence is noise and the frame mapping is all there is; where the frame mapping
   cannot run either (a runner without gradients), nothing decides and the verdict is
   undetermined.
2. **Whether it reversed.** The deciding probe's last block scores at or below ``-threshold``,
   relative to the order of the encoder input (the frame mapping's input is its own +1; the
   gradient maps' is ``G_0``, whose sign is taken as the input order when ``G_0`` is monotone,
   time order otherwise).
3. **Where.** Among the final run of blocks that no longer keep time order (score below
   ``+threshold``), the block where the score falls the most from the one before it (for the first
   block, from the input's score); the earlier block on ties. A reversal spread over blocks turns
   where most of it happens, and a block that sits half-way (score near 0) does not move the answer
   the way a threshold crossing would.

The rule is applied to the scores a perfect probe would report for a planted reversal
(:mod:`attnprobe.testing`), which is how the tests know the right answer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .cross_attention import CrossAttentionMonotonicity
    from .frame_mapping import FrameMapping
    from .gradient_maps import GradientMaps

REVERSAL_THRESHOLD = 0.5
"""A rank correlation at or below ``-REVERSAL_THRESHOLD`` counts as reversed, at or above
``+REVERSAL_THRESHOLD`` as monotone. An unflipped trained model scores close to +1 and a flipped
one close to -1; untrained models scatter around values that depend on the probe, so 0.5 leaves a
wide margin on both sides."""

SIGNIFICANCE = 3.0
"""How many standard errors of chance (a Spearman correlation over randomly ordered labels:
``1 / sqrt(labels - 1)`` per sequence) a decoder's monotonicity must reach before its label
evidence decides; with 4 labels per sequence no decoder reaches it, with 50 any |rho| >= 0.43."""

DECIDED_BY_FRAME_MAPPING = "frame mapping"
DECIDED_BY_DECODER = "gradient maps and cross-attention"
DECIDED_BY_NOTHING = "nothing (no probe that decides could run)"


def turning_block(scores: Sequence[float] | np.ndarray, layers: Sequence[int], threshold: float,
                  input_score: float = 1.0) -> int | None:
    """Steps 2 and 3 of the rule on one probe's per-block scores: the block where time turned,
    or ``None`` when the last block is not reversed.

    Args:
        scores: ``(blocks,)`` in block order, oriented so that +1 is the input's order.
        layers: the block index of each score.
        threshold: at or below ``-threshold`` the last block counts as reversed; below
            ``+threshold`` a block no longer keeps time order.
        input_score: the score of the encoder input itself (what the first block falls from).
    """
    values = [float(score) for score in scores]
    if not values or values[-1] > -threshold:
        return None
    start = len(values) - 1
    while start > 0 and values[start - 1] < threshold:
        start -= 1
    before = [input_score] + values[:-1]
    drops = [before[index] - values[index] for index in range(start, len(values))]
    return int(layers[start + int(np.argmax(drops))])


def input_orientation(input_score: float, threshold: float) -> float:
    """-1 when the encoder input itself runs backwards (``G_0 <= -threshold``), else +1."""
    return -1.0 if input_score <= -threshold else 1.0


@dataclass(frozen=True)
class Localisation:
    """What the rule decided, and on which evidence.

    Attributes:
        reversed_at: the encoder block where time turned, or ``None``.
        decided_by: :data:`DECIDED_BY_FRAME_MAPPING`, :data:`DECIDED_BY_DECODER`, or
            :data:`DECIDED_BY_NOTHING` (neither could run).
        reason: one sentence: why that probe decided.
        layers: block indices of :attr:`scores`.
        scores: ``(blocks,)`` the deciding probe's scores, oriented to the input's order.
        input_score: the deciding probe's score of the encoder input.
    """

    reversed_at: int | None
    decided_by: str
    reason: str
    layers: tuple[int, ...]
    scores: tuple[float, ...]
    input_score: float


def decoder_reads_in_order(maps: GradientMaps | None, cross: CrossAttentionMonotonicity | None,
                           threshold: float) -> bool:
    """Step 1's condition: a cross-attention that is monotone, forwards or backwards, and a
    gradient map of the encoder output (the last block) monotone in the same direction."""
    if maps is None or cross is None:
        return False
    needed = max(threshold, SIGNIFICANCE * chance_level([item.shape[1] for item in maps.maps]))
    last = float(maps.scores[-1])
    return (abs(cross.overall) >= needed and abs(last) >= needed
            and (last > 0) == (cross.overall > 0))


def chance_level(label_counts: Sequence[int]) -> float:
    """Standard error of a mean Spearman correlation over sequences whose ``label_counts`` labels
    are in random order: ``sqrt(sum 1 / (n_i - 1)) / sequences``."""
    counts = [max(int(count), 2) for count in label_counts]
    return math.sqrt(sum(1.0 / (count - 1) for count in counts)) / max(len(counts), 1)


def localise(mapping: FrameMapping | None, maps: GradientMaps | None,
             cross: CrossAttentionMonotonicity | None,
             threshold: float | None = None) -> Localisation:
    """The rule (module docstring) on the report's probes.

    Args:
        mapping: ``None`` where the frame mapping could not run (the runner cannot give it
            gradients); then only an aligned decoder decides, and without one nothing does
            (:data:`DECIDED_BY_NOTHING`).
        maps: ``None`` without a decoder, labels, or when they were not asked for.
        cross: ``None`` without a decoder or labels.
        threshold: default: the frame mapping's (else the gradient maps', else
            :data:`REVERSAL_THRESHOLD`).
    """
    if threshold is None:
        source = mapping if mapping is not None else maps
        threshold = REVERSAL_THRESHOLD if source is None else source.threshold
    if decoder_reads_in_order(maps, cross, threshold):
        assert maps is not None and cross is not None
        layers, scores, input_score = maps.oriented_scores()
        reason = (f"the decoder reads the encoder output in an order (cross-attention "
                  f"{cross.overall:+.2f}, gradient map of the last block {maps.scores[-1]:+.2f}), "
                  f"so its label evidence says which content is used")
        return Localisation(turning_block(scores, layers, threshold, input_score),
                            DECIDED_BY_DECODER, reason, tuple(layers),
                            tuple(float(score) for score in scores), input_score)
    if maps is None:
        reason = "no decoder probes ran"
    elif cross is None:
        reason = "no cross-attention was captured to tell whether the decoder aligns"
    else:
        reason = (f"the decoder does not read the encoder output in an order (cross-attention "
                  f"{cross.overall:+.2f}, gradient map of the last block {maps.scores[-1]:+.2f}), "
                  f"so its label evidence says nothing about time")
    if mapping is None:
        return Localisation(None, DECIDED_BY_NOTHING, f"{reason}, and the frame mapping could not "
                            f"run", (), (), 1.0)
    return Localisation(turning_block(mapping.scores, mapping.layers, threshold),
                        DECIDED_BY_FRAME_MAPPING, reason, tuple(mapping.layers),
                        tuple(float(score) for score in mapping.scores), 1.0)


def localise_together(probes: Sequence[tuple[FrameMapping | None, GradientMaps | None,
                                             CrossAttentionMonotonicity | None]],
                      threshold: float = REVERSAL_THRESHOLD) -> Localisation:
    """The rule over several probe batches of one model (a checkpoint scan's utterances): step 1
    on each, and the gradient maps decide when the decoder reads in order on every one, else the
    frame mapping; steps 2 and 3 on the mean of the deciding probe's scores over the batches.

    Args:
        probes: per batch, ``(frame mapping, gradient maps, cross-attention)`` of the same model
            (the same blocks), as :func:`localise` takes them.
        threshold: as in :func:`localise`.
    """
    decisions = [localise(mapping, maps, cross, threshold) for mapping, maps, cross in probes]
    if decisions and all(item.decided_by == DECIDED_BY_DECODER for item in decisions):
        chosen, decided_by = decisions, DECIDED_BY_DECODER
        reason = f"the decoder reads the encoder output in an order on all {len(decisions)} batches"
    else:
        chosen = [item for item in decisions if item.decided_by == DECIDED_BY_FRAME_MAPPING]
        chosen += [localise(mapping, None, None, threshold) for (mapping, _, _), item
                   in zip(probes, decisions)
                   if item.decided_by == DECIDED_BY_DECODER and mapping is not None]
        decided_by = DECIDED_BY_FRAME_MAPPING
        reason = "the decoder does not read the encoder output in an order on every batch"
        if not chosen:
            return Localisation(None, DECIDED_BY_NOTHING, "no batch had a probe that decides",
                                (), (), 1.0)
    layers = chosen[0].layers
    scores = np.mean([item.scores for item in chosen], axis=0)
    input_score = float(np.mean([item.input_score for item in chosen]))
    return Localisation(turning_block(scores, layers, threshold, input_score), decided_by,
                        reason, layers, tuple(float(score) for score in scores), input_score)


def combined_verdict(mapping: FrameMapping | None, maps: GradientMaps | None,
                     cross: CrossAttentionMonotonicity | None) -> tuple[int | None, str]:
    """``(reversed_at, decided_by)`` of :func:`localise`."""
    decided = localise(mapping, maps, cross)
    return decided.reversed_at, decided.decided_by
