"""``attnprobe.reversal_report`` on synthetic flips of attnprobe's Conformer AED (other families:
``test_probes_families.py``)."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnprobe.errors import CapabilityError, GradientUnavailableError
from attnprobe.probes import reversal_report
from attnprobe.testing import pin_cross_attention, plant_reversal
from tests.test_probes_models import (
    assert_reversed_at,
    conformer_aed,
    feature_batch,
    report_with,
    speech_batch,
)
from tests.toy_model import ToyAdapter, ToyEncoder, all_hooks

BLOCKS = 3
MODEL = conformer_aed()

frame_lists = st.lists(st.integers(4, 9), min_size=1, max_size=3)
planted = st.one_of(st.none(), st.integers(0, BLOCKS - 1))


@settings(max_examples=10, deadline=None)
@given(frames=frame_lists, block=planted, seed=st.integers(0, 100))
def test_conformer_aed_reversal_is_reported_at_its_block(frames: list[int], block: int | None,
                                                         seed: int) -> None:
    batch = speech_batch(frames, [4] * len(frames), seed=seed)
    report = report_with(MODEL, batch, block)
    assert_reversed_at(report, block, frames)
    assert report.cross_attention is not None and report.gradient_maps is not None


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_models_are_not_reversed(seed: int) -> None:
    model = conformer_aed(seed=seed)
    report = reversal_report(model, speech_batch([9, 6], seed=seed), projections=1)
    assert not report.reversed and report.verdict == "not reversed"


@pytest.mark.parametrize("block", [None, 0, 2])
def test_a_synthetic_flipped_aed_has_all_evidence_agree(block: int | None) -> None:
    """A decoder that reads the encoder output backwards behind a planted reversal imitates the
    paper's flipped model; with no reversal, a forwards decoder imitates an unflipped one. With
    enough labels to be beyond chance, its label evidence decides, and every probe agrees."""
    batch = speech_batch([16, 12], [14, 10])
    with pin_cross_attention(MODEL, "diagonal" if block is None else "reversed"):
        report = report_with(MODEL, batch, block)
    assert_reversed_at(report, block, [16, 12])
    assert report.decided_by == "gradient maps and cross-attention"
    assert report.gradient_maps is not None and report.cross_attention is not None
    assert report.gradient_maps.reversed_at == block
    assert report.cross_attention.verdict == ("monotone" if block is None else "reversed")
    assert sum("(agrees)" in note for note in report.notes) == 2  # frame mapping, cross-attention
    assert any("(decides)" in note for note in report.notes)
    assert not any("disagrees" in note for note in report.notes)
    evidence = report.to_dict()["evidence"]
    assert [row["block"] for row in evidence] == [0, 1, 2]
    assert all(row["gradient_map"] is not None and row["frame_mapping"] is not None
               for row in evidence)


def test_report_accepts_tuples_restores_the_model_and_serialises() -> None:
    batch = speech_batch([8, 6], [4, 4])
    model = conformer_aed()
    model.train()
    hooks = all_hooks(model)
    with torch.no_grad(), plant_reversal(model, 1):
        report = reversal_report(model, (batch.inputs, batch.input_lengths, batch.labels,
                                         batch.label_lengths), projections=1)
    assert report.reversed_at == 1 and model.training and all_hooks(model) == hooks
    values = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert values["verdict"] == "reversed at block 1" and values["reversed"] is True
    assert values["frame_mapping"]["reversed_at"] == 1
    assert "REVERSED AT BLOCK 1" in str(report)
    figure = report.plot()
    assert len(figure.axes) >= 3


def test_encoder_only_report_says_what_it_could_not_measure() -> None:
    with plant_reversal(MODEL.encoder, 2):
        report = reversal_report(MODEL.encoder, speech_batch([7]), projections=1)
    assert report.reversed_at == 2
    assert report.cross_attention is None and report.gradient_maps is None
    assert any("no attention decoder" in note for note in report.notes)


def test_inference_mode_and_models_the_adapter_cannot_run_fail_with_the_fix() -> None:
    with torch.inference_mode(), pytest.raises(GradientUnavailableError, match="inference_mode"):
        reversal_report(MODEL, speech_batch([6]))
    toy = ToyEncoder()
    with pytest.raises(CapabilityError, match="cannot run a batch"):
        reversal_report(toy, feature_batch([5], width=6), adapter=ToyAdapter)
