"""Acceptance: every speech family of the pinned transformers, as a tiny random model, through the
generic path alone (no hand-written site map registered): the trace changes nothing and leaves
nothing, attention is captured where the family has attention, the reversal report runs its
probes and gradient alignment aligns wherever the model has labels to align. Families that cannot
work are listed in ``tests/generic_path.py`` (and the README) with the reason, and this test
checks that they indeed do not."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.generic_path import CANNOT_WORK, NO_PROBABILITIES, exercise, prepared
from tests.hf_families import speech_families

pytest.importorskip("transformers")

FAMILIES = speech_families()
README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_enumeration_covers_the_speech_task_mappings() -> None:
    from transformers.models.auto import modeling_auto

    listed = {family.model_type for family in FAMILIES}
    for mapping in ("MODEL_FOR_CTC_MAPPING_NAMES", "MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES"):
        assert set(getattr(modeling_auto, mapping)) <= listed
    assert len(FAMILIES) >= 60


WORKING = [family for family in FAMILIES if family.model_type not in CANNOT_WORK]


@pytest.mark.parametrize("family", WORKING, ids=lambda family: family.model_type)
def test_trace_and_report_through_the_generic_path(family) -> None:
    result = exercise(family, ("trace", "report"))
    assert result.output_difference is not None and result.output_difference <= 1e-5
    assert result.hooks_left is False and result.registry_left is False
    assert result.sites > 0 and result.attention_sites > 0
    if family.model_type in NO_PROBABILITIES:
        assert result.attention_captured == 0
    else:
        assert result.attention_captured == result.attention_sites
        assert result.attention_row_error <= 1e-4
    assert "frame_mapping" in result.report_ran, result.report_unavailable
    assert result.verdict in ("not reversed", *(f"reversed at block {block}" for block in range(2)))


@pytest.mark.parametrize("family", WORKING, ids=lambda family: family.model_type)
def test_gradient_alignment_through_the_generic_path(family) -> None:
    result = exercise(family, ("alignment",))
    if result.alignment_refusal is None:
        assert result.alignments == result.batch_size
    else:
        assert "teacher-force" in result.alignment_refusal or \
            "no decoder" in result.alignment_refusal or "transducer" in result.alignment_refusal


@pytest.mark.parametrize("model_type", sorted(CANNOT_WORK))
def test_families_listed_as_not_working_do_not_work(model_type: str) -> None:
    family = next((family for family in FAMILIES if family.model_type == model_type), None)
    if family is None:
        pytest.skip(f"{model_type} is not in this transformers")
    with pytest.raises(Exception):  # noqa: B017 (whatever stops it; the list says why)
        exercise(family)
    prepared.cache_clear()


def test_the_readme_lists_every_family_that_does_not_work_with_its_reason() -> None:
    text = README.read_text()
    for model_type in CANNOT_WORK:
        assert re.search(rf"`{re.escape(model_type)}`", text), model_type
