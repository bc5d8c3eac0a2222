"""Examples and batches for the reproduction runs, built from one split of the espeak-ng corpus.

An example is one utterance, or ``concatenate`` utterances joined end to end (features one after
the other, a space label between the transcripts, word times shifted by the frames before them),
which gives the "longer sequences" condition without a second corpus. Labels hold real characters
only (no end-of-sentence): :class:`attnprobe.models.ConformerAED` appends that itself.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from attnprobe.batch import SpeechBatch
from attnprobe.features import SHIFT_S
from attnprobe.labels import CHARACTER_LABELS
from benchmarks.corpus.training_set import TrainingSplit, load_training_set

SPACE_LABEL = CHARACTER_LABELS.encode(" ")[0]
POOL_BATCHES = 50
"""Examples are sorted by length within pools of this many batches, so batches carry little
padding while their order stays random."""


@dataclass(frozen=True)
class Example:
    """Features ``(frames, 80)`` (normalised), labels ``(labels,)`` int64, and reference words
    ``(word, start_s, end_s)`` in seconds from the first frame."""

    features: torch.Tensor
    labels: torch.Tensor
    text: str
    words: tuple[tuple[str, float, float], ...]


def load_split(corpus_path: str, split: str) -> TrainingSplit:
    """One split, normalised with the training statistics (labels hold no end-of-sentence)."""
    return load_training_set(corpus_path, split, normalise=True)


def join(split: TrainingSplit, indices: Sequence[int]) -> Example:
    """Utterances ``indices`` of ``split`` as one example, in that order."""
    features, labels, words, texts = [], [], [], []
    offset_s = 0.0
    for position, index in enumerate(indices):
        utterance_features, utterance_labels, utterance_words = split[index]
        if position:
            labels.append(torch.tensor([SPACE_LABEL]))
        features.append(utterance_features)
        labels.append(utterance_labels)
        texts.append(split.utterances[index]["text"])
        words += [(word.word, word.start + offset_s, word.end + offset_s) for word in utterance_words]
        offset_s += len(utterance_features) * SHIFT_S
    return Example(torch.cat(features), torch.cat(labels), " ".join(texts), tuple(words))


def collate(examples: Sequence[Example]) -> SpeechBatch:
    """Pad examples into a :class:`attnprobe.SpeechBatch`; padding frames and labels are 0."""
    return SpeechBatch(
        torch.nn.utils.rnn.pad_sequence([item.features for item in examples], batch_first=True),
        torch.tensor([len(item.features) for item in examples]),
        torch.nn.utils.rnn.pad_sequence([item.labels for item in examples], batch_first=True,
                                        padding_value=CHARACTER_LABELS.blank_index),
        torch.tensor([len(item.labels) for item in examples]),
    )


def fixed_examples(split: TrainingSplit, count: int, concatenate: int = 1) -> list[Example]:
    """The first ``count`` examples of ``split`` in corpus order (dev sets and probe batches):
    example ``i`` joins utterances ``i * concatenate ... i * concatenate + concatenate - 1``."""
    available = len(split) // concatenate
    if count > available:
        raise ValueError(f"asked for {count} examples of {concatenate} utterances, but the split has "
                         f"only {len(split)} utterances ({available} examples); ask for fewer")
    return [join(split, range(i * concatenate, (i + 1) * concatenate)) for i in range(count)]


def epoch_batches(frames: Sequence[int], batch_size: int, concatenate: int, seed: int, epoch: int
                  ) -> list[list[list[int]]]:
    """One epoch as batches of examples, each example a list of utterance indices.

    Shuffle the utterances, group consecutive ones into examples of ``concatenate`` (a remainder
    of fewer is left out), sort by total frames within pools of :data:`POOL_BATCHES` batches, cut
    into batches of ``batch_size`` examples, shuffle the batches. Same arguments, same epoch.

    Args:
        frames: frames of every utterance of the split.
    """
    rng = random.Random(f"{seed}/epoch{epoch}")
    order = list(range(len(frames)))
    rng.shuffle(order)
    groups = [order[start : start + concatenate]
              for start in range(0, len(order) - concatenate + 1, concatenate)]
    batches: list[list[list[int]]] = []
    pool_size = batch_size * POOL_BATCHES
    for start in range(0, len(groups), pool_size):
        pool = sorted(groups[start : start + pool_size],
                      key=lambda group: sum(frames[index] for index in group))
        batches += [pool[i : i + batch_size] for i in range(0, len(pool), batch_size)]
    rng.shuffle(batches)
    return batches


def training_batches(split: TrainingSplit, batch_size: int, concatenate: int, seed: int
                     ) -> Iterator[SpeechBatch]:
    """Batches forever, epoch after epoch (:func:`epoch_batches`); the same ``seed`` gives the
    same sequence of batches."""
    frames = [utterance["frames"] for utterance in split.utterances]
    epoch = 0
    while True:
        for batch_groups in epoch_batches(frames, batch_size, concatenate, seed, epoch):
            yield collate([join(split, group) for group in batch_groups])
        epoch += 1
