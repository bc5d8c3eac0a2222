"""The hook layer's invariants on attnprobe's own Conformer AED (batch > 1, padding)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import attnprobe
from attnprobe.models import ConformerAED, ConformerAEDConfig, ConformerEncoder
from tests.toy_model import all_hooks

CONFIG = ConformerAEDConfig.tiny(vocab_size=20, blocks=3, d_model=32, heads=4, ff_dim=64,
                                 lstm_dim=32, attention_dim=32, readout_dim=32, embed_dim=16,
                                 frontend_channels=(4, 8), n_mels=16)


def make_batch(feature_lengths: list[int], label_lengths: list[int], seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(len(feature_lengths), max(feature_lengths), CONFIG.n_mels,
                           generator=generator)
    labels = torch.randint(2, CONFIG.vocab_size, (len(label_lengths), max(label_lengths)),
                           generator=generator)
    return features, torch.tensor(feature_lengths), labels, torch.tensor(label_lengths)


@pytest.fixture(scope="module")
def model() -> ConformerAED:
    torch.manual_seed(0)
    return ConformerAED(CONFIG).eval()


def expected_site_names(blocks: int, decoder: bool = True) -> list[str]:
    names = ["encoder.frontend"]
    for layer in range(blocks):
        names += [f"encoder.{layer}"] + [f"encoder.{layer}.{branch}"
                                        for branch in ("ffn1", "self_attn", "conv", "ffn2")]
    return names + (["decoder.0.cross_attn"] if decoder else [])


def test_every_site_is_found_with_its_tensors(model: ConformerAED) -> None:
    features, feature_lengths, labels, label_lengths = make_batch([60, 42], [5, 3])
    with attnprobe.trace(model) as t:
        out = model(features, feature_lengths, labels, label_lengths)
    assert [site.name for site in t.sites] == expected_site_names(CONFIG.blocks)
    assert t["encoder.frontend"].input.shape == (2, 60, CONFIG.n_mels)
    assert t["encoder.frontend"].input_lengths.tolist() == [60, 42]
    assert t["encoder.frontend"].lengths.tolist() == out.encoder_lengths.tolist()
    self_attention = t["encoder.2.self_attn"]
    frames = out.encoder_out.shape[1]
    assert self_attention.attention.shape == (2, CONFIG.heads, frames, frames)
    cross = t["decoder.0.cross_attn"]
    assert cross.attention.shape == (2, 1, 6, frames)
    assert cross.lengths.tolist() == [6, 4]
    assert torch.allclose(cross.attention[:, 0], out.cross_attention)
    for index, valid in enumerate(out.encoder_lengths.tolist()):
        assert torch.equal(t["encoder.2"].output[index, :valid], out.encoder_out[index, :valid])


def test_branch_records_rebuild_the_residual_stream(model: ConformerAED) -> None:
    features, feature_lengths, labels, label_lengths = make_batch([48, 30], [4, 2], seed=3)
    with attnprobe.trace(model, "encoder.1*") as t:
        model(features, feature_lengths, labels, label_lengths)
    block = model.encoder.blocks[1]
    residual = t["encoder.1"].input
    for branch in ("ffn1", "self_attn", "conv", "ffn2"):
        residual = residual + t[f"encoder.1.{branch}"].output
    assert torch.allclose(block.final_norm(residual), t["encoder.1"].output, atol=1e-5)


@settings(max_examples=12, deadline=None)
@given(feature_lengths=st.lists(st.integers(12, 60), min_size=1, max_size=3),
       fail=st.booleans(), train=st.booleans(), data=st.data())
def test_tracing_changes_nothing_and_restores_everything(
        model: ConformerAED, feature_lengths: list[int], fail: bool, train: bool,
        data: st.DataObject) -> None:
    label_lengths = [data.draw(st.integers(1, 4)) for _ in feature_lengths]
    batch = make_batch(feature_lengths, label_lengths, seed=len(feature_lengths))
    model.train(train)
    hooks_before = all_hooks(model)
    state_before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(1)
    expected = model(*batch)
    traced = None
    # Seeded before entering: in training mode the same dropout masks are drawn only if entering
    # the trace consumes no randomness.
    torch.manual_seed(1)
    try:
        with attnprobe.trace(model) as t:
            traced = model(*batch)
            if fail:
                raise RuntimeError("injected")
    except RuntimeError as error:
        assert fail and str(error) == "injected"
    assert traced is not None
    assert (traced.logits - expected.logits).abs().max() <= 1e-5
    assert (traced.encoder_out - expected.encoder_out).abs().max() <= 1e-5
    assert model.training == train
    assert all_hooks(model) == hooks_before
    taps = [m for m in model.modules() if isinstance(m, attnprobe.taps.Tap)]
    assert taps and all(tap.active == 0 for tap in taps)
    state_after = model.state_dict()
    # BatchNorm running statistics move in training mode whether traced or not.
    assert all(torch.equal(v, state_before[k]) for k, v in state_after.items()
               if train is False or "running" not in k and "num_batches" not in k)
    assert len(t["encoder.0.self_attn"].attentions) == 1
    model.eval()


@settings(max_examples=10, deadline=None)
@given(feature_lengths=st.lists(st.integers(12, 50), min_size=2, max_size=3))
def test_padded_records_equal_unpadded_records(model: ConformerAED,
                                               feature_lengths: list[int]) -> None:
    label_lengths = [2] * len(feature_lengths)
    features, lengths, labels, label_lengths_tensor = make_batch(feature_lengths, label_lengths)
    sites = ["encoder.1", "encoder.1.self_attn", "encoder.2.conv"]
    with attnprobe.trace(model, sites) as padded:
        model(features, lengths, labels, label_lengths_tensor)
    for index, length in enumerate(feature_lengths):
        with attnprobe.trace(model, sites) as alone:
            model(features[index: index + 1, :length], lengths[index: index + 1],
                  labels[index: index + 1], label_lengths_tensor[index: index + 1])
        frames = int(padded["encoder.1"].lengths[index])
        assert frames == alone["encoder.1"].output.shape[1]
        for name in ("encoder.1", "encoder.2.conv"):
            assert torch.allclose(padded[name].output[index, :frames],
                                  alone[name].output[0], atol=1e-5)
        assert torch.allclose(padded["encoder.1.self_attn"].attention[index, :, :frames, :frames],
                              alone["encoder.1.self_attn"].attention[0], atol=1e-5)


def test_bare_encoder_is_traced_too() -> None:
    torch.manual_seed(0)
    encoder = ConformerEncoder(CONFIG).eval()
    features, lengths, _, _ = make_batch([40, 25], [1, 1])
    with attnprobe.trace(encoder) as t:
        out, out_lengths = encoder(features, lengths)
    assert [site.name for site in t.sites] == expected_site_names(CONFIG.blocks, decoder=False)
    assert t["encoder.0.self_attn"].lengths.tolist() == out_lengths.tolist()


def test_greedy_decoding_reports_cross_attention_once(model: ConformerAED) -> None:
    features, lengths, _, _ = make_batch([40, 30], [1, 1])
    with attnprobe.trace(model, kind="cross_attn") as t:
        hypotheses = model.greedy_decode(features, lengths, max_labels=4)
    record = t["decoder.0.cross_attn"]
    assert len(record.attentions) == 1
    assert record.attention.shape[:2] == (2, 1)
    assert len(hypotheses) == 2
