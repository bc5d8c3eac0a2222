"""Attention probabilities through the attention-function registry: they rebuild the module's
output, keep causal and padding masks, reach every nested trace and only their own thread's trace,
and the original implementation comes back exactly."""

from __future__ import annotations

import threading
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
from attnprobe.adapters import find_site_map, hf_attention
from attnprobe.capture import AttentionEmitter
from attnprobe.errors import MemoryBudgetExceeded
from tests.hf_models import CASES, FAMILIES, main_output

_built: dict[tuple[str, str], nn.Module] = {}


def built(family: str, implementation: str) -> nn.Module:
    if (family, implementation) not in _built:
        _built[(family, implementation)] = FAMILIES[family].build(implementation)
    return _built[(family, implementation)]


def two_lengths(family: str) -> list[int]:
    return list(reversed(FAMILIES[family].length_range))


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(binding.site.name, binding.module) for binding in find_site_map(model).bindings()
            if binding.site.is_attention]


@pytest.mark.parametrize(("family", "implementation"), CASES)
def test_probabilities_times_values_rebuild_the_module_output(family: str,
                                                               implementation: str) -> None:
    model = built(family, implementation)
    batch = FAMILIES[family].batch(two_lengths(family), [4, 2], 0)
    seen: dict[str, tuple[tuple, dict, torch.Tensor]] = {}
    handles = []
    for name, module in attention_modules(model):
        def keep(_module: nn.Module, args: tuple, kwargs: dict, output: Any,
                 name: str = name) -> None:
            seen[name] = (args, kwargs, output[0])

        handles.append(module.register_forward_hook(keep, with_kwargs=True))
    try:
        with attnprobe.trace(model, kind=("self_attn", "cross_attn")) as t:
            model(**batch.inputs)
    finally:
        for handle in handles:
            handle.remove()
    assert set(seen) == {record.site.name for record in t}
    for name, module in attention_modules(model):
        args, kwargs, output = seen[name]
        value_name, output_name = FAMILIES[family].projections[type(module).__name__]
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        source = kwargs.get("key_value_states")
        source = hidden if source is None else source
        probabilities = t[name].attention
        batch_size, heads, queries, keys = probabilities.shape
        values = getattr(module, value_name)(source).view(batch_size, keys, heads, -1)
        mixed = torch.einsum("bhqk,bkhd->bqhd", probabilities, values)
        rebuilt = getattr(module, output_name)(mixed.reshape(batch_size, queries, -1))
        assert (rebuilt - output).abs().max() <= 1e-5, name


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("decoder_mask", [True, False])
def test_causal_mask_survives_with_and_without_padding(implementation: str,
                                                        decoder_mask: bool) -> None:
    model = built("whisper", implementation)
    batch = FAMILIES["whisper"].batch([1, 1], [5, 3], 0)
    if not decoder_mask:
        # sdpa then builds no mask at all and relies on the module's causal flag
        del batch.inputs["decoder_attention_mask"]
    with attnprobe.trace(model, kind="self_attn", stack="decoder") as t:
        model(**batch.inputs)
    for record in t:
        attention = record.attention
        assert torch.all(attention.triu(diagonal=1) == 0)
        assert torch.all(attention.diagonal(dim1=-2, dim2=-1)[:, :, :3] > 0)


def test_cached_generation_gives_one_record_per_step() -> None:
    model = built("whisper", "sdpa")
    features = FAMILIES["whisper"].batch([1, 1], None, 0).inputs["input_features"]
    expected = model.generate(features, max_new_tokens=3, do_sample=False)
    with attnprobe.trace(model, "decoder.1.*_attn") as t:
        generated = model.generate(features, max_new_tokens=3, do_sample=False)
    assert torch.equal(generated, expected)
    steps = t["decoder.1.self_attn"].attentions
    assert len(steps) > 1
    prompt = steps[0].value.shape[-1]
    for step, captured in enumerate(steps[1:], start=1):
        # one new query per step; the keys are every position decoded so far
        assert captured.value.shape == (2, 2, 1, prompt + step)
        assert captured.key_lengths.tolist() == [prompt + step] * 2
        assert torch.allclose(captured.value.sum(-1), torch.ones(()))
    cross = t["decoder.1.cross_attn"].attentions
    assert all(captured.value.shape[-1] == features.shape[-1] // 2 for captured in cross)


@settings(max_examples=15, deadline=None)
@given(family=st.sampled_from(["wav2vec2", "speech2text", "parakeet", "conformer-relative"]),
       data=st.data())
def test_padded_keys_get_no_attention(family: str, data: st.DataObject) -> None:
    low, high = FAMILIES[family].length_range
    lengths = data.draw(st.lists(st.integers(low, high), min_size=2, max_size=3))
    implementation = data.draw(st.sampled_from(FAMILIES[family].implementations))
    model = built(family, implementation)
    batch = FAMILIES[family].batch(lengths, None, sum(lengths))
    with attnprobe.trace(model, kind="self_attn", stack="encoder") as t:
        model(**batch.inputs)
    for record in t:
        assert record.key_lengths.tolist() == batch.encoder_lengths
        for index, valid in enumerate(batch.encoder_lengths):
            rows = record.attention[index, :, :valid]
            assert torch.allclose(rows[..., :valid].sum(-1), torch.ones(()), atol=1e-5)
            assert torch.all(rows[..., valid:] == 0)


def test_nested_traces_share_the_switch_and_both_receive_attention() -> None:
    model = built("parakeet", "eager")
    model.encoder.config._attn_implementation = "sdpa"
    try:
        batch = FAMILIES["parakeet"].batch([30, 12], None, 0)
        expected = main_output(model(**batch.inputs))
        with attnprobe.trace(model, kind="self_attn") as outer:
            with attnprobe.trace(model, "encoder.1.*") as inner:
                output = main_output(model(**batch.inputs))
            assert model.config._attn_implementation == "attnprobe"
            assert model.encoder.config._attn_implementation == "attnprobe"
            model(**batch.inputs)
        assert (model.config._attn_implementation,
                model.encoder.config._attn_implementation) == ("eager", "sdpa")
        assert (output - expected).abs().max() <= 1e-5
        assert len(outer["encoder.1.self_attn"].attentions) == 2
        assert len(inner["encoder.1.self_attn"].attentions) == 1
        assert torch.equal(outer["encoder.1.self_attn"].attentions[0].value,
                           inner["encoder.1.self_attn"].attention)
    finally:
        model.encoder.config._attn_implementation = "eager"


def test_two_models_in_two_threads_get_their_own_records() -> None:
    models = {"wav2vec2": built("wav2vec2", "sdpa"), "hubert": built("hubert", "eager")}
    batches = {name: FAMILIES[name].batch([200, 90], None, 0) for name in models}
    alone = {}
    for name, model in models.items():
        with attnprobe.trace(model, kind="self_attn") as t:
            model(**batches[name].inputs)
        alone[name] = t["encoder.1.self_attn"].attention
    # Both forward passes stop inside their second block until the other one got there too.
    meeting = threading.Barrier(2, timeout=20)
    results: dict[str, Any] = {}

    def meet(*_: Any) -> None:
        meeting.wait()

    def run(name: str) -> None:
        model = models[name]
        handle = model.base_model.encoder.layers[1].register_forward_pre_hook(meet)
        try:
            with attnprobe.trace(model, kind="self_attn") as t:
                model(**batches[name].inputs)
            results[name] = t
        except BaseException as error:
            results[name] = error
        finally:
            handle.remove()

    threads = [threading.Thread(target=run, args=(name,)) for name in models]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name, model in models.items():
        trace = results[name]
        assert not isinstance(trace, BaseException), trace
        assert len(trace["encoder.1.self_attn"].attentions) == 1
        assert torch.equal(trace["encoder.1.self_attn"].attention, alone[name])
        assert model.config._attn_implementation in ("eager", "sdpa")
    assert models["wav2vec2"].config._attn_implementation == "sdpa"
    assert models["hubert"].config._attn_implementation == "eager"


class CountingEmitter(AttentionEmitter):
    def __init__(self, wanted: bool) -> None:
        self.wanted = wanted
        self.reserved: list[tuple[int, ...]] = []
        self.emitted: list[torch.Tensor] = []

    def reserve(self, shape: tuple[int, ...], dtype: torch.dtype) -> bool:
        self.reserved.append(shape)
        return self.wanted

    def emit(self, probabilities: torch.Tensor) -> None:
        self.emitted.append(probabilities)


def test_probabilities_are_computed_only_when_reserved(monkeypatch: pytest.MonkeyPatch) -> None:
    model = built("conformer-relative", "sdpa")
    batch = FAMILIES["conformer-relative"].batch([200, 90], None, 0)
    computed = []
    compute = hf_attention.attention_probabilities
    monkeypatch.setattr(hf_attention, "attention_probabilities",
                        lambda *args, **kwargs: computed.append(1) or compute(*args, **kwargs))
    attention = find_site_map(model).bindings()[3].attention
    for wanted in (False, True):
        emitter = CountingEmitter(wanted)
        remove = attention.install(emitter)
        try:
            model(**batch.inputs)
        finally:
            remove()
        assert emitter.reserved == [(2, 2, 19, 19)]  # 200 samples -> 19 frames
        assert len(emitter.emitted) == int(wanted) == len(computed)
    assert model.config._attn_implementation == "sdpa"


def test_memory_budget_is_checked_before_probabilities_exist() -> None:
    model = built("wav2vec2", "eager")
    batch = FAMILIES["wav2vec2"].batch([200, 90], None, 0)
    hooks = {name: dict(module._forward_pre_hooks) for name, module in model.named_modules()}
    with (pytest.raises(MemoryBudgetExceeded, match="memory budget"),
          attnprobe.trace(model, kind="self_attn", memory_budget=64)):
        model(**batch.inputs)
    assert model.config._attn_implementation == "eager"
    assert {name: dict(module._forward_pre_hooks)
            for name, module in model.named_modules()} == hooks


def test_unsupported_implementation_is_refused_with_the_fix() -> None:
    model = built("hubert", "sdpa")
    batch = FAMILIES["hubert"].batch([200, 90], None, 0)
    model.config._attn_implementation_internal = "flex_attention"
    try:
        with (pytest.raises(RuntimeError, match="set_attn_implementation"),
              attnprobe.trace(model)):
            pass
        assert model.config._attn_implementation == "flex_attention"
        assert not hf_attention._switched and not hf_attention._emitters
    finally:
        model.config._attn_implementation_internal = "sdpa"
    with attnprobe.trace(model, capture={"output"}) as t:
        assert model.config._attn_implementation == "sdpa"
        model(**batch.inputs)
    assert t["encoder.0.self_attn"].output.shape[0] == 2
