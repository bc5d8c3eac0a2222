"""What the generic path captures without knowing a family: attention probabilities of modules that
compute their own softmax, call SDPA or reuse ``multi_head_attention_forward``; valid lengths from
whatever padding mask a block receives; and nothing left in transformers' registries afterwards."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import attnprobe
from attnprobe.adapters.function_attention import FunctionAttention
from attnprobe.capture import AttentionEmitter
from attnprobe.lengths import lengths_from_attention_mask, valid_mask


class Collect(AttentionEmitter):
    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def reserve(self, shape: tuple[int, ...], dtype: torch.dtype) -> bool:
        return True

    def emit(self, probabilities: torch.Tensor) -> None:
        self.seen.append(probabilities)


class SoftmaxAttention(nn.Module):
    """Heads folded into the batch, as older code writes it: a 3-d softmax."""

    def __init__(self, width: int = 8, heads: int = 2, fold_heads: bool = False,
                 sdpa: bool = False) -> None:
        super().__init__()
        self.heads, self.fold_heads, self.sdpa = heads, fold_heads, sdpa
        self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        batch, frames, width = x.shape
        q, k, v = (part.view(batch, frames, self.heads, -1).transpose(1, 2)
                   for part in self.qkv(x).chunk(3, dim=-1))
        mask = keep[:, None, None, :]
        if self.sdpa:
            mixed = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            scores = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).masked_fill(~mask, -1e9)
            if self.fold_heads:
                folded = torch.softmax(scores.flatten(0, 1), dim=-1)
                mixed = (folded @ v.flatten(0, 1)).view_as(q)
            else:
                mixed = scores.softmax(dim=-1) @ v
        return self.out(mixed.transpose(1, 2).reshape(batch, frames, width))


@pytest.mark.parametrize("variant", [{}, {"fold_heads": True}, {"sdpa": True}],
                         ids=["softmax", "heads folded into the batch", "sdpa"])
def test_probabilities_of_a_module_that_computes_attention_itself_rebuild_its_output(
        variant: dict) -> None:
    torch.manual_seed(0)
    module = SoftmaxAttention(**variant).eval()
    x, keep = torch.randn(2, 5, 8), valid_mask(torch.tensor([5, 3]), 5)
    expected = module(x, keep)
    collect = Collect()
    remove = FunctionAttention(module).install(collect)
    try:
        output = module(x, keep)
    finally:
        remove()
    assert torch.equal(output, expected)
    probabilities, = collect.seen
    assert probabilities.shape == (2, 2, 5, 5)
    assert torch.all(probabilities[1, :, :, 3:] < 1e-6)
    values = module.qkv(x).chunk(3, dim=-1)[2].view(2, 5, 2, 4).transpose(1, 2)
    rebuilt = module.out((probabilities @ values).transpose(1, 2).reshape(2, 5, 8))
    assert torch.allclose(rebuilt, expected, atol=1e-5)
    assert module(x, keep) is not None and len(collect.seen) == 1  # nothing left installed


class FunctionalMultiHead(nn.Module):
    """A module reusing torch's multi-head attention function (as WavLM's does)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.MultiheadAttention(8, 2)

    def forward(self, x: torch.Tensor, need_weights: bool) -> tuple[torch.Tensor, torch.Tensor]:
        inner = self.inner
        return nn.functional.multi_head_attention_forward(
            x, x, x, 8, 2, inner.in_proj_weight, inner.in_proj_bias, None, None, False, 0.0,
            inner.out_proj.weight, inner.out_proj.bias, training=False, need_weights=need_weights)


@pytest.mark.parametrize("need_weights", [True, False])
def test_a_module_reusing_multi_head_attention_forward_gets_what_it_asked_for(
        need_weights: bool) -> None:
    torch.manual_seed(0)
    module = FunctionalMultiHead().eval()
    x = torch.randn(5, 2, 8)
    expected = module(x, need_weights)
    collect = Collect()
    remove = FunctionAttention(module).install(collect)
    try:
        output = module(x, need_weights)
    finally:
        remove()
    assert torch.allclose(output[0], expected[0], atol=1e-6)
    probabilities, = collect.seen
    assert probabilities.shape == (2, 2, 5, 5)
    if need_weights:
        assert torch.allclose(output[1], expected[1], atol=1e-6)
        assert torch.allclose(probabilities.mean(1), expected[1], atol=1e-6)
    else:
        assert output[1] is None


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(1, 7), min_size=1, max_size=4),
       form=st.sampled_from(["valid bool", "padding bool", "valid 0/1", "additive", "float 0/1",
                             "4-d additive", "4-d bool", "3-d bool causal"]))
def test_lengths_are_read_from_any_right_padded_mask(lengths: list[int], form: str) -> None:
    frames = max(lengths)
    valid = valid_mask(torch.tensor(lengths), frames)
    masks = {
        "valid bool": valid, "padding bool": ~valid, "valid 0/1": valid.long(),
        "additive": torch.zeros(valid.shape).masked_fill(~valid, float("-inf")),
        "float 0/1": valid.float(),
        "4-d additive": torch.zeros(len(lengths), 1, frames, frames).masked_fill(
            ~valid[:, None, None, :], torch.finfo(torch.float32).min),
        "4-d bool": valid[:, None, None, :].expand(-1, 1, frames, -1),
        "3-d bool causal": valid[:, None, :] & torch.ones(frames, frames, dtype=torch.bool).tril(),
    }
    found = lengths_from_attention_mask(masks[form], len(lengths), frames)
    assert found is not None and found.tolist() == lengths


def test_a_mask_that_is_not_right_padded_gives_no_lengths() -> None:
    holed = torch.tensor([[True, False, True, True], [True, True, False, False]])
    assert lengths_from_attention_mask(holed, 2, 4) is None
    left_padded = torch.zeros(2, 4).masked_fill(valid_mask(torch.tensor([4, 2]), 4).flip(1) == 0,
                                                float("-inf"))
    assert lengths_from_attention_mask(left_padded, 2, 4) is None
    assert lengths_from_attention_mask(torch.ones(3, 4), 2, 4) is None


def test_a_trace_leaves_no_attnprobe_entry_in_the_transformers_registries() -> None:
    pytest.importorskip("transformers")
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    from tests.test_probes_models import tiny_whisper

    model = tiny_whisper()
    features, start = torch.randn(1, 8, 16), torch.tensor([[1, 3]])
    with attnprobe.trace(model) as outer:
        with attnprobe.trace(model, kind="cross_attn"):
            model(input_features=features, decoder_input_ids=start)
        assert "attnprobe" in AttentionInterface._global_mapping  # the outer trace still holds
        model(input_features=features, decoder_input_ids=start)
    assert outer["encoder.0.self_attn"].attentions
    for interface in (AttentionInterface, AttentionMaskInterface):
        assert "attnprobe" not in interface._global_mapping
    with pytest.raises(ValueError, match="attnprobe"):
        tiny_whisper().set_attn_implementation("attnprobe")
