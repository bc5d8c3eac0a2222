"""The localisation rule on reversals like training's (:mod:`attnprobe.testing.flips`): the report
names the block a perfect probe names (:meth:`PlantedReversal.answer`), through the frame mapping
(encoder alone, or a decoder that does not align) and through the gradient maps (a decoder that
reads in order), for any block, scale, fraction, spread, depth, length, padding and batch; and the
answer does not move with ``max_frames``, ``projections`` or the seed of the projections.

Plantings within :data:`MIXTURE_MARGIN` / :data:`SCORE_MARGIN` of their balance point hold both
orders in about equal measure; no answer is right there, so they are left out (``assume``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from attnprobe import FlipMonitor, reversal_report
from attnprobe.batch import SpeechBatch
from attnprobe.probes.verdict import DECIDED_BY_DECODER, DECIDED_BY_FRAME_MAPPING
from attnprobe.testing import (
    PlantedReversal,
    pin_cross_attention,
    plant_branch_reversal,
    plant_channel_reversal,
    plant_partial_reversal,
)
from tests.test_probes_models import conformer_aed, speech_batch

BLOCKS = 4
MODEL = conformer_aed(blocks=BLOCKS)
MIXTURE_MARGIN = {"branch": math.log(2.5), "channels": 0.2}
"""Branch: reversed part at least 2.5x (or at most 1/2.5 of) the unreversed; channels: at least
70% (at most 30%) of the energy in the reversed channels."""
SCORE_MARGIN = 0.15
"""Partial reversals: planted scores at least this far from +-threshold, and the largest fall at
least twice this above the next."""
SCORE_TOLERANCE = 0.2
"""Per-block frame-mapping scores of one planting may differ by this much between probe
settings (``benchmarks/localisation_sensitivity.py`` prints the measured spread)."""

Planting = Callable[[object], AbstractContextManager[PlantedReversal]]


@st.composite
def plantings(draw: st.DrawFn) -> tuple[str, Planting]:
    kind = draw(st.sampled_from(["branch", "channels", "partial"]))
    block = draw(st.integers(0, BLOCKS - 1))
    if kind == "branch":
        scale = draw(st.one_of(st.floats(0.0, 0.35), st.floats(3.0, 8.0)))
        spread = draw(st.integers(1, 6))
        fraction = draw(st.sampled_from([1.0, 0.75]))
        return kind, lambda model: plant_branch_reversal(model, block, scale, spread, fraction)
    if kind == "channels":
        fraction = draw(st.one_of(st.floats(0.0, 0.25), st.floats(0.85, 1.0)))
        return kind, lambda model: plant_channel_reversal(model, block, fraction)
    depth = draw(st.integers(1, min(3, BLOCKS - block)))
    shares = sorted(draw(st.lists(st.floats(0.0, 1.0), min_size=depth, max_size=depth)))
    return kind, lambda model: plant_partial_reversal(
        model, {block + step: share for step, share in enumerate(shares)})


def clear(kind: str, planted: PlantedReversal) -> bool:
    return planted.margin() >= MIXTURE_MARGIN.get(kind, SCORE_MARGIN)


@settings(max_examples=15, deadline=None)
@given(planting=plantings(), frames=st.lists(st.integers(8, 20), min_size=1, max_size=3),
       seed=st.integers(0, 100))
def test_the_frame_mapping_names_the_planted_block(planting: tuple[str, Planting],
                                                   frames: list[int], seed: int) -> None:
    kind, plant = planting
    batch = speech_batch(frames, seed=seed)
    with plant(MODEL.encoder) as planted:
        report = reversal_report(MODEL.encoder, batch, projections=2, max_frames=16, seed=seed)
    assume(clear(kind, planted))
    assert report.decided_by == DECIDED_BY_FRAME_MAPPING
    assert report.reversed_at == planted.answer()


@settings(max_examples=12, deadline=None)
@given(planting=plantings(), frames=st.lists(st.integers(12, 20), min_size=1, max_size=3),
       seed=st.integers(0, 100))
def test_an_aligned_decoder_names_the_planted_block(planting: tuple[str, Planting],
                                                    frames: list[int], seed: int) -> None:
    """A decoder pinned to read the encoder output in order, one label per frame: its label
    evidence decides, and turns where the content it reads turned."""
    kind, plant = planting
    batch = speech_batch(frames, frames, seed=seed)
    with pin_cross_attention(MODEL, "diagonal"), plant(MODEL) as planted:
        report = reversal_report(MODEL, batch, projections=1, max_frames=8, seed=seed)
    assume(clear(kind, planted))
    assert report.decided_by == DECIDED_BY_DECODER
    assert report.reversed_at == planted.answer()


@settings(max_examples=6, deadline=None)
@given(planting=plantings(), frames=st.lists(st.integers(10, 20), min_size=1, max_size=3))
def test_the_answer_does_not_move_with_frames_projections_or_seed(
        planting: tuple[str, Planting], frames: list[int]) -> None:
    """The block never moves. The scores of a mixture move by at most :data:`SCORE_TOLERANCE`;
    those of a partial reversal move with the probed frames by construction (fewer frames sample
    other mirror pairs), so only its block is held still."""
    kind, plant = planting
    batch = speech_batch(frames)
    with plant(MODEL.encoder) as planted:
        reports = [reversal_report(MODEL.encoder, batch, projections=projections,
                                   max_frames=max_frames, seed=seed)
                   for max_frames, projections, seed in ((8, 1, 0), (16, 2, 1), (None, 3, 2))]
    assume(clear(kind, planted))
    assert {report.reversed_at for report in reports} == {planted.answer()}
    if kind != "partial":
        scores = np.array([report.frame_mapping.scores for report in reports])
        assert np.ptp(scores, axis=0).max() <= SCORE_TOLERANCE


def test_a_decoder_that_does_not_align_leaves_the_rule_to_the_frame_mapping() -> None:
    batch: SpeechBatch = speech_batch([16, 12], [5, 4])
    with plant_branch_reversal(MODEL, 1, 4.0, spread=3) as planted:
        report = reversal_report(MODEL, batch, projections=1, max_frames=8)
    assert report.decided_by == DECIDED_BY_FRAME_MAPPING
    assert report.reversed_at == planted.answer() == 1


def test_a_branch_that_spreads_its_reversal_is_seen_by_the_energy_not_the_peak() -> None:
    """The trained case: the reversed branch outweighs the residual but spreads its part over a
    band of frames, so the residual's single peak at home stays the largest dependency."""
    batch = speech_batch([20, 14])
    with plant_branch_reversal(MODEL.encoder, 1, 3.0, spread=5) as planted:
        report = reversal_report(MODEL.encoder, batch, projections=2, max_frames=16)
    assert planted.answer() == report.reversed_at == 1
    assert (report.frame_mapping.scores[1:] < -0.5).all()
    assert (report.frame_mapping.peak_scores()[1:] > 0.0).all()


def test_the_evidence_shows_the_planted_branch_outgrowing_its_residual() -> None:
    """The paper's mechanism as the report's dominance column sees it: at the planted block the
    self-attention branch is the largest, by about the planted ratio (the probe averages norms
    over frames before dividing, the planting divides per frame)."""
    batch = speech_batch([18, 13])
    with plant_branch_reversal(MODEL.encoder, 2, 4.0) as planted:
        report = reversal_report(MODEL.encoder, batch, projections=1, max_frames=8)
    row = report.evidence[2]
    assert row.branch == "self_attn" and report.reversed_at == 2
    assert row.branch_ratio is not None
    assert abs(row.branch_ratio - planted.ratios[2]) <= 0.25 * planted.ratios[2]
    assert all(other.branch_ratio is not None and other.branch_ratio < 2.0
               for other in report.evidence if other.block != 2)


def test_the_monitor_decides_by_the_same_rule_as_the_report() -> None:
    batch = speech_batch([16, 12], [16, 12])
    events = []
    with pin_cross_attention(MODEL, "diagonal"), \
            plant_branch_reversal(MODEL, 2, 4.0, spread=3) as planted:
        record = FlipMonitor(MODEL, batch, every=1, on_flip=events.append, projections=1,
                             max_frames=8).probe(0)
        report = reversal_report(MODEL, batch, projections=1, max_frames=8)
    assert record.reversed_at == report.reversed_at == planted.answer() == 2
    assert record.decided_by == report.decided_by == DECIDED_BY_DECODER
    assert [event.reversed_at for event in events] == [2]
