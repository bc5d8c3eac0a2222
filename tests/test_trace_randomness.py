"""A trace consumes no randomness, for every family: the random generators (torch, numpy,
Python) are in the same state when the ``with`` block is entered, after the traced forward pass
(as after the same pass untraced, dropout included) and after the block is left."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import attnprobe

Case = tuple[Callable[[], nn.Module], Callable[[nn.Module], Any]]


def generator_states() -> tuple[torch.Tensor, Any, Any]:
    return torch.get_rng_state(), np.random.get_state(), random.getstate()


def assert_same_states(first: tuple, second: tuple, when: str) -> None:
    assert torch.equal(first[0], second[0]), f"torch's generator moved {when}"
    assert all(np.array_equal(a, b) for a, b in zip(first[1][1:3], second[1][1:3])), \
        f"numpy's generator moved {when}"
    assert first[2] == second[2], f"Python's generator moved {when}"


def conformer_case() -> Case:
    from attnprobe.models import ConformerAED, ConformerAEDConfig

    def build() -> nn.Module:
        torch.manual_seed(0)
        # Dropout on: the model itself draws random numbers in training mode.
        return ConformerAED(ConformerAEDConfig.tiny(vocab_size=12, blocks=2, dropout=0.1))

    features, lengths = torch.randn(2, 40, 80), torch.tensor([40, 31])
    labels, label_lengths = torch.randint(2, 12, (2, 4)), torch.tensor([4, 3])
    return build, lambda model: model(features, lengths, labels, label_lengths).logits


def hugging_face_case(family: str, implementation: str) -> Case:
    from hf_models import FAMILIES, main_output

    spec = FAMILIES[family]
    low, high = spec.length_range
    batch = spec.batch([high, low], [3, 2], 2)
    return (lambda: spec.build(implementation),
            lambda model: main_output(model(**batch.inputs)))


def torchaudio_case(name: str) -> Case:
    import torchaudio_models as models

    if name == "wav2vec2":
        waveforms, lengths = models.padded_waveforms([200, 150])
        return models.tiny_wav2vec2, lambda model: model(waveforms, lengths)[0]
    build = models.tiny_conformer if name == "conformer" else models.tiny_emformer
    features, lengths = models.padded_features([12, 9])
    return build, lambda model: model(features, lengths)[0]


def generic_case() -> Case:
    def build() -> nn.Module:
        torch.manual_seed(0)
        layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, batch_first=True)
        return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)

    inputs = torch.randn(2, 7, 8)
    return build, lambda model: model(inputs)


def cases() -> list[Any]:
    found = [pytest.param(conformer_case, id="attnprobe-conformer"),
             pytest.param(generic_case, id="generic-mha")]
    try:
        import transformers  # noqa: F401
        from hf_models import CASES
    except ImportError:
        CASES = []
    found += [pytest.param(lambda f=family, i=implementation: hugging_face_case(f, i),
                           id=f"hf-{family}-{implementation}") for family, implementation in CASES]
    try:
        import torchaudio  # noqa: F401
    except ImportError:
        return found
    return found + [pytest.param(lambda n=name: torchaudio_case(n), id=f"torchaudio-{name}")
                    for name in ("conformer", "emformer", "wav2vec2")]


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("make_case", cases())
def test_a_trace_draws_no_random_numbers(make_case: Callable[[], Case], train: bool) -> None:
    build, forward = make_case()
    model = build().train(train)
    torch.manual_seed(7), np.random.seed(7), random.seed(7)
    with torch.no_grad():
        untraced = forward(model)
    after_untraced = generator_states()
    torch.manual_seed(7), np.random.seed(7), random.seed(7)
    before = generator_states()
    with torch.no_grad(), attnprobe.trace(model):
        assert_same_states(generator_states(), before, "while the trace was entered")
        traced = forward(model)
        assert_same_states(generator_states(), after_untraced, "in the traced forward pass")
    assert_same_states(generator_states(), after_untraced, "while the trace was left")
    assert (traced - untraced).abs().max() <= 1e-5
