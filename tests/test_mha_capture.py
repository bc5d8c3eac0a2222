"""``nn.MultiheadAttention`` capture, and the generic site map (found by structure) on plain torch
transformers."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import attnprobe
from attnprobe.adapters import LengthEntry, SiteBinding, SiteMap, find_site_map
from attnprobe.adapters.generic import DiscoveredSites
from attnprobe.adapters.recompute import DerivedTap
from attnprobe.adapters.torch_mha import MultiheadAttentionCapture
from attnprobe.capture import pick_argument
from attnprobe.errors import MemoryBudgetExceeded, UnsupportedModelError
from attnprobe.lengths import lengths_from_attention_mask
from attnprobe.sites import Site
from tests.torchaudio_models import assert_restored, assert_rows_are_distributions, snapshot

DIM, HEADS = 8, 2


class Injected(Exception):
    pass


def attention_module(batch_first: bool, seed: int = 0) -> nn.MultiheadAttention:
    torch.manual_seed(seed)
    return nn.MultiheadAttention(DIM, HEADS, batch_first=batch_first).eval()


def padded_inputs(lengths: list[int], batch_first: bool, seed: int = 0
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(batch, frames, DIM)`` (time-major unless ``batch_first``) and the key-padding mask."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), max(lengths), DIM, generator=generator)
    padding = torch.arange(max(lengths))[None, :] >= torch.tensor(lengths)[:, None]
    return (x if batch_first else x.transpose(0, 1)), padding


class AttentionSites(SiteMap):
    """The model is one ``nn.MultiheadAttention``: site ``encoder.0.self_attn``, lengths from its
    call's ``key_padding_mask``."""

    family = "one-attention"

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return False

    def bindings(self) -> list[SiteBinding]:
        module = self.model
        return [SiteBinding(Site("encoder.0.self_attn", "self_attn", "encoder", 0, ""),
                            DerivedTap(module, lambda args, kwargs, _out: pick_argument(
                                args, kwargs, 0, "query"), observe="input"),
                            output_module=DerivedTap(module, lambda _a, _k, output: output[0]),
                            input_name=None, batch_first=module.batch_first,
                            attention=MultiheadAttentionCapture(module))]

    def length_entries(self) -> list[LengthEntry]:
        def lengths(args: tuple, kwargs: dict) -> dict[str, torch.Tensor]:
            query = pick_argument(args, kwargs, 0, "query")
            mask = pick_argument(args, kwargs, 3, "key_padding_mask")
            if query is None or query.dim() != 3:
                return {}
            batch = query.shape[0] if self.model.batch_first else query.shape[1]
            frames = query.shape[1] if self.model.batch_first else query.shape[0]
            found = lengths_from_attention_mask(mask, batch, frames)
            return {} if found is None else {"encoder": found}

        return [LengthEntry(self.model, lengths)]


def traced_attention(module: nn.Module, *args: object, **kwargs: object):
    """Call ``module`` inside a trace; return output and the trace."""
    with attnprobe.trace(module, adapter=AttentionSites) as traced:
        output = module(*args, **kwargs)
    return output, traced


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("request_", [{}, {"need_weights": False}, {"average_attn_weights": False},
                                      {"need_weights": True, "average_attn_weights": True}])
def test_caller_gets_exactly_what_it_asked_for(batch_first: bool, request_: dict) -> None:
    module = attention_module(batch_first)
    x, padding = padded_inputs([5, 3, 1], batch_first)
    expected = module(x, x, x, key_padding_mask=padding, **request_)
    before = snapshot(module)
    output, traced = traced_attention(module, x, x, x, key_padding_mask=padding, **request_)
    assert_restored(module, before)
    assert torch.allclose(output[0], expected[0], atol=1e-5, rtol=0)
    if expected[1] is None:
        assert output[1] is None
    else:
        assert output[1].shape == expected[1].shape
        assert torch.allclose(output[1], expected[1], atol=1e-5, rtol=0)
    record = traced["encoder.0.self_attn"]
    assert record.attention.shape == (3, HEADS, 5, 5)
    assert torch.equal(record.lengths, torch.tensor([5, 3, 1]))
    assert_rows_are_distributions(record.attention, record.lengths, record.key_lengths)


def test_positional_options_and_unbatched_calls() -> None:
    module = attention_module(batch_first=False)
    x, padding = padded_inputs([4, 2], batch_first=False)
    expected = module(x, x, x, padding, False)
    output, traced = traced_attention(module, x, x, x, padding, False)
    assert output[1] is None and torch.allclose(output[0], expected[0], atol=1e-5)
    assert traced["encoder.0.self_attn"].attention.shape == (2, HEADS, 4, 4)
    single = x[:, 0]
    expected = module(single, single, single)
    output, traced = traced_attention(module, single, single, single)
    assert torch.allclose(output[1], expected[1], atol=1e-5)
    assert traced["encoder.0.self_attn"].attention.shape == (1, HEADS, 4, 4)


def test_probabilities_times_values_give_the_module_output() -> None:
    module = attention_module(batch_first=True)
    x, padding = padded_inputs([6, 4], batch_first=True)
    output, traced = traced_attention(module, x, x, x, key_padding_mask=padding, need_weights=False)
    values = F.linear(x, module.in_proj_weight[2 * DIM:], module.in_proj_bias[2 * DIM:])
    split = values.view(2, 6, HEADS, DIM // HEADS).transpose(1, 2)
    mixed = (traced["encoder.0.self_attn"].attention @ split).transpose(1, 2).reshape(2, 6, DIM)
    assert torch.allclose(module.out_proj(mixed), output[0], atol=1e-5)


def test_nested_traces_both_receive_attention_and_user_hooks_see_the_callers_output() -> None:
    module = attention_module(batch_first=True)
    x, padding = padded_inputs([5, 2], batch_first=True)
    seen: list[object] = []
    handle = module.register_forward_hook(lambda _m, _a, output: seen.append(output[1]))
    before = snapshot(module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with attnprobe.trace(module, adapter=AttentionSites) as outer:
            during = module.register_forward_hook(lambda _m, _a, output: seen.append(output[1]))
            with attnprobe.trace(module, adapter=AttentionSites) as inner:
                module(x, x, x, key_padding_mask=padding, need_weights=False)
            during.remove()
    assert_restored(module, before)
    handle.remove()
    assert seen == [None, None]
    assert torch.equal(inner["encoder.0.self_attn"].attention,
                       outer["encoder.0.self_attn"].attention)


def test_nobody_wanting_weights_leaves_the_call_untouched() -> None:
    module = attention_module(batch_first=True)
    x, padding = padded_inputs([5, 2], batch_first=True)
    expected = module(x, x, x, key_padding_mask=padding, need_weights=False)[0]
    with attnprobe.trace(module, adapter=AttentionSites, store=False):
        output = module(x, x, x, key_padding_mask=padding, need_weights=False)[0]
    assert torch.equal(output, expected)


def test_memory_budget_stops_before_weights_exist_and_cleans_up() -> None:
    module = attention_module(batch_first=True)
    x, padding = padded_inputs([5, 2], batch_first=True)
    before = snapshot(module)
    with pytest.raises(MemoryBudgetExceeded):
        with attnprobe.trace(module, adapter=AttentionSites, memory_budget=16):
            module(x, x, x, key_padding_mask=padding)
    assert_restored(module, before)


@settings(max_examples=20, deadline=None)
@given(lengths=st.lists(st.integers(1, 6), min_size=1, max_size=4), batch_first=st.booleans(),
       need_weights=st.booleans(), failure=st.sampled_from([None, "in_forward", "after_forward"]))
def test_any_batch_and_failure_leave_the_module_as_it_was(
        lengths: list[int], batch_first: bool, need_weights: bool, failure: str | None) -> None:
    module = attention_module(batch_first)
    x, padding = padded_inputs(lengths, batch_first)
    expected = module(x, x, x, key_padding_mask=padding, need_weights=need_weights)
    before = snapshot(module)
    try:
        with attnprobe.trace(module, adapter=AttentionSites) as traced:
            if failure == "in_forward":
                failing = module.register_forward_pre_hook(_raise)
            try:
                output = module(x, x, x, key_padding_mask=padding, need_weights=need_weights)
            finally:
                if failure == "in_forward":
                    failing.remove()
            if failure == "after_forward":
                raise Injected
    except Injected:
        assert failure is not None
    assert_restored(module, before)
    if failure != "in_forward":
        assert torch.allclose(output[0], expected[0], atol=1e-5, rtol=0)
        assert (output[1] is None) == (not need_weights)
        record = traced["encoder.0.self_attn"]
        assert_rows_are_distributions(record.attention, record.lengths, record.key_lengths)
    again = module(x, x, x, key_padding_mask=padding, need_weights=need_weights)
    assert torch.equal(again[0], expected[0])


def _raise(*_: object) -> None:
    raise Injected



# ----------------------------------------------------------------------------- generic site map
def tiny_transformer(batch_first: bool) -> nn.Transformer:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's advice to use batch_first
        return nn.Transformer(d_model=DIM, nhead=HEADS, num_encoder_layers=2,
                              num_decoder_layers=2, dim_feedforward=16, dropout=0.0,
                              batch_first=batch_first).eval()


def test_generic_finds_transformer_sites_by_structure_and_warns_once_naming_the_stacks() -> None:
    model = tiny_transformer(batch_first=False)
    with pytest.warns(UserWarning, match=r"encoder encoder.layers \(2 blocks\), decoder "
                                         r"decoder.layers \(2 blocks\)"):
        site_map = find_site_map(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        find_site_map(model)
    assert isinstance(site_map, DiscoveredSites)
    sites = [binding.site for binding in site_map.bindings()]
    expected = []
    for stack, branches in (("encoder", ["self_attn", "ffn"]),
                            ("decoder", ["self_attn", "cross_attn", "ffn"])):
        for layer in range(2):
            expected.append((f"{stack}.{layer}", "block"))
            expected += [(f"{stack}.{layer}.{branch}", branch) for branch in branches]
    assert [(site.name, site.kind) for site in sites] == expected
    assert site_map.binding("decoder.1.cross_attn").site.module_path == \
        "decoder.layers.1.multihead_attn"
    assert site_map.binding("encoder.0.ffn").output_module is model.encoder.layers[0].linear2
    assert any("roles from the modules alone" in note for note in site_map.notes)


@pytest.mark.parametrize("batch_first", [False, True])
def test_generic_trace_of_transformer_matches_untraced_with_lengths(batch_first: bool) -> None:
    model = tiny_transformer(batch_first)
    source, source_padding = padded_inputs([6, 4, 2], batch_first, seed=1)
    target, target_padding = padded_inputs([4, 3, 1], batch_first, seed=2)
    causal = torch.triu(torch.ones(4, 4, dtype=torch.bool), diagonal=1)
    masks = dict(src_key_padding_mask=source_padding, tgt_key_padding_mask=target_padding,
                 memory_key_padding_mask=source_padding, tgt_mask=causal)
    expected = model(source, target, **masks)
    before = snapshot(model)
    with attnprobe.trace(model, adapter=DiscoveredSites) as traced:
        output = model(source, target, **masks)
    assert_restored(model, before)
    assert torch.allclose(output, expected, atol=1e-5, rtol=0)
    cross = traced["decoder.1.cross_attn"]
    assert cross.attention.shape == (3, HEADS, 4, 6)
    assert torch.equal(cross.lengths, torch.tensor([4, 3, 1]))
    assert torch.equal(cross.key_lengths, torch.tensor([6, 4, 2]))
    for record in traced.select(kind=("self_attn", "cross_attn")):
        assert record.attentions[0].lengths_known
        assert_rows_are_distributions(record.attention, record.lengths, record.key_lengths)
    decoder_self = traced["decoder.0.self_attn"].attention
    assert torch.all(decoder_self.triu(diagonal=1) == 0)
    block = traced["encoder.1"]
    assert block.output.shape == (3, 6, DIM) and torch.equal(block.lengths, torch.tensor([6, 4, 2]))


def test_generic_handles_the_nested_tensor_fast_path() -> None:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(DIM, HEADS, 16, dropout=0.0, batch_first=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = nn.TransformerEncoder(layer, 2).eval()
    x, padding = padded_inputs([6, 3, 2], batch_first=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = model(x, src_key_padding_mask=padding)
        before = snapshot(model)
        with attnprobe.trace(model, adapter=DiscoveredSites,
                             capture={"input", "output", "attention"}) as traced:
            output = model(x, src_key_padding_mask=padding)
    assert_restored(model, before)
    assert torch.allclose(output, expected, atol=1e-5, rtol=0)
    record = traced["encoder.1.self_attn"]
    assert record.input.shape == record.output.shape == (3, 6, DIM)
    assert not record.input.is_nested and not record.output.is_nested
    assert torch.equal(traced["encoder.1"].lengths, torch.tensor([6, 3, 2]))
    assert_rows_are_distributions(record.attention, record.lengths, record.key_lengths)


class TwoTowers(nn.Module):
    """Attention modules outside any stack of blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.audio = nn.ModuleDict({"attention": nn.MultiheadAttention(DIM, HEADS)})
        self.text = nn.ModuleDict({"attention": nn.MultiheadAttention(DIM, HEADS)})


@pytest.mark.parametrize(("model", "missing"), [
    (nn.Sequential(nn.Linear(4, 4), nn.ReLU()), "no attention module"),
    (TwoTowers(), "no stack")], ids=["no attention", "no stack"])
def test_a_model_without_a_stack_of_attention_blocks_is_refused_with_the_fix(
        model: nn.Module, missing: str) -> None:
    with pytest.raises(UnsupportedModelError, match="register_adapter"):
        find_site_map(model)
    described = str(attnprobe.describe(model, adapter=DiscoveredSites))
    assert "encoder: none" in described and f"- {missing}" in described
