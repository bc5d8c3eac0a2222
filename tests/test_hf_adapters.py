"""The Hugging Face adapters on tiny random models of every family, eager and sdpa, batch > 1 with
padding: sites, lengths, unchanged outputs, and a model restored exactly after every trace."""

from __future__ import annotations

import inspect
import itertools
from contextlib import nullcontext
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import attnprobe
import attnprobe.adapters.hf_parakeet
import attnprobe.adapters.hf_speech2text
import attnprobe.adapters.hf_wav2vec2
import attnprobe.adapters.hf_whisper  # importing an adapter module registers its adapters
from attnprobe.adapters import find_site_map
from tests.hf_models import CASES, FAMILIES, HEADS, LAYERS, main_output
from tests.toy_model import all_hooks

_built: dict[tuple[str, str], nn.Module] = {}


def built(family: str, implementation: str) -> nn.Module:
    """One model per case for the whole file (each test leaves it as it found it)."""
    if (family, implementation) not in _built:
        _built[(family, implementation)] = FAMILIES[family].build(implementation)
    return _built[(family, implementation)]


def padded_lengths(family: str, batch: int) -> list[int]:
    low, high = FAMILIES[family].length_range
    return [high - (high - low) * index // max(1, batch - 1) for index in range(batch)]


def attention_implementations(model: nn.Module) -> dict[str, Any]:
    """``_attn_implementation`` of every config in the model, sub-configs included."""
    found = {}
    for name, module in model.named_modules():
        config = getattr(module, "config", None)
        if config is None:
            continue
        found[f"{name}.config"] = config._attn_implementation
        for key in config.sub_configs:
            found[f"{name}.config.{key}"] = getattr(config, key)._attn_implementation
    return found


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone()
            for name, tensor in itertools.chain(model.named_parameters(), model.named_buffers())}


def restore(model: nn.Module, saved: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, tensor in itertools.chain(model.named_parameters(), model.named_buffers()):
            tensor.copy_(saved[name])


@pytest.mark.parametrize(("family", "implementation"), CASES)
def test_sites_lengths_and_attention(family: str, implementation: str) -> None:
    model = built(family, implementation)
    lengths = padded_lengths(family, 3)
    batch = FAMILIES[family].batch(lengths, [5, 2, 4], 0)
    with attnprobe.trace(model) as t:
        model(**batch.inputs)
    assert [(site.name, site.kind) for site in t.sites] == FAMILIES[family].expected_sites()
    for site in t.sites:
        assert model.get_submodule(site.module_path) is not None
    frontend = t["encoder.frontend"]
    assert frontend.input.shape[:2] == (3, max(batch.feature_lengths))
    assert frontend.input_lengths.tolist() == batch.feature_lengths
    assert frontend.lengths.tolist() == batch.encoder_lengths
    assert torch.equal(frontend.output, t["encoder.0"].input)
    for layer in range(LAYERS):
        block = t[f"encoder.{layer}"]
        assert block.lengths.tolist() == batch.encoder_lengths
        assert block.output.shape[:2] == (3, max(batch.encoder_lengths))
    for record in t.select(kind=("self_attn", "cross_attn")):
        attention = record.attention
        assert attention.shape[:2] == (3, HEADS)
        assert attention.shape[2] == record.output.shape[1]
        query_lengths, key_lengths = record.lengths.tolist(), record.key_lengths.tolist()
        expected_keys = (batch.encoder_lengths if record.site.stack == "encoder"
                         or record.site.kind == "cross_attn" else batch.decoder_lengths)
        assert key_lengths == expected_keys
        for index, (queries, keys) in enumerate(zip(query_lengths, key_lengths, strict=True)):
            rows = attention[index, :, :queries]
            assert torch.allclose(rows[..., :keys].sum(-1), torch.ones(()), atol=1e-5)
            assert torch.all(rows[..., keys:] == 0)
    for record in t.select(stack="decoder", kind="self_attn"):
        assert torch.all(record.attention.triu(diagonal=1) == 0), "causal mask was dropped"
        assert record.lengths.tolist() == batch.decoder_lengths


@pytest.mark.parametrize(("family", "implementation"), CASES)
def test_bare_models_are_matched_too(family: str, implementation: str) -> None:
    model = built(family, implementation)
    bare = {"whisper": lambda: model.model.encoder, "speech2text": lambda: model.model,
            "parakeet": lambda: model.encoder}.get(family, lambda: model.base_model)()
    assert type(find_site_map(bare)) is type(find_site_map(model))
    batch = FAMILIES[family].batch(padded_lengths(family, 2), [3, 2], 0)
    accepted = inspect.signature(bare.forward).parameters
    with attnprobe.trace(bare) as t:
        bare(**{name: value for name, value in batch.inputs.items() if name in accepted})
    names = [site.name for site in t.sites]
    assert names[0] == "encoder.frontend"
    assert (f"decoder.{LAYERS - 1}.cross_attn" in names) == (family == "speech2text")
    for site in t.sites:
        assert bare.get_submodule(site.module_path) is not None
    last = t[f"encoder.{LAYERS - 1}.self_attn"]
    assert last.key_lengths.tolist() == batch.encoder_lengths
    for index, keys in enumerate(batch.encoder_lengths):
        assert torch.allclose(last.attention[index, :, :keys, :keys].sum(-1), torch.ones(()))


@settings(max_examples=12, deadline=None)
@given(case=st.sampled_from(CASES), batch_size=st.integers(1, 3), fail=st.booleans(),
       train=st.booleans(), data=st.data())
def test_tracing_changes_nothing_and_restores_everything(
        case: tuple[str, str], batch_size: int, fail: bool, train: bool,
        data: st.DataObject) -> None:
    family, implementation = case
    model = built(family, implementation)
    low, high = FAMILIES[family].length_range
    lengths = data.draw(st.lists(st.integers(low, high), min_size=batch_size,
                                 max_size=batch_size))
    decoder_lengths = data.draw(st.lists(st.integers(1, 6), min_size=batch_size,
                                         max_size=batch_size))
    batch = FAMILIES[family].batch(lengths, decoder_lengths, len(lengths))
    model.train(train)
    try:
        before = state(model)
        hooks = all_hooks(model)
        implementations = attention_implementations(model)
        torch.manual_seed(1)
        expected = main_output(model(**batch.inputs))
        expected_state, expected_random = state(model), torch.get_rng_state()
        restore(model, before)
        torch.manual_seed(1)
        with (pytest.raises(RuntimeError, match="injected") if fail else nullcontext(),
              attnprobe.trace(model) as t):
            output = main_output(model(**batch.inputs))
            assert set(attention_implementations(model).values()) == {"attnprobe"}
            if fail:
                raise RuntimeError("injected")
        assert torch.equal(torch.get_rng_state(), expected_random)
        assert (output - expected).abs().max() <= 1e-5
        assert t[f"encoder.{LAYERS - 1}.self_attn"].attention.shape[0] == batch_size
        assert all_hooks(model) == hooks
        assert attention_implementations(model) == implementations
        assert model.training == train
        after = state(model)
        assert all(torch.equal(after[name], expected_state[name]) for name in after)
    finally:
        model.eval()


@pytest.mark.parametrize(("family", "implementation"), CASES)
def test_user_hooks_survive_and_still_fire(family: str, implementation: str) -> None:
    model = built(family, implementation)
    batch = FAMILIES[family].batch(padded_lengths(family, 2), [3, 2], 0)
    attention = model.get_submodule(
        next(binding.site.module_path for binding in find_site_map(model).bindings()
             if binding.site.kind == "self_attn"))
    calls: list[str] = []
    before = attention.register_forward_hook(lambda *_: calls.append("before"))
    with attnprobe.trace(model):
        during = attention.register_forward_hook(lambda *_: calls.append("during"))
        model(**batch.inputs)
    assert calls == ["before", "during"]
    calls.clear()
    model(**batch.inputs)
    assert calls == ["before", "during"]
    before.remove()
    during.remove()
    assert not attention._forward_hooks
