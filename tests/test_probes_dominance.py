"""Branch dominance: norms and ratios follow a scaled branch exactly, respect padding, and say which
trace they need."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import attnprobe
from attnprobe.errors import CapabilityError
from attnprobe.probes import BranchDominance, branch_dominance
from attnprobe.testing import scale_branch
from tests.test_probes_models import conformer_aed, speech_batch

MODEL = conformer_aed()
BRANCHES = ["ffn1", "self_attn", "conv", "ffn2"]
TRACE = dict(kind=("block", "ffn", "self_attn", "conv"), stack="encoder",
             capture={"input", "output"})


def dominance(batch: attnprobe.SpeechBatch) -> BranchDominance:
    with attnprobe.trace(MODEL, **TRACE) as trace, torch.no_grad():
        MODEL(batch.inputs, batch.input_lengths)
    return branch_dominance(trace)


def test_norms_are_means_over_valid_frames() -> None:
    batch = speech_batch([6, 4])
    result = dominance(batch)
    assert result.layers == [0, 1, 2] and result.branches == BRANCHES
    with attnprobe.trace(MODEL, **TRACE) as trace, torch.no_grad():
        MODEL(batch.inputs, batch.input_lengths)
    branch = trace["encoder.1.conv"].output[1, :4]
    residual = trace["encoder.1.conv"].input[1, :4]
    assert result.branch_norm[1, 1, 2] == pytest.approx(float(branch.norm(dim=-1).mean()), 1e-5)
    assert result.residual_norm[1, 1, 2] == pytest.approx(float(residual.norm(dim=-1).mean()),
                                                          1e-5)
    block_in, block_out = trace["encoder.1"].input[1, :4], trace["encoder.1"].output[1, :4]
    cosine = torch.nn.functional.cosine_similarity(block_in, block_out, dim=-1).mean()
    assert result.survival[1, 1] == pytest.approx(float(cosine), 1e-5)


@settings(max_examples=10, deadline=None)
@given(block=st.integers(0, 2), branch=st.sampled_from(BRANCHES),
       factor=st.floats(0.25, 4.0), frames=st.lists(st.integers(4, 9), min_size=1, max_size=3))
def test_a_scaled_branch_moves_its_ratio_by_the_factor(block: int, branch: str, factor: float,
                                                      frames: list[int]) -> None:
    batch = speech_batch(frames)
    before = dominance(batch)
    with scale_branch(MODEL, f"encoder.{block}.{branch}", factor):
        after = dominance(batch)
    column = BRANCHES.index(branch)
    assert np.allclose(after.per_sequence_ratio[:, block, column],
                       factor * before.per_sequence_ratio[:, block, column], rtol=1e-4)
    assert np.allclose(after.ratio[block, column], factor * before.ratio[block, column],
                       rtol=1e-4)
    # Nothing upstream of the scaled branch changes.
    assert np.allclose(after.per_sequence_ratio[:, :block], before.per_sequence_ratio[:, :block])
    assert np.allclose(after.per_sequence_ratio[:, block, :column],
                       before.per_sequence_ratio[:, block, :column])


@settings(max_examples=8, deadline=None)
@given(frames=st.lists(st.integers(4, 9), min_size=2, max_size=3), seed=st.integers(0, 100))
def test_padded_batch_equals_each_sequence_alone(frames: list[int], seed: int) -> None:
    batch = speech_batch(frames, seed=seed)
    together = dominance(batch)
    for index in range(batch.batch_size):
        alone = dominance(batch.item(index))
        for name in ("branch_norm", "residual_norm", "block_input_norm", "block_output_norm",
                     "survival"):
            assert np.allclose(getattr(alone, name)[0], getattr(together, name)[index],
                               rtol=1e-5), name
    assert np.all(np.abs(together.survival) <= 1.0 + 1e-6)


def test_a_dominating_branch_is_named_and_summarised() -> None:
    with scale_branch(MODEL, "encoder.1.self_attn", 50.0):
        result = dominance(speech_batch([6]))
    assert (1, "self_attn") in result.dominating
    assert "self_attn@1" in result.summary()
    assert result.to_dict()["ratio"][1][1] == pytest.approx(float(result.ratio[1, 1]))


def test_a_trace_without_branch_inputs_names_the_capture_to_use() -> None:
    batch = speech_batch([5])
    with attnprobe.trace(MODEL, kind=("block", "ffn", "self_attn", "conv")) as trace, \
            torch.no_grad():
        MODEL(batch.inputs, batch.input_lengths)
    with pytest.raises(CapabilityError, match=r"capture=\{'input', 'output'\}"):
        branch_dominance(trace)
