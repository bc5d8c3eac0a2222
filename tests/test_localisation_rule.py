"""The localisation rule (:mod:`attnprobe.probes.verdict`) on per-block scores alone: which probe
decides, whether the encoder reversed, and where."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from attnprobe.probes import CrossAttentionMonotonicity, FrameMapping, GradientMaps, ReversalReport
from attnprobe.probes.verdict import (
    DECIDED_BY_DECODER,
    DECIDED_BY_FRAME_MAPPING,
    DECIDED_BY_NOTHING,
    REVERSAL_THRESHOLD,
    SIGNIFICANCE,
    chance_level,
    combined_verdict,
    localise,
    localise_together,
    turning_block,
)

TAU = REVERSAL_THRESHOLD


def report_from_scores(mapping: list[float], maps: list[float] | None, cross: float | None,
                       labels: int = 40) -> ReversalReport:
    """A report assembled from per-block scores of one sequence with ``labels`` labels."""
    blocks = len(mapping)
    frame_mapping = FrameMapping(list(range(blocks)), [np.zeros((blocks, 4, 4))],
                                 np.array([mapping]), projections=1)
    gradient = None if maps is None else GradientMaps(
        ["encoder.frontend"] + [f"encoder.{block}" for block in range(blocks)],
        [np.zeros((blocks + 1, labels, 4))], np.array([maps]))
    attention = None if cross is None else CrossAttentionMonotonicity(
        ["decoder.0.cross_attn"], np.full((1, 1, 2), cross))
    return ReversalReport("test", frame_mapping, gradient, attention)


noise = st.floats(-0.15, 0.15)


@settings(max_examples=60, deadline=None)
@given(blocks=st.integers(1, 12), data=st.data())
def test_a_clean_turn_is_named_at_its_block_whatever_the_noise(blocks: int, data) -> None:
    turn = data.draw(st.integers(0, blocks - 1))
    jitter = data.draw(st.lists(noise, min_size=blocks, max_size=blocks))
    scores = [(1.0 if block < turn else -1.0) + value for block, value in enumerate(jitter)]
    scores = list(np.clip(scores, -1, 1))
    assert turning_block(scores, list(range(blocks)), TAU) == turn
    assert turning_block(scores, [10 + block for block in range(blocks)], TAU) == 10 + turn


@settings(max_examples=60, deadline=None)
@given(scores=st.lists(st.floats(-1, 1), min_size=1, max_size=10))
def test_the_named_block_lies_in_the_final_run_that_no_longer_keeps_order(scores: list[float]
                                                                          ) -> None:
    block = turning_block(scores, list(range(len(scores))), TAU)
    if scores[-1] > -TAU:
        assert block is None
        return
    assert block is not None
    assert all(score < TAU for score in scores[block:])
    before = [1.0] + scores[:-1]
    drops = [before[index] - scores[index] for index in range(len(scores))]
    assert drops[block] == max(drops[index] for index in range(len(scores))
                               if all(score < TAU for score in scores[index:]))


def test_a_spread_turn_is_named_where_most_of_it_happens() -> None:
    assert turning_block([1.0, 0.4, -0.2, -1.0], [0, 1, 2, 3], TAU) == 3
    assert turning_block([1.0, -0.4, -0.8, -1.0], [0, 1, 2, 3], TAU) == 1
    assert turning_block([0.2, -0.6, -0.9], [0, 1, 2], TAU, input_score=0.3) == 1
    assert turning_block([0.9, -0.3, 0.9, -0.9], [0, 1, 2, 3], TAU) == 3   # turned back and again
    assert turning_block([1.0, -0.4], [0, 1], TAU) is None                  # not clearly reversed


@settings(max_examples=40, deadline=None)
@given(labels=st.lists(st.integers(2, 80), min_size=1, max_size=4))
def test_chance_level_is_the_standard_error_of_a_mean_spearman(labels: list[int]) -> None:
    expected = np.sqrt(np.sum([1.0 / (count - 1) for count in labels])) / len(labels)
    assert chance_level(labels) == pytest.approx(expected)


@settings(max_examples=80, deadline=None)
@given(cross=st.floats(-1, 1), last=st.floats(-1, 1), labels=st.integers(4, 80),
       turn=st.integers(0, 3), g0=st.floats(-1, 1))
def test_the_decoder_decides_only_when_it_reads_in_order_beyond_chance(
        cross: float, last: float, labels: int, turn: int, g0: float) -> None:
    mapping = [1.0, 1.0, 1.0, 1.0]
    maps = [g0] + [g0 if block < turn else -g0 for block in range(3)] + [last]
    report = report_from_scores(mapping, maps, cross, labels)
    needed = max(TAU, SIGNIFICANCE / np.sqrt(labels - 1))
    assume(min(abs(abs(cross) - needed), abs(abs(last) - needed)) > 1e-6)
    reads_in_order = abs(cross) >= needed and abs(last) >= needed and (cross > 0) == (last > 0)
    decided = localise(report.frame_mapping, report.gradient_maps, report.cross_attention)
    assert decided.decided_by == (DECIDED_BY_DECODER if reads_in_order else DECIDED_BY_FRAME_MAPPING)
    assert report.decided_by == decided.decided_by and report.reversed_at == decided.reversed_at
    assert combined_verdict(report.frame_mapping, report.gradient_maps,
                            report.cross_attention) == (decided.reversed_at, decided.decided_by)
    if not reads_in_order:
        assert report.reversed_at is None                       # the frame mapping sees nothing
    else:
        orientation = -1.0 if g0 <= -TAU else 1.0
        expected = turning_block(orientation * np.array(maps[1:]), [0, 1, 2, 3], TAU,
                                 orientation * g0)
        assert report.reversed_at == expected


def test_an_aligned_decoder_outvotes_a_frame_mapping_that_sees_the_turn_later() -> None:
    """The induced reversal of the reproduction: the frame mapping turns late, the label evidence
    at block 0, the decoder reads backwards."""
    report = report_from_scores([0.96, 0.83, 0.36, 0.11, -0.32, -0.57],
                                [0.28, -0.54, -0.60, -0.64, -0.77, -0.83, -0.85], -0.79, labels=51)
    assert (report.reversed_at, report.decided_by) == (0, DECIDED_BY_DECODER)
    assert report.frame_mapping.reversed_at == 2
    lines = str(report).splitlines()
    assert "decided by the gradient maps and cross-attention" in lines[1]
    row = next(line for line in lines if line.strip().startswith("0 "))
    assert row.rstrip().endswith("<")
    assert any(line.strip().startswith("input") for line in lines)


def test_few_labels_leave_the_decision_to_the_frame_mapping() -> None:
    report = report_from_scores([1.0, 1.0, -1.0], [0.9, 0.9, -0.9, -0.9], -1.0, labels=6)
    assert (report.reversed_at, report.decided_by) == (2, DECIDED_BY_FRAME_MAPPING)
    assert "not read the encoder output in an order" in report.decided_because


def test_a_backwards_input_turns_the_gradient_maps_orientation() -> None:
    """G_0 decreasing (e.g. time-reversed audio): the maps are read relative to it."""
    report = report_from_scores([1.0, 1.0, 1.0], [-0.9, -0.9, 0.9, 0.9], 0.9)
    assert (report.reversed_at, report.decided_by) == (1, DECIDED_BY_DECODER)


def test_without_decoder_probes_the_frame_mapping_decides() -> None:
    report = report_from_scores([1.0, 1.0, -1.0], None, None)
    assert (report.reversed_at, report.decided_by) == (2, DECIDED_BY_FRAME_MAPPING)
    assert report.decided_because == "no decoder probes ran"


def evidence(report: ReversalReport) -> tuple:
    return report.frame_mapping, report.gradient_maps, report.cross_attention


@settings(max_examples=40, deadline=None)
@given(batches=st.lists(st.tuples(st.lists(st.floats(-1, 1), min_size=3, max_size=3),
                                  st.lists(st.floats(-1, 1), min_size=4, max_size=4),
                                  st.sampled_from([-0.9, 0.1])), min_size=1, max_size=4))
def test_several_batches_are_localised_by_the_rule_on_their_mean_scores(batches: list) -> None:
    """A checkpoint scan's rule: the decoder decides only when it reads in order on every batch;
    the block is where the mean of the deciding probe's scores turns; one batch is
    :func:`localise` itself."""
    reports = [report_from_scores(mapping, maps, cross) for mapping, maps, cross in batches]
    decisions = [report.localisation for report in reports]
    together = localise_together([evidence(report) for report in reports])
    by_decoder = all(item.decided_by == DECIDED_BY_DECODER for item in decisions)
    assert together.decided_by == (DECIDED_BY_DECODER if by_decoder else DECIDED_BY_FRAME_MAPPING)
    if by_decoder:
        scores = np.mean([item.scores for item in decisions], axis=0)
        start = float(np.mean([item.input_score for item in decisions]))
    else:
        scores, start = np.mean([report.frame_mapping.scores for report in reports], axis=0), 1.0
    assert together.reversed_at == turning_block(scores, [0, 1, 2], TAU, start)
    if len(reports) == 1:
        assert (together.reversed_at, together.decided_by) == (decisions[0].reversed_at,
                                                               decisions[0].decided_by)


def test_no_probe_that_decides_leaves_the_verdict_undetermined() -> None:
    """A runner without gradients gives no frame mapping; without an aligned decoder nothing
    decides, and the report says undetermined rather than "not reversed"."""
    report = report_from_scores([1.0, 1.0, -1.0], [0.9, 0.9, 0.9, 0.9], 0.1)
    report.frame_mapping = None
    assert (report.reversed_at, report.decided_by) == (None, DECIDED_BY_NOTHING)
    assert report.verdict == "undetermined"
    assert report.evidence[0].frame_mapping is None and len(report.evidence) == 3
    assert "no probe decided" in report.summary()
    aligned = report_from_scores([1.0, 1.0, 1.0], [0.9, 0.9, -0.9, -0.9], -0.9)
    aligned.frame_mapping = None
    assert (aligned.reversed_at, aligned.decided_by) == (1, DECIDED_BY_DECODER)
    assert localise_together([evidence(report)]).decided_by == DECIDED_BY_NOTHING
