"""torchaudio Conformer, Emformer and wav2vec2 / HuBERT adapters on tiny random models."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import attnprobe
import attnprobe.adapters.torchaudio_conformer
import attnprobe.adapters.torchaudio_emformer
import attnprobe.adapters.torchaudio_wav2vec2
from attnprobe.adapters.torchaudio_emformer import EmformerSites
from tests.torchaudio_models import (
    HEADS,
    assert_restored,
    assert_rows_are_distributions,
    padded_features,
    padded_waveforms,
    snapshot,
    tiny_conformer,
    tiny_emformer,
    tiny_wav2vec2,
)

pytest.importorskip("torchaudio")
FAILURES = [None, "in_forward", "after_forward"]


class Injected(Exception):
    pass


def round_trip(model: nn.Module, run: Callable[[], torch.Tensor], watched: nn.Module,
               failure: str | None = None, **options: object) -> attnprobe.Trace:
    """Trace one call of ``run`` and check what every adapter promises: the output equals the
    untraced one, the model is left exactly as it was (after a normal exit or an injected
    exception), and the user's hooks on ``watched`` (one from before, one from during the trace)
    still fire."""
    with torch.no_grad():
        expected = run()
    fired: list[str] = []
    mine = watched.register_forward_hook(lambda *_: fired.append("before"))
    before = snapshot(model)
    added = []
    try:
        with torch.no_grad(), attnprobe.trace(model, **options) as traced:
            added.append(watched.register_forward_hook(lambda *_: fired.append("during")))
            if failure == "in_forward":
                added.append(watched.register_forward_hook(_raise))
            output = run()
            assert torch.allclose(output, expected, atol=1e-5, rtol=0)
            if failure == "after_forward":
                raise Injected
    except Injected:
        assert failure is not None
    for handle in added:
        handle.remove()
    assert_restored(model, before)
    assert fired[:2] == ["before", "during"]
    with torch.no_grad():
        assert torch.equal(run(), expected)
    mine.remove()
    return traced


def _raise(*_: object) -> None:
    raise Injected


def reconstruct(probabilities: torch.Tensor, values: torch.Tensor, out_proj: nn.Linear
                ) -> torch.Tensor:
    """``out_proj(P @ V)`` with ``P (batch, heads, q, k)`` and ``values (batch, k, dim)``."""
    batch, frames, dim = values.shape
    heads = probabilities.shape[1]
    split = values.view(batch, frames, heads, dim // heads).transpose(1, 2)
    mixed = (probabilities @ split).transpose(1, 2).reshape(batch, -1, dim)
    return out_proj(mixed)


# ----------------------------------------------------------------------------- Conformer
@pytest.mark.parametrize("convolution_first", [False, True])
def test_conformer_sites_in_forward_order(convolution_first: bool) -> None:
    model = tiny_conformer(convolution_first=convolution_first)
    features, lengths = padded_features([5, 3])
    traced = round_trip(model, lambda: model(features, lengths)[0], model.conformer_layers[0])
    branches = [("ffn1", "ffn"), ("self_attn", "self_attn"), ("conv", "conv"), ("ffn2", "ffn")]
    if convolution_first:
        branches[1], branches[2] = branches[2], branches[1]
    expected = [(f"encoder.{layer}{name}", kind) for layer in range(2)
                for name, kind in [("", "block")] + [(f".{b}", k) for b, k in branches]]
    assert [(site.name, site.kind) for site in traced.sites] == expected
    assert "frontend" in " ".join(traced.site_map.notes)


@settings(max_examples=12, deadline=None)
@given(lengths=st.lists(st.integers(1, 7), min_size=1, max_size=3),
       failure=st.sampled_from(FAILURES))
def test_conformer_attention_and_branches_add_up(lengths: list[int], failure: str | None) -> None:
    model = tiny_conformer()
    features, valid = padded_features(lengths)
    layer = model.conformer_layers[1]
    traced = round_trip(model, lambda: model(features, valid)[0], layer.self_attn, failure,
                        capture={"input", "output", "attention"})
    if failure == "in_forward":
        return
    record = traced["encoder.1.self_attn"]
    assert record.attention.shape == (len(lengths), HEADS, max(lengths), max(lengths))
    assert torch.equal(record.lengths, valid) and record.attentions[0].lengths_known
    assert_rows_are_distributions(record.attention, record.lengths, record.key_lengths)
    normalised = layer.self_attn_layer_norm(record.input)
    values = F.linear(normalised, *_value_projection(layer.self_attn))
    assert torch.allclose(reconstruct(record.attention, values, layer.self_attn.out_proj),
                          record.output, atol=1e-5)
    # Each branch reads the residual stream and adds its output to it.
    stream = traced["encoder.1"].input
    for branch in ("ffn1", "self_attn", "conv", "ffn2"):
        assert torch.allclose(traced[f"encoder.1.{branch}"].input, stream, atol=1e-5)
        stream = stream + traced[f"encoder.1.{branch}"].output
    assert torch.allclose(layer.final_layer_norm(stream), traced["encoder.1"].output, atol=1e-5)


def _value_projection(attention: nn.MultiheadAttention) -> tuple[torch.Tensor, torch.Tensor]:
    dim = attention.embed_dim
    return attention.in_proj_weight[2 * dim:], attention.in_proj_bias[2 * dim:]


def test_conformer_callers_of_attention_still_get_no_weights() -> None:
    model = tiny_conformer()
    features, lengths = padded_features([4, 2])
    seen: list[object] = []
    handle = model.conformer_layers[0].self_attn.register_forward_hook(
        lambda _m, _a, output: seen.append(output[1]))
    with attnprobe.trace(model), torch.no_grad():
        model(features, lengths)
    handle.remove()
    assert seen == [None]


# ----------------------------------------------------------------------------- Emformer
EMFORMER_CONFIGS = [dict(), dict(right_context=2, memory=2, left_context=4),
                    dict(right_context=1), dict(memory=3)]


@pytest.mark.parametrize("config", EMFORMER_CONFIGS)
def test_emformer_utterance_block_of_the_full_attention(config: dict) -> None:
    model = tiny_emformer(**config)
    right = config.get("right_context", 0)
    features, lengths = padded_features([10, 7, 3], extra_frames=right)
    seen: list[dict] = []
    watch = model.emformer_layers[1].attention.register_forward_hook(
        lambda _m, _a, kwargs, output: seen.append(kwargs | {"output": output[0]}),
        with_kwargs=True)
    with torch.no_grad(), attnprobe.trace(model) as traced:
        with attnprobe.trace(model, adapter=EmformerSites(model, "full"),
                             kind="self_attn") as full:
            model(features, lengths)
    watch.remove()
    attention = model.emformer_layers[1].attention
    assert [site.name for site in traced.sites] == [
        f"encoder.{layer}{suffix}" for layer in range(2) for suffix in ("", ".self_attn", ".ffn")]
    block = traced["encoder.1.self_attn"]
    assert block.attention.shape == (3, HEADS, 10, 10)
    call = seen[0]
    memory, rows = call["mems"].size(0), call["right_context"].size(0)
    matrix = full["encoder.1.self_attn"].attention
    assert torch.equal(block.attention,
                       matrix[:, :, rows:rows + 10, memory + rows:memory + rows + 10])
    if not right and not memory:
        assert_rows_are_distributions(block.attention, lengths, lengths)
    for item, length in enumerate(lengths.tolist()):
        utterance_rows = matrix[item, :, rows:rows + length]
        assert torch.allclose(utterance_rows.sum(-1), torch.ones(()), atol=1e-5)
        assert torch.all(utterance_rows[..., memory + rows + length:] == 0)
    keys = torch.cat([call["mems"], call["right_context"], call["utterance"]])
    values = attention.emb_to_key_value(keys).chunk(2, dim=2)[1].transpose(0, 1)
    queries_rows = reconstruct(matrix, values, attention.out_proj)[:, : rows + 10]
    assert torch.allclose(queries_rows, call["output"].transpose(0, 1), atol=1e-5)
    layer = model.emformer_layers[1]
    stream = traced["encoder.1"].input + block.output + traced["encoder.1.ffn"].output
    assert torch.allclose(layer.layer_norm_output(stream), traced["encoder.1"].output, atol=1e-5)


@settings(max_examples=10, deadline=None)
@given(lengths=st.lists(st.integers(1, 9), min_size=1, max_size=3),
       config=st.sampled_from(EMFORMER_CONFIGS), failure=st.sampled_from(FAILURES))
def test_emformer_traces_any_padding_and_cleans_up(lengths: list[int], config: dict,
                                                  failure: str | None) -> None:
    model = tiny_emformer(**config)
    features, valid = padded_features(lengths, extra_frames=config.get("right_context", 0))
    traced = round_trip(model, lambda: model(features, valid)[0], model.emformer_layers[0],
                        failure, capture={"input", "output", "attention"})
    if failure == "in_forward":
        return
    record = traced["encoder.0.self_attn"]
    frames = max(lengths)
    assert record.attention.shape == (len(lengths), HEADS, frames, frames)
    assert record.output.shape == (len(lengths), frames, 8)
    assert torch.equal(record.input, traced["encoder.0"].input)
    assert torch.allclose(traced["encoder.0.ffn"].input, record.input + record.output, atol=1e-6)
    assert torch.equal(record.lengths, valid) and record.attentions[0].lengths_known
    assert "_gen_attention_probs" not in vars(model.emformer_layers[0].attention)


def test_emformer_streaming_infer_is_not_captured_as_attention() -> None:
    model = tiny_emformer(right_context=1, memory=2)
    chunk = torch.randn(2, 5, 8)
    lengths = torch.tensor([5, 5])
    with torch.no_grad():
        expected = model.infer(chunk, lengths, None)[0]
        with attnprobe.trace(model) as traced:
            output = model.infer(chunk, lengths, None)[0]
    assert torch.equal(output, expected)
    assert not traced["encoder.0.self_attn"].attentions
    assert not traced["encoder.0"].outputs


# ----------------------------------------------------------------------------- wav2vec2 / HuBERT
@pytest.mark.parametrize("style", ["hubert-base", "wav2vec2-large"])
def test_wav2vec2_sites_frontend_and_lengths(style: str) -> None:
    model = tiny_wav2vec2(style=style)
    waveforms, samples = padded_waveforms([400, 250, 120])
    traced = round_trip(model, lambda: model(waveforms, samples)[0],
                        model.encoder.transformer.layers[0].attention)
    blocks = [(f"encoder.{layer}{suffix}", kind) for layer in range(2)
              for suffix, kind in (("", "block"), (".self_attn", "self_attn"), (".ffn", "ffn"))]
    assert [(site.name, site.kind) for site in traced.sites] == [
        ("encoder.frontend", "frontend"), *blocks]
    frames = model(waveforms, samples)[1]
    assert torch.equal(traced["encoder.frontend"].output, traced["encoder.0"].input)
    assert traced["encoder.frontend"].input.shape[-1] == 8
    for record in traced:
        assert torch.equal(record.lengths, frames)


@settings(max_examples=10, deadline=None)
@given(samples=st.lists(st.integers(40, 300), min_size=1, max_size=3),
       style=st.sampled_from(["hubert-base", "wav2vec2-large"]),
       failure=st.sampled_from(FAILURES))
def test_wav2vec2_recomputed_attention_reproduces_the_module(samples: list[int], style: str,
                                                            failure: str | None) -> None:
    model = tiny_wav2vec2(style=style)
    waveforms, valid = padded_waveforms(samples)
    layer = model.encoder.transformer.layers[1]
    traced = round_trip(model, lambda: model(waveforms, valid)[0], layer.attention, failure,
                        capture={"input", "output", "attention"})
    if failure == "in_forward":
        return
    record = traced["encoder.1.self_attn"]
    assert record.attentions[0].lengths_known
    assert_rows_are_distributions(record.attention, record.lengths, record.key_lengths)
    attention = layer.attention
    received = layer.layer_norm(record.input) if layer.layer_norm_first else record.input
    values = attention.v_proj(received)
    assert torch.allclose(reconstruct(record.attention, values, attention.out_proj),
                          record.output, atol=1e-5)
    # Each branch reads the residual stream and adds its output to it.
    assert torch.equal(record.input, traced["encoder.1"].input)
    stream = record.input + record.output
    if not layer.layer_norm_first:
        stream = layer.layer_norm(stream)
    feed_forward = traced["encoder.1.ffn"]
    assert torch.allclose(feed_forward.input, stream, atol=1e-5)
    stream = stream + feed_forward.output
    if not layer.layer_norm_first:
        stream = layer.final_layer_norm(stream)
    assert torch.allclose(stream, traced["encoder.1"].output, atol=1e-5)


def one_model_of_each_family() -> list[tuple[nn.Module, Callable[[], object]]]:
    """A tiny Conformer, Emformer and HuBERT, each with a call on a padded batch."""
    conformer, emformer, hubert = (tiny_conformer(), tiny_emformer(right_context=1, memory=2),
                                   tiny_wav2vec2())
    return [(conformer, lambda: conformer(*padded_features([5, 3]))),
            (emformer, lambda: emformer(*padded_features([6, 2], extra_frames=1))),
            (hubert, lambda: hubert(*padded_waveforms([300, 200])))]


def test_nested_traces_both_receive_attention() -> None:
    for model, call in one_model_of_each_family():
        before = snapshot(model)
        with torch.no_grad(), attnprobe.trace(model) as outer:
            with attnprobe.trace(model, kind="self_attn") as inner:
                call()
        assert_restored(model, before)
        for name in ("encoder.0.self_attn", "encoder.1.self_attn"):
            assert torch.equal(inner[name].attention, outer[name].attention)


def test_training_mode_is_kept() -> None:
    for model, call in one_model_of_each_family():
        model.train()
        with attnprobe.trace(model) as traced:
            call()
        assert all(module.training for module in model.modules())
        assert traced["encoder.1.self_attn"].attention.shape[1] == HEADS


def test_wav2vec2_adapter_declines_wavlm_whose_attention_it_cannot_recompute() -> None:
    from torchaudio.models import wavlm_model

    wavlm = wavlm_model("group_norm", [(8, 10, 5)], False, 16, 0.0, 4, 2, 1, 2, 8, 16, 0.0, 32,
                        0.0, 0.0, False, 0.0, None)
    adapter = attnprobe.adapters.torchaudio_wav2vec2.TorchaudioWav2Vec2Sites
    assert not adapter.matches(wavlm)
    assert adapter.matches(tiny_wav2vec2())


def test_adapter_modules_do_not_import_torchaudio() -> None:
    code = ("import sys, attnprobe.adapters.torchaudio_conformer, "
            "attnprobe.adapters.torchaudio_emformer, attnprobe.adapters.torchaudio_wav2vec2, "
            "attnprobe.adapters.generic; print('torchaudio' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"
