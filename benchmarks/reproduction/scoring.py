"""Character error rate of greedy decoding, the dev metric of every reproduction run."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from attnprobe.labels import CHARACTER_LABELS
from attnprobe.models import ConformerAED

from .data import Example, collate

DECODE_BATCH = 50


def edit_distance(hypothesis: Sequence[object], reference: Sequence[object]) -> int:
    """Levenshtein distance: fewest insertions, deletions and substitutions between two sequences."""
    previous = list(range(len(reference) + 1))
    for row, item in enumerate(hypothesis, start=1):
        current = [row]
        for column, target in enumerate(reference, start=1):
            current.append(min(previous[column] + 1, current[column - 1] + 1,
                               previous[column - 1] + (item != target)))
        previous = current
    return previous[-1]


def greedy_transcripts(model: ConformerAED, examples: Sequence[Example]) -> list[str]:
    """Greedy transcripts of ``examples`` in eval mode; the model's train/eval flags are restored."""
    flags = {module: module.training for module in model.modules()}
    device = next(model.parameters()).device
    model.eval()
    texts: list[str] = []
    try:
        for start in range(0, len(examples), DECODE_BATCH):
            batch = collate(examples[start : start + DECODE_BATCH])
            with torch.no_grad():
                hypotheses = model.greedy_decode(batch.inputs.to(device),
                                                 batch.input_lengths.to(device),
                                                 max_labels=int(batch.label_lengths.max()) * 2)
            texts += [CHARACTER_LABELS.decode(labels) for labels in hypotheses]
    finally:
        for module, training in flags.items():
            module.training = training
    return texts


def character_error_rate(model: ConformerAED, examples: Sequence[Example]) -> float:
    """Edit distance over reference characters, pooled over ``examples`` (1.0 = every character wrong
    or missing; insertions can push it above 1)."""
    hypotheses = greedy_transcripts(model, examples)
    errors = sum(edit_distance(hypothesis, example.text) for hypothesis, example in zip(hypotheses, examples))
    return errors / max(1, sum(len(example.text) for example in examples))
