"""Small attnprobe Conformer AED models and padded inputs shared by the model tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from attnprobe.lengths import valid_mask
from attnprobe.models import FIRST_REAL_LABEL, ConformerAED, ConformerAEDConfig

VOCAB = 24


def tiny_model(seed: int = 0, **overrides: object) -> ConformerAED:
    """A small model in eval mode; an even conv kernel and absolute positions cover those paths."""
    torch.manual_seed(seed)
    options: dict[str, object] = dict(vocab_size=VOCAB, blocks=2, conv_kernel=6, abs_pos=True)
    options.update(overrides)
    return ConformerAED(ConformerAEDConfig.tiny(**options)).eval()


def padded_features(lengths: list[int], n_mels: int = 80, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random features whose padding holds large garbage, so any leak from padding shows."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(len(lengths), max(lengths), n_mels, generator=generator)
    lengths_tensor = torch.tensor(lengths)
    padding = ~valid_mask(lengths_tensor, max(lengths))
    garbage = 100.0 * torch.randn(features.shape, generator=generator)
    return torch.where(padding[..., None], garbage, features), lengths_tensor


def padded_labels(counts: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(FIRST_REAL_LABEL, VOCAB, (len(counts), max(counts)), generator=generator)
    counts_tensor = torch.tensor(counts)
    return labels.masked_fill(~valid_mask(counts_tensor, max(counts)), 0), counts_tensor


@pytest.fixture(scope="module", autouse=True)
def single_thread() -> Iterator[None]:
    """The shapes here are tiny: a second OpenMP thread only adds contention (5x slower under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
