"""Contracts of attnprobe's Conformer AED that the hook layer and the probes rely on."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from attnprobe.lengths import valid_mask
from attnprobe.models import END_OF_SENTENCE_INDEX, ConformerAED, ConformerAEDConfig

from .conformer_inputs import (
    VOCAB,
    padded_features,
    padded_labels,
    single_thread,  # noqa: F401  (autouse: importing it applies it here)
    tiny_model,
)


@pytest.fixture(scope="module")
def paper_model() -> ConformerAED:
    torch.manual_seed(0)
    return ConformerAED(ConformerAEDConfig()).eval()


def test_paper_config_has_the_paper_size(paper_model: ConformerAED) -> None:
    config = paper_model.config
    assert (config.d_model, config.heads, config.ff_dim) == (512, 8, 2048)
    assert (config.blocks, config.conv_kernel) == (12, 32)
    assert config.time_downsampling == 6 and config.rel_pos_clip == 16
    block_parameters = sum(parameter.numel() for parameter in paper_model.encoder.blocks[0].parameters())
    # Two 512x2048 feed-forwards (4.2M), four 512x512 attention projections (1.05M), conv module (0.8M).
    assert 5.9e6 < block_parameters < 6.2e6
    total = sum(parameter.numel() for parameter in paper_model.parameters())
    assert 80e6 < total < 95e6


def test_paper_model_shapes_on_a_short_input(paper_model: ConformerAED) -> None:
    features, lengths = padded_features([42, 36])
    labels, label_lengths = padded_labels([3, 2])
    with torch.no_grad():
        output = paper_model(features, lengths, labels, label_lengths)
    assert output.encoder_out.shape == (2, 7, 512)
    assert output.encoder_lengths.tolist() == [7, 6]
    assert output.logits is not None and output.logits.shape == (2, 4, 1000)
    assert output.cross_attention is not None and output.cross_attention.shape == (2, 4, 7)
    assert output.aux_ctc_logits == {}


def test_tiny_model_shapes_with_aux_ctc() -> None:
    model = tiny_model(aux_ctc_blocks=(0, 1))
    features, lengths = padded_features([60, 50])
    output = model(features, lengths)
    assert output.logits is None and output.cross_attention is None
    assert output.encoder_out.shape == (2, 10, 96)
    assert set(output.aux_ctc_logits) == {0, 1}
    assert all(logits.shape == (2, 10, VOCAB) for logits in output.aux_ctc_logits.values())
    assert torch.equal(model.encoder.output_lengths(lengths), output.encoder_lengths)
    assert list(model.ctc_heads) == ["0", "1"]


@pytest.fixture(scope="module")
def padding_model() -> ConformerAED:
    return tiny_model(seed=1)


@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_padded_batch_equals_each_sequence_alone(padding_model: ConformerAED, data: st.DataObject) -> None:
    lengths = data.draw(st.lists(st.integers(12, 70), min_size=1, max_size=3), label="lengths")
    counts = data.draw(
        st.lists(st.integers(1, 5), min_size=len(lengths), max_size=len(lengths)), label="labels"
    )
    seed = data.draw(st.integers(0, 2**16), label="seed")
    model = padding_model
    features, lengths_tensor = padded_features(lengths, seed=seed)
    labels, counts_tensor = padded_labels(counts, seed=seed)
    with torch.no_grad():
        batch_out, batch_lengths = model.encoder(features, lengths_tensor)
        batch_log_probs = model.label_log_probs(features, lengths_tensor, labels, counts_tensor)
        for index, (length, count) in enumerate(zip(lengths, counts, strict=True)):
            alone_features = features[index : index + 1, :length]
            alone_labels = labels[index : index + 1, :count]
            alone_out, alone_lengths = model.encoder(alone_features, lengths_tensor[index : index + 1])
            frames = int(alone_lengths)
            assert int(batch_lengths[index]) == frames
            torch.testing.assert_close(batch_out[index, :frames], alone_out[0], atol=1e-5, rtol=1e-5)
            assert bool((batch_out[index, frames:] == 0).all())
            alone_log_probs = model.label_log_probs(
                alone_features,
                lengths_tensor[index : index + 1],
                alone_labels,
                counts_tensor[index : index + 1],
            )
            torch.testing.assert_close(
                batch_log_probs[index, :count], alone_log_probs[0], atol=1e-5, rtol=1e-5
            )


def capture_outputs(module: nn.Module, store: dict[str, object], name: str) -> None:
    module.register_forward_hook(lambda _module, _args, output: store.__setitem__(name, output))


def test_self_attention_tap_probabilities_match_the_fast_path() -> None:
    model = tiny_model()
    attention = model.encoder.blocks[1].self_attn.attention
    captured: dict[str, object] = {}
    capture_outputs(attention.attention_tap, captured, "probabilities")
    capture_outputs(attention.value, captured, "values")
    attention.output.register_forward_pre_hook(
        lambda _module, args: captured.__setitem__("attended", args[0])
    )
    features, lengths = padded_features([66, 40, 54])
    with torch.no_grad():
        untraced, _ = model.encoder(features, lengths)
        assert "probabilities" not in captured
        attention.attention_tap.active = 1
        traced, encoder_lengths = model.encoder(features, lengths)
    assert torch.equal(untraced, traced)

    probabilities = captured["probabilities"]
    assert isinstance(probabilities, torch.Tensor)
    batch, heads, queries, keys = probabilities.shape
    assert (batch, heads, queries, keys) == (3, 4, 11, 11)
    valid = valid_mask(encoder_lengths, keys)
    assert bool((probabilities.masked_select(~valid[:, None, None, :]) == 0).all())
    row_sums = probabilities.sum(dim=-1)
    torch.testing.assert_close(row_sums, torch.ones_like(row_sums))

    values = captured["values"]
    assert isinstance(values, torch.Tensor)
    values_per_head = values.view(batch, keys, heads, -1).transpose(1, 2)
    rebuilt = (probabilities @ values_per_head).transpose(1, 2).reshape(batch, queries, -1)
    torch.testing.assert_close(rebuilt, captured["attended"], atol=1e-5, rtol=1e-5)


def test_branch_outputs_sum_to_the_residual_stream() -> None:
    model = tiny_model()
    features, lengths = padded_features([60, 48])
    for block in model.encoder.blocks:
        captured: dict[str, object] = {}
        block.register_forward_pre_hook(
            lambda _module, args, store=captured: store.__setitem__("input", args[0])
        )
        capture_outputs(block, captured, "output")
        branches = ("ffn1", "self_attn", "conv", "ffn2")
        for name in branches:
            capture_outputs(getattr(block, name), captured, name)
        with torch.no_grad():
            model.encoder(features, lengths)
            stream = captured["input"]
            for name in branches:
                stream = stream + captured[name]
            rebuilt = block.final_norm(stream)
        torch.testing.assert_close(rebuilt, captured["output"], atol=1e-6, rtol=1e-6)
        assert block.ffn1.scale == 0.5 and block.ffn2.scale == 0.5


def test_feed_forward_scale_is_inside_the_branch() -> None:
    feed_forward = tiny_model().encoder.blocks[0].ffn1
    x = torch.randn(2, 5, 96)
    half = feed_forward(x)
    feed_forward.scale = 1.0
    torch.testing.assert_close(feed_forward(x), 2 * half)


def test_disabled_self_attention_mixes_nothing_across_time() -> None:
    branch = tiny_model().encoder.blocks[0].self_attn
    x = torch.randn(1, 9, 96)
    lengths = torch.tensor([9])
    permutation = torch.randperm(9, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        mixing = branch(x, lengths)
        assert not torch.allclose(branch(x[:, permutation], lengths), mixing[:, permutation], atol=1e-4)
        branch.attention.disabled = True
        separate = branch(x, lengths)
        torch.testing.assert_close(branch(x[:, permutation], lengths), separate[:, permutation])
        attention = branch.attention
        torch.testing.assert_close(separate, attention.output(attention.value(branch.norm(x))))


def test_cross_attention_taps_get_all_steps_once_per_forward() -> None:
    model = tiny_model()
    cross_attention = model.decoder.cross_attn
    calls: list[tuple[str, torch.Tensor]] = []
    cross_attention.attention_tap.register_forward_hook(
        lambda _m, _a, output: calls.append(("weights", output))
    )
    cross_attention.context_tap.register_forward_hook(
        lambda _m, _a, output: calls.append(("contexts", output))
    )
    features, lengths = padded_features([60, 42])
    labels, label_lengths = padded_labels([4, 2])
    with torch.no_grad():
        model(features, lengths, labels, label_lengths)
        assert calls == []
        cross_attention.attention_tap.active = 1
        cross_attention.context_tap.active = 1
        output = model(features, lengths, labels, label_lengths)
    assert [name for name, _ in calls] == ["weights", "contexts"]
    weights, contexts = calls[0][1], calls[1][1]
    assert output.cross_attention is not None
    assert weights.shape == (2, 1, 5, 10) and torch.equal(weights[:, 0], output.cross_attention)
    torch.testing.assert_close(contexts, output.cross_attention @ output.encoder_out)

    calls.clear()
    hypotheses = model.greedy_decode(features, lengths, max_labels=3)
    assert [name for name, _ in calls] == ["weights", "contexts"]
    steps = calls[0][1].shape[2]
    assert calls[0][1].shape == (2, 1, steps, 10) and steps <= 4
    assert all(len(hypothesis) <= 3 for hypothesis in hypotheses)


def test_greedy_decode_returns_label_lists() -> None:
    model = tiny_model()
    features, lengths = padded_features([60, 36])
    hypotheses = model.greedy_decode(features, lengths)
    assert isinstance(hypotheses, list) and len(hypotheses) == 2
    for hypothesis in hypotheses:
        assert isinstance(hypothesis, list) and len(hypothesis) <= 10
        assert all(isinstance(label, int) and label != END_OF_SENTENCE_INDEX for label in hypothesis)
    assert model.greedy_decode(features, lengths, max_labels=0) == [[], []]


def test_label_log_probs_are_the_logits_at_the_labels_and_differentiable() -> None:
    model = tiny_model()
    features, lengths = padded_features([60, 45])
    labels, label_lengths = padded_labels([4, 2])
    features.requires_grad_(True)
    log_probs = model.label_log_probs(features, lengths, labels, label_lengths)
    logits = model(features, lengths, labels, label_lengths).logits
    assert logits is not None
    expected = logits[:, :4].log_softmax(-1).gather(-1, labels[..., None]).squeeze(-1)
    valid = valid_mask(label_lengths, 4)
    torch.testing.assert_close(log_probs[valid], expected[valid])
    assert bool((log_probs[~valid] == 0).all()) and bool((log_probs[valid] < 0).all())

    (gradient,) = torch.autograd.grad(log_probs[1, 1], features)
    assert bool(gradient[1, :45].abs().sum() > 0)
    assert bool((gradient[1, 45:] == 0).all()) and bool((gradient[0] == 0).all())


def test_loss_decreases_when_overfitting_one_batch() -> None:
    torch.manual_seed(0)
    model = ConformerAED(ConformerAEDConfig.tiny(vocab_size=VOCAB, aux_ctc_blocks=(1, 3)))
    features, lengths = padded_features([90, 72])
    labels, label_lengths = padded_labels([5, 4])
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        loss, parts = model.loss(features, lengths, labels, label_lengths)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert set(parts) == {"cross_entropy", "ctc_block_1", "ctc_block_3"}
    torch.testing.assert_close(sum(parts.values()), loss.detach())
    assert losses[-1] < 0.5 * losses[0], losses
    # Only a model that learned to emit end-of-sentence stops after the reference labels.
    model.eval()
    assert model.greedy_decode(features, lengths) == [labels[0, :5].tolist(), labels[1, :4].tolist()]


def test_config_round_trips_through_json_and_rejects_nonsense() -> None:
    config = ConformerAEDConfig.tiny(vocab_size=50, aux_ctc_blocks=(1, 3))
    assert ConformerAEDConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match=r"\(3, 7\)"):
        ConformerAEDConfig(aux_ctc_blocks=(12,))
    with pytest.raises(ValueError, match="divisible"):
        ConformerAEDConfig(d_model=100, heads=8)
    with pytest.raises(ValueError, match="unknown"):
        ConformerAEDConfig.from_dict({"d_modle": 512})


def test_inputs_the_model_cannot_handle_fail_with_the_fix() -> None:
    model = tiny_model(aux_ctc_blocks=(1,))
    with pytest.raises(ValueError, match="shorter than 6 frames"):
        model(*padded_features([30, 5]))
    features, lengths = padded_features([30, 24])
    with pytest.raises(ValueError, match="shift your label ids"):
        model(features, lengths, torch.tensor([[1, 2], [3, 4]]), torch.tensor([2, 2]))
    with pytest.raises(ValueError, match="labels longer than frames"):
        model.loss(features, lengths, torch.full((2, 6), 5), torch.tensor([6, 2]))
