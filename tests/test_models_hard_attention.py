"""Hard cross-attention of attnprobe's Conformer AED: the centre frame (the paper's mitigation), the
first frame (the paper's explanation of the flip), the anti-diagonal (a reversal on purpose) and
the diagonal (a decoder that aligns without training, for the probes' tests)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnprobe.lengths import valid_mask
from attnprobe.models import ConformerAED, ConformerAEDConfig

from .conformer_inputs import (
    VOCAB,
    padded_features,
    padded_labels,
    single_thread,  # noqa: F401  (autouse: importing it applies it here)
    tiny_model,
)


def test_hard_centre_cross_attention_puts_all_weight_on_the_middle_frame() -> None:
    model = tiny_model()
    features, lengths = padded_features([70, 50, 25])
    labels, label_lengths = padded_labels([4, 3, 2])
    with torch.no_grad():
        soft = model(features, lengths, labels, label_lengths)
        model.decoder.cross_attn.hard_center_weight = 1.0
        hard = model(features, lengths, labels, label_lengths)
        model.decoder.cross_attn.hard_center_weight = 0.25
        blended = model(features, lengths, labels, label_lengths)
    assert soft.cross_attention is not None and hard.cross_attention is not None
    assert blended.cross_attention is not None
    frames = hard.cross_attention.shape[-1]
    centres = torch.nn.functional.one_hot(hard.encoder_lengths // 2, frames).float()
    assert hard.encoder_lengths.tolist() == [11, 8, 4]
    assert torch.equal(hard.cross_attention, centres[:, None, :].expand_as(hard.cross_attention))
    # The first step has no history, so its blend is exactly the blend of the two weight vectors.
    torch.testing.assert_close(
        blended.cross_attention[:, 0], 0.75 * soft.cross_attention[:, 0] + 0.25 * centres
    )
    padded = ~valid_mask(hard.encoder_lengths, frames)
    assert bool((blended.cross_attention.masked_select(padded[:, None, :]) == 0).all())


def test_set_training_step_switches_the_mitigations_at_the_configured_steps() -> None:
    model = ConformerAED(
        ConformerAEDConfig.tiny(
            vocab_size=VOCAB,
            blocks=2,
            self_attention_off_steps=3,
            hard_cross_attention_steps=2,
            cross_attention_blend_steps=4,
        )
    )
    expected = {
        0: (True, 1.0),
        2: (True, 1.0),
        3: (False, 0.75),
        5: (False, 0.25),
        6: (False, 0.0),
        100: (False, 0.0),
    }
    for step, (attention_off, hard_weight) in expected.items():
        model.set_training_step(step)
        assert [block.self_attn.attention.disabled for block in model.encoder.blocks] == [attention_off] * 2
        assert model.decoder.cross_attn.hard_center_weight == pytest.approx(hard_weight)
    plain = tiny_model()
    plain.set_training_step(0)
    assert not plain.encoder.blocks[0].self_attn.attention.disabled
    assert plain.decoder.cross_attn.hard_center_weight == 0.0


@settings(max_examples=10, deadline=None)
@given(lengths=st.lists(st.integers(36, 90), min_size=1, max_size=3), labels_seed=st.integers(0, 99),
       target=st.sampled_from(["reversed", "diagonal"]))
def test_the_diagonal_hard_targets_run_over_every_label_and_frame(
        lengths: list[int], labels_seed: int, target: str) -> None:
    """Reversed: first label position on the last encoder frame, the end symbol on the first, in
    between non-increasing and spread over each sequence's own labels and frames; diagonal: its
    mirror image."""
    model = tiny_model(hard_cross_attention_steps=5, hard_cross_attention_target=target).eval()
    model.set_training_step(0)
    features, feature_lengths = padded_features(lengths)
    generator = torch.Generator().manual_seed(labels_seed)
    label_lengths = torch.randint(2, 6, (len(lengths),), generator=generator)
    labels = torch.randint(2, VOCAB, (len(lengths), int(label_lengths.max())), generator=generator)
    output = model(features, feature_lengths, labels, label_lengths)
    for index, (frames, count) in enumerate(zip(output.encoder_lengths.tolist(),
                                                label_lengths.tolist())):
        weights = output.cross_attention[index, : count + 1, :frames]
        assert torch.allclose(weights.sum(-1), torch.ones(count + 1))
        peaks = weights.argmax(-1).tolist()
        assert weights.max(-1).values.eq(1.0).all()
        if target == "diagonal":
            peaks = [frames - 1 - peak for peak in peaks]
        assert peaks[0] == frames - 1 and peaks[-1] == 0
        assert peaks == sorted(peaks, reverse=True)
    model.set_training_step(10)
    assert model.decoder.cross_attn.hard_center_weight == 0.0
    with pytest.raises(ValueError, match="'centre', 'start', 'reversed', 'diagonal'"):
        ConformerAEDConfig.tiny(hard_cross_attention_target="middle")


@settings(max_examples=10, deadline=None)
@given(lengths=st.lists(st.integers(36, 90), min_size=1, max_size=3), blend=st.floats(0.0, 1.0))
def test_the_start_hard_target_puts_every_label_on_the_first_frame(lengths: list[int], blend: float
                                                                   ) -> None:
    model = tiny_model(hard_cross_attention_target="start").eval()
    features, feature_lengths = padded_features(lengths)
    labels, label_lengths = padded_labels([3] * len(lengths))
    with torch.no_grad():
        soft = model(features, feature_lengths, labels, label_lengths)
        model.set_training_step(0)  # no hard steps configured: soft
        assert model.decoder.cross_attn.hard_center_weight == 0.0
        model.decoder.cross_attn.hard_center_weight = 1.0
        hard = model(features, feature_lengths, labels, label_lengths)
        model.decoder.cross_attn.hard_center_weight = blend
        blended = model(features, feature_lengths, labels, label_lengths)
    assert hard.cross_attention is not None and soft.cross_attention is not None
    assert blended.cross_attention is not None
    assert bool((hard.cross_attention[..., 0] == 1.0).all())
    assert bool((hard.cross_attention[..., 1:] == 0.0).all())
    first = torch.zeros_like(soft.cross_attention[:, 0])
    first[:, 0] = 1.0
    torch.testing.assert_close(blended.cross_attention[:, 0],
                               (1 - blend) * soft.cross_attention[:, 0] + blend * first)
