"""Gradient alignment on planted ground truth: a model whose label s reads only a known segment of
the input must get scores that vanish outside that segment, and an alignment that recovers every
segment exactly, whether the model keeps time order or reverses it internally."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from attnprobe.adapters import LengthEntry, Runner, SiteBinding, SiteMap
from attnprobe.alignment import AlignmentSettings, BlankScore, align_scores, gradient_alignment
from attnprobe.alignment.scoring import (
    IntegratedGradients,
    SmoothGrad,
    function_forward,
    gradient_scores,
    model_forward,
)
from attnprobe.batch import SpeechBatch
from attnprobe.sites import Site

FEATURES = 4
WIDTH = 6
FRAME_SHIFT = 0.01
# In-segment scores stay within a factor ~100 of each other; outside they are exactly zero (the
# log floor, about -87). Any constant blank between the two recovers the segments.
BLANK = BlankScore("constant", -10.0)
PLANTED = AlignmentSettings.paper().replace(blank=BLANK)


@dataclass
class Utterance:
    """Label ``s`` reads encoder frames ``segments[s] = (start, end)``; ``frames`` are valid."""

    segments: list[tuple[int, int]]
    frames: int


class PlantedFrontend(nn.Module):
    """Per-frame projection, then the mean of every ``subsampling`` frames: encoder frame ``j``
    depends on input frames ``[j * subsampling, (j + 1) * subsampling)`` only."""

    def __init__(self, subsampling: int) -> None:
        super().__init__()
        self.subsampling = subsampling
        self.projection = nn.Linear(FEATURES, WIDTH)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        batch, frames, _ = features.shape
        usable = frames // self.subsampling * self.subsampling
        projected = self.projection(features[:, :usable])
        return projected.view(batch, -1, self.subsampling, WIDTH).mean(dim=2)


class PlantedSegmentModel(nn.Module):
    """``log p(a_s) = log sigmoid(mean over label s's segment of u . tanh(h_j))``.

    With ``reverse``, the encoder flips each utterance's valid frames and the readout of label
    ``s`` reads the flipped positions of its segment, as a time-reversing Conformer's decoder
    attends to flipped positions.
    """

    def __init__(self, utterances: list[Utterance], subsampling: int, reverse: bool) -> None:
        super().__init__()
        self.frontend = PlantedFrontend(subsampling)
        self.readout = nn.Linear(WIDTH, 1)
        self.reverse = reverse
        labels = max(len(item.segments) for item in utterances)
        frames = max(item.frames for item in utterances)
        readout = torch.zeros(len(utterances), labels, frames)
        for index, item in enumerate(utterances):
            for label, (start, end) in enumerate(item.segments):
                if reverse:
                    start, end = item.frames - end, item.frames - start
                readout[index, label, start:end] = 1.0 / (end - start)
        self.register_buffer("segment_weights", readout)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        hidden = torch.tanh(self.frontend(features))
        if self.reverse:
            hidden = flip_valid_frames(hidden, lengths // self.frontend.subsampling)
        per_frame = self.readout(hidden)[..., 0]
        weights = self.segment_weights[:, :, : per_frame.shape[1]]
        return F.logsigmoid(torch.einsum("bsj,bj->bs", weights, per_frame))


def flip_valid_frames(values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each item's first ``lengths[i]`` frames of ``(batch, frames, width)``."""
    positions = torch.arange(values.shape[1])
    source = torch.where(positions < lengths[:, None], lengths[:, None] - 1 - positions, positions)
    return values.gather(1, source[:, :, None].expand_as(values))


class PlantedRunner(Runner):
    family = "planted-segments"
    frame_shift_seconds = FRAME_SHIFT

    def label_log_probs(self, batch: SpeechBatch) -> torch.Tensor:
        return self.model(batch.inputs, batch.input_lengths)

    @property
    def subsampling(self) -> int:
        return self.model.frontend.subsampling


class PlantedAdapter(SiteMap):
    family = "planted-segments"
    runner_class = PlantedRunner

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return isinstance(model, PlantedSegmentModel)

    def bindings(self) -> list[SiteBinding]:
        site = Site("encoder.frontend", "frontend", "encoder", None, "frontend")
        return [SiteBinding(site, self.model.frontend, input_name="features")]

    def length_entries(self) -> list[LengthEntry]:
        def lengths(args: tuple, kwargs: Mapping[str, Any]) -> dict[str, torch.Tensor]:
            return {"features": args[1], "encoder": args[1] // self.model.frontend.subsampling}

        return [LengthEntry(self.model, lengths)]


@st.composite
def planted_batches(draw: st.DrawFn) -> tuple[list[Utterance], int]:
    """1-3 utterances, 1-4 labels each, segments of 1-3 encoder frames with gaps of 0-3."""
    subsampling = draw(st.sampled_from([1, 2, 3]))
    utterances = []
    for _ in range(draw(st.integers(1, 3))):
        position = draw(st.integers(0, 3))
        segments = []
        for _ in range(draw(st.integers(1, 4))):
            length = draw(st.integers(1, 3))
            segments.append((position, position + length))
            position += length + draw(st.integers(0, 3))
        utterances.append(Utterance(segments, position + draw(st.integers(0, 2))))
    return utterances, subsampling


def build(utterances: list[Utterance], subsampling: int, reverse: bool, seed: int
          ) -> tuple[PlantedSegmentModel, SpeechBatch]:
    torch.manual_seed(seed)
    model = PlantedSegmentModel(utterances, subsampling, reverse).eval()
    # Input lengths leave a remainder that the frontend drops, to check it gets no score.
    lengths = torch.tensor([item.frames * subsampling + (subsampling - 1) for item in utterances])
    features = torch.randn(len(utterances), int(lengths.max()), FEATURES)
    counts = torch.tensor([len(item.segments) for item in utterances])
    labels = torch.randint(2, 9, (len(utterances), int(counts.max())))
    return model, SpeechBatch(features, lengths, labels, counts)


def expected_spans(item: Utterance, scale: int) -> list[tuple[int, int]]:
    return [(start * scale, end * scale) for start, end in item.segments]


def spans(alignment: Any) -> list[tuple[int, int]]:
    return [(label.start_frame, label.end_frame) for label in alignment.labels]


def assert_scores_planted(scores: torch.Tensor, utterances: list[Utterance], scale: int) -> None:
    """Zero outside each label's segment, positive on every frame inside it."""
    for index, item in enumerate(utterances):
        for label, (start, end) in enumerate(expected_spans(item, scale)):
            row = scores[index, label]
            inside = torch.zeros_like(row, dtype=torch.bool)
            inside[start:end] = True
            assert torch.all(row[~inside] == 0), (index, label, row)
            assert torch.all(row[inside] > 0), (index, label, row)


@pytest.mark.parametrize("scored_input", ["features", "encoder_input"])
@settings(max_examples=15, deadline=None)
@given(case=planted_batches(), reverse=st.booleans(), seed=st.integers(0, 2**16))
def test_scores_vanish_outside_each_segment_and_alignment_recovers_it(
    scored_input: str, case: tuple[list[Utterance], int], reverse: bool, seed: int
) -> None:
    utterances, subsampling = case
    model, batch = build(utterances, subsampling, reverse, seed)
    scale = subsampling if scored_input == "features" else 1
    scores = gradient_scores(model_forward(model, batch, gradient_input=scored_input,
                                           adapter=PlantedAdapter))
    assert_scores_planted(scores.scores, utterances, scale)
    alignments = gradient_alignment(model, batch, settings=PLANTED.replace(
        gradient_input=scored_input), adapter=PlantedAdapter)
    for item, alignment in zip(utterances, alignments):
        assert spans(alignment) == expected_spans(item, scale)
        first, last = item.segments[0][0], item.segments[-1][1]
        assert alignment.labels[0].start_s == pytest.approx(first * subsampling * FRAME_SHIFT)
        assert alignment.labels[-1].end_s == pytest.approx(last * subsampling * FRAME_SHIFT)


@settings(max_examples=10, deadline=None)
@given(case=planted_batches(), seed=st.integers(0, 2**16))
def test_reversing_time_inside_the_model_changes_neither_scores_nor_alignment(
    case: tuple[list[Utterance], int], seed: int
) -> None:
    utterances, subsampling = case
    results = []
    for reverse in (False, True):
        model, batch = build(utterances, subsampling, reverse, seed)
        forward = model_forward(model, batch, adapter=PlantedAdapter)
        scores = gradient_scores(forward)
        alignments = align_scores(scores, [[str(s) for s in range(len(item.segments))]
                                           for item in utterances],
                                  frame_shift_s=FRAME_SHIFT, settings=PLANTED,
                                  word_style="continuation")
        results.append((scores.scores, [spans(alignment) for alignment in alignments]))
    (forward_scores, forward_spans), (reversed_scores, reversed_spans) = results
    torch.testing.assert_close(reversed_scores, forward_scores)
    assert reversed_spans == forward_spans


@settings(max_examples=10, deadline=None)
@given(case=planted_batches(), reverse=st.booleans(), seed=st.integers(0, 2**16))
def test_a_plain_callable_scores_like_the_model_and_adapter(
    case: tuple[list[Utterance], int], reverse: bool, seed: int
) -> None:
    utterances, subsampling = case
    model, batch = build(utterances, subsampling, reverse, seed)
    through_adapter = gradient_scores(model_forward(model, batch, adapter=PlantedAdapter))
    through_callable = gradient_scores(function_forward(
        lambda features: model(features, batch.input_lengths), batch.inputs,
        input_lengths=batch.input_lengths, label_lengths=batch.label_lengths))
    torch.testing.assert_close(through_callable.scores, through_adapter.scores)
    assert_scores_planted(through_callable.scores, utterances, subsampling)


@pytest.mark.parametrize("attribution", [SmoothGrad(samples=3, noise_level=0.2),
                                         IntegratedGradients(steps=4, baseline="minimum")])
@settings(max_examples=8, deadline=None)
@given(case=planted_batches(), reverse=st.booleans(), seed=st.integers(0, 2**16))
def test_smoothed_scores_keep_the_planted_segments(
    attribution: SmoothGrad | IntegratedGradients, case: tuple[list[Utterance], int],
    reverse: bool, seed: int
) -> None:
    utterances, subsampling = case
    model, batch = build(utterances, subsampling, reverse, seed)
    for scored_input, scale in (("features", subsampling), ("encoder_input", 1)):
        forward = model_forward(model, batch, gradient_input=scored_input,
                                adapter=PlantedAdapter)
        assert_scores_planted(attribution.scores(forward).scores, utterances, scale)
        alignments = gradient_alignment(model, batch,
                                        settings=PLANTED.replace(gradient_input=scored_input),
                                        attribution=attribution, adapter=PlantedAdapter)
        assert [spans(alignment) for alignment in alignments] == [
            expected_spans(item, scale) for item in utterances]


def test_each_item_of_a_padded_batch_scores_as_it_does_alone() -> None:
    utterances = [Utterance([(1, 3), (3, 4), (6, 8)], 9), Utterance([(0, 2)], 3)]
    model, batch = build(utterances, 2, reverse=True, seed=0)
    together = gradient_scores(model_forward(model, batch, adapter=PlantedAdapter))
    for index, item in enumerate(utterances):
        alone_model, _ = build([item], 2, reverse=True, seed=0)
        alone_model.load_state_dict({**model.state_dict(),
                                     "segment_weights": alone_model.segment_weights})
        alone = gradient_scores(model_forward(alone_model, batch.item(index),
                                              adapter=PlantedAdapter))
        torch.testing.assert_close(together.item(index), alone.item(0))
