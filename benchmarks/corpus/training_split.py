"""Reading a corpus built by :func:`benchmarks.corpus.training_set.build_training_set`: one split
in memory (:class:`TrainingSplit`) and its padded, length-bucketed batches (:class:`SpeechBatch`).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

import torch

from attnprobe.labels import CHARACTER_LABELS
from benchmarks.corpus.espeak import WordTiming

INDEX_NAME = "index.json"
SPLITS = ("train", "dev")


class SpeechBatch(NamedTuple):
    """A padded batch; padding frames and padding labels (blank) are 0."""

    features: torch.Tensor  # (batch, frames, 80) float32
    feature_lengths: torch.Tensor  # (batch,) int64
    labels: torch.Tensor  # (batch, labels) int64
    label_lengths: torch.Tensor  # (batch,) int64
    word_times: list[list[WordTiming]]  # per utterance, seconds from the start of its audio


@dataclass
class TrainingSplit:
    """One split of a built corpus, held in memory (features as float16).

    ``split[i]`` is ``(features (frames, 80) float32, labels (labels,) int64, word times)``;
    labels are real labels only (no end-of-sentence). ``mean`` and ``std`` (80,) standardise
    the features when given.
    """

    features: list[torch.Tensor]
    labels: list[torch.Tensor]
    utterances: list[dict]
    mean: torch.Tensor | None
    std: torch.Tensor | None

    def __len__(self) -> int:
        return len(self.utterances)

    @property
    def texts(self) -> list[str]:
        return [utterance["text"] for utterance in self.utterances]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, list[WordTiming]]:
        features = self.features[index].float()
        if self.mean is not None:
            features = (features - self.mean) / self.std
        labels = self.labels[index].long()
        words = [WordTiming(**word) for word in self.utterances[index]["words"]]
        return features, labels, words

    def batch(self, indices: list[int]) -> SpeechBatch:
        """The utterances ``indices`` padded into one batch."""
        items = [self[index] for index in indices]
        return SpeechBatch(
            features=torch.nn.utils.rnn.pad_sequence([f for f, _, _ in items], batch_first=True),
            feature_lengths=torch.tensor([len(f) for f, _, _ in items]),
            labels=torch.nn.utils.rnn.pad_sequence(
                [label for _, label, _ in items], batch_first=True,
                padding_value=CHARACTER_LABELS.blank_index,
            ),
            label_lengths=torch.tensor([len(label) for _, label, _ in items]),
            word_times=[words for _, _, words in items],
        )

    def batches(
        self, batch_size: int, seed: int = 0, shuffle: bool = True
    ) -> Iterator[SpeechBatch]:
        """Every utterance once, in batches of similar length, so little of a batch is padding.

        With ``shuffle``, utterances are shuffled (seeded), sorted by length within pools of 50
        batches, cut into batches, and the batches shuffled; without, sorted by length.
        """
        frames = [utterance["frames"] for utterance in self.utterances]
        order = list(range(len(self)))
        rng = random.Random(seed)
        pool_size = batch_size * 50 if shuffle else len(order)
        if shuffle:
            rng.shuffle(order)
        groups = []
        for start in range(0, len(order), pool_size):
            pool = sorted(order[start : start + pool_size], key=frames.__getitem__)
            groups += [pool[i : i + batch_size] for i in range(0, len(pool), batch_size)]
        if shuffle:
            rng.shuffle(groups)
        for indices in groups:
            yield self.batch(indices)


def load_training_set(
    path: str | Path,
    split: str,
    normalise: bool = True,
) -> TrainingSplit:
    """Load one split of a corpus folder returned by :func:`build_training_set`.

    Args:
        path: the corpus folder (holding ``index.json``).
        split: ``"train"`` or ``"dev"``.
        normalise: standardise features per mel bin with the training set's mean and std.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    index_path = Path(path) / INDEX_NAME
    if not index_path.is_file():
        raise FileNotFoundError(f"{index_path} not found; build the corpus with build_training_set")
    index = json.loads(index_path.read_text())
    features: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    for shard_name in index["splits"][split]["shards"]:
        shard = torch.load(Path(path) / shard_name, weights_only=True)
        features += torch.split(shard["features"], shard["feature_lengths"].tolist())
        labels += torch.split(shard["labels"], shard["label_lengths"].tolist())
    if normalise and "feature_mean" not in index:
        raise ValueError("this corpus has no training statistics (n_train=0); pass normalise=False")
    mean = torch.tensor(index["feature_mean"]) if normalise else None
    std = torch.tensor(index["feature_std"]) if normalise else None
    utterances = index["splits"][split]["utterances"]
    return TrainingSplit(features, labels, utterances, mean, std)
