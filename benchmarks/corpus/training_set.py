"""A cached synthetic training corpus: espeak-ng speech of generated sentences, as tensors.

:func:`build_training_set` draws sentences from :mod:`benchmarks.corpus.vocabulary`, speaks each
with a random voice, rate and amount of leading/trailing silence, adds a faint noise floor,
computes 80-dim log-mel features and writes, under ``out_dir/espeak-<hash of the arguments>/``:

- ``train-00000.pt``, ``dev-00000.pt``, ...: shards, each a dict of tensors
  ``features`` (all frames of the shard, 80) float16, ``feature_lengths`` (utterances,) int32,
  ``labels`` (all labels of the shard,) int16, ``label_lengths`` (utterances,) int32;
- ``index.json``: the arguments, the label set, feature settings, the mean and standard deviation
  of the training features per mel bin, and per utterance its text, voice, rate, duration and
  word times in seconds.

A second call with the same arguments finds ``index.json`` and returns at once. Each shard is
built in a fresh worker process because espeak-ng's output depends slightly on the calls made
before in the same process; so a shard's audio depends only on its own utterances, and the same
arguments give the same corpus whatever the number of workers.

Usage::

    path = build_training_set("data/train", n_train=4000, n_dev=200, seed=0)
    train = load_training_set(path, "train")
    for batch in train.batches(batch_size=32, seed=1):
        batch.features         # (batch, frames, 80) float32, normalised with training statistics
        batch.labels           # (batch, labels) int64 in 2..29, padding 0

Labels follow :mod:`attnprobe.models`: real labels only, padded with blank (0); the model adds
end-of-sentence (1) to its targets itself.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from attnprobe.features import MEL_BINS, SAMPLE_RATE, SHIFT_S, WINDOW_S, log_mel
from attnprobe.labels import CHARACTER_LABELS
from benchmarks.corpus.espeak import WordTiming, WordTimingError, check_voice, synthesize
from benchmarks.corpus.training_split import (
    INDEX_NAME,
    SPLITS,
    SpeechBatch,
    TrainingSplit,
    load_training_set,
)
from benchmarks.corpus.vocabulary import closed_vocabulary, random_sentence

# Reading a built corpus lives in training_split; re-exported so one import serves both sides.
__all__ = ["SpeechBatch", "TrainingSplit", "build_training_set", "first_utterances",
           "load_training_set", "plan_utterances"]

DEFAULT_VOICES = (
    "en-us", "en+m3", "en-us+f3", "en+f2", "en+f4", "en+m1", "en+m7", "en+klatt2",
    "en-gb-scotland", "en-029", "en-gb-x-rp", "en-us-nyc",
)
# Words per minute. espeak-ng speaks ~19 characters/s at 175 wpm, more than the 16.7 encoder
# frames/s of a 6x-downsampling model, which makes character CTC (the auxiliary losses)
# infeasible for many utterances. At these rates the densest of 4000 training utterances (seed 0)
# needs 0.99 of its frames (benchmarks/build_training_corpus.py prints this).
DEFAULT_RATES = (90, 105, 120, 135)
SHARD_SIZE = 100
FORMAT_VERSION = 1
# Silence around the speech is drawn per utterance, so that a model cannot tell where speech
# starts from absolute position alone.
SILENCE_RANGE_S = (0.05, 0.5)
# Noise floor standard deviation (audio in [-1, 1]), drawn log-uniformly per utterance:
# roughly 60 to 80 dB below espeak-ng's peaks, enough to keep silent frames off the log floor.
NOISE_RANGE = (1e-4, 1e-3)
_REDRAWS = 10


@dataclass(frozen=True)
class UtterancePlan:
    """Everything needed to produce one utterance, fixed before any audio is made."""

    utterance_id: str
    text: str
    voice: str
    rate: int
    leading_silence_s: float
    trailing_silence_s: float
    noise_level: float
    noise_seed: int


@dataclass(frozen=True)
class _ShardJob:
    path: Path
    plans: tuple[UtterancePlan, ...]
    excluded_sentences: frozenset[str]


def _arguments_digest(arguments: dict) -> str:
    canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _draw_sentences(count: int, rng: random.Random, excluded: set[str]) -> list[str]:
    sentences = []
    for _ in range(count):
        for _ in range(1000):
            sentence = random_sentence(rng)
            if sentence not in excluded:
                break
        else:
            raise ValueError(
                "could not draw a sentence outside the other split in 1000 tries; the vocabulary "
                "is too small for this many sentences: lower n_train or n_dev"
            )
        sentences.append(sentence)
    return sentences


def plan_utterances(
    n_train: int, n_dev: int, voices: tuple[str, ...], rates: tuple[int, ...], seed: int
) -> dict[str, list[UtterancePlan]]:
    """The utterances of each split; dev sentences never occur in train. Same seed, same plan."""
    if not voices or not rates:
        raise ValueError("give at least one voice and one rate: voices=('en-us',), rates=(175,)")
    train_sentences = _draw_sentences(n_train, random.Random(f"{seed}/train/sentences"), set())
    dev_rng = random.Random(f"{seed}/dev/sentences")
    dev_sentences = _draw_sentences(n_dev, dev_rng, set(train_sentences))
    plans = {}
    for split, sentences in (("train", train_sentences), ("dev", dev_sentences)):
        rng = random.Random(f"{seed}/{split}/conditions")
        plans[split] = [
            UtterancePlan(
                utterance_id=f"{split}-{number:06d}",
                text=text,
                voice=rng.choice(voices),
                rate=rng.choice(rates),
                leading_silence_s=round(rng.uniform(*SILENCE_RANGE_S), 3),
                trailing_silence_s=round(rng.uniform(*SILENCE_RANGE_S), 3),
                noise_level=float(np.exp(rng.uniform(*np.log(NOISE_RANGE)))),
                noise_seed=rng.getrandbits(32),
            )
            for number, text in enumerate(sentences)
        ]
    return plans


def _speak(
    plan: UtterancePlan, excluded: frozenset[str]
) -> tuple[UtterancePlan, np.ndarray, list[WordTiming]]:
    """Audio and word times of ``plan``; a sentence espeak-ng cannot time is replaced."""
    rng = random.Random(plan.noise_seed)
    for _ in range(_REDRAWS):
        try:
            samples, words = synthesize(
                plan.text, plan.voice, plan.rate, plan.leading_silence_s, plan.trailing_silence_s
            )
            return plan, samples, words
        except WordTimingError:
            replacement = _draw_sentences(1, rng, set(excluded))[0]
            plan = UtterancePlan(**{**asdict(plan), "text": replacement})
    raise WordTimingError(f"no timeable sentence for {plan.utterance_id} in {_REDRAWS} draws")


def _build_shard(job: _ShardJob) -> dict:
    """Writes one shard file; returns its utterance records and feature sums for statistics."""
    features, labels, records = [], [], []
    for plan in job.plans:
        plan, samples, words = _speak(plan, job.excluded_sentences)
        noise = np.random.default_rng(plan.noise_seed).standard_normal(len(samples), np.float32)
        samples = samples + plan.noise_level * noise
        utterance_features = log_mel(samples)
        features.append(utterance_features)
        labels.append(torch.tensor(CHARACTER_LABELS.encode(plan.text), dtype=torch.int16))
        records.append({
            **asdict(plan),
            "duration_s": len(samples) / SAMPLE_RATE,
            "frames": len(utterance_features),
            "words": [
                {"word": word, "start": round(start, 5), "end": round(end, 5)}
                for word, start, end in words
            ],
        })
    all_features = torch.cat(features)
    torch.save(
        {
            "features": all_features.to(torch.float16),
            "feature_lengths": torch.tensor([len(f) for f in features], dtype=torch.int32),
            "labels": torch.cat(labels),
            "label_lengths": torch.tensor([len(label) for label in labels], dtype=torch.int32),
        },
        job.path,
    )
    # numpy, not tensors: torch sends tensors between processes through shared memory that
    # vanishes when this worker exits right after returning.
    return {
        "records": records,
        "sum": all_features.double().sum(dim=0).numpy(),
        "sum_of_squares": all_features.double().square().sum(dim=0).numpy(),
        "frames": len(all_features),
    }


def _run_shard_jobs(jobs: list[_ShardJob], workers: int) -> list[dict]:
    # forkserver: workers fork from a clean server that has imported torch but never touched
    # espeak-ng; maxtasksperchild=1 gives every shard a fresh espeak-ng state.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["benchmarks.corpus.training_set", "torchaudio.compliance.kaldi"])
    with context.Pool(processes=workers, maxtasksperchild=1) as pool:
        return pool.map(_build_shard, jobs, chunksize=1)


def build_training_set(
    out_dir: str | Path,
    n_train: int,
    n_dev: int,
    voices: tuple[str, ...] = DEFAULT_VOICES,
    rates: tuple[int, ...] = DEFAULT_RATES,
    seed: int = 0,
    workers: int = 2,
    shard_size: int = SHARD_SIZE,
) -> Path:
    """Build (or find in the cache) the corpus and return its folder, which holds ``index.json``.

    Args:
        out_dir: parent folder; the corpus goes to ``out_dir/espeak-<12 hex digits>``, a hash of
            every argument that changes the content (not ``workers``).
        n_train, n_dev: utterances per split.
        voices: espeak-ng voices to draw from, e.g. ``("en-us", "en+m3")``.
        rates: speaking rates in words per minute to draw from.
        seed: fixes sentences, voices, rates, silences and noise.
        workers: worker processes (each shard is built in a fresh one).
        shard_size: utterances per shard file.
    """
    arguments = {
        "format_version": FORMAT_VERSION,
        "n_train": n_train,
        "n_dev": n_dev,
        "voices": list(voices),
        "rates": list(rates),
        "seed": seed,
        "shard_size": shard_size,
        "vocabulary_digest": _arguments_digest({"words": closed_vocabulary()}),
    }
    out_dir = Path(out_dir)
    final = out_dir / f"espeak-{_arguments_digest(arguments)}"
    if (final / INDEX_NAME).is_file():
        if json.loads((final / INDEX_NAME).read_text())["arguments"] == arguments:
            return final
        raise FileExistsError(f"{final} holds a corpus built with other arguments; delete it")
    if final.exists():
        raise FileExistsError(f"{final} exists without {INDEX_NAME} (interrupted?); delete it")
    if min(n_train, n_dev) < 0 or shard_size < 1 or workers < 1:
        raise ValueError(
            f"need n_train, n_dev >= 0 and shard_size, workers >= 1; got {n_train}, {n_dev}, "
            f"{shard_size}, {workers}"
        )
    # Fail here rather than in every worker after it has started.
    for voice in voices:
        for rate in rates:
            check_voice(voice, rate)
    plans = plan_utterances(n_train, n_dev, tuple(voices), tuple(rates), seed)
    partial = out_dir / f".{final.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    jobs = []
    for split, other in (("train", "dev"), ("dev", "train")):
        excluded = frozenset(plan.text for plan in plans[other])
        for start in range(0, len(plans[split]), shard_size):
            path = partial / f"{split}-{start // shard_size:05d}.pt"
            jobs.append(_ShardJob(path, tuple(plans[split][start : start + shard_size]), excluded))
    try:
        results = _run_shard_jobs(jobs, workers)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise

    index: dict = {
        "arguments": arguments,
        "features": {"mel_bins": MEL_BINS, "window_s": WINDOW_S, "shift_s": SHIFT_S,
                     "sample_rate": SAMPLE_RATE},
        "labels": {
            "symbols": list(CHARACTER_LABELS.symbols),
            "blank_index": CHARACTER_LABELS.blank_index,
            "end_of_sentence_index": CHARACTER_LABELS.end_of_sentence_index,
            "vocab_size": CHARACTER_LABELS.vocab_size,
        },
        "splits": {split: {"shards": [], "utterances": []} for split in SPLITS},
    }
    train_results = [r for job, r in zip(jobs, results) if job.path.name.startswith("train")]
    if train_results:
        frames = sum(r["frames"] for r in train_results)
        mean = sum(r["sum"] for r in train_results) / frames
        variance = sum(r["sum_of_squares"] for r in train_results) / frames - np.square(mean)
        index["feature_mean"] = mean.tolist()
        index["feature_std"] = np.sqrt(np.maximum(variance, 1e-10)).tolist()
    for job, result in zip(jobs, results):
        split = job.path.name.split("-")[0]
        index["splits"][split]["shards"].append(job.path.name)
        index["splits"][split]["utterances"] += result["records"]
    (partial / INDEX_NAME).write_text(json.dumps(index, indent=1))
    try:
        partial.rename(final)
    except OSError:
        # Another process finished the same corpus first; its copy is identical.
        shutil.rmtree(partial)
    return final


def first_utterances(split: str, count: int, n_train: int, n_dev: int,
                     voices: tuple[str, ...] = DEFAULT_VOICES,
                     rates: tuple[int, ...] = DEFAULT_RATES, seed: int = 0,
                     mean: torch.Tensor | None = None,
                     std: torch.Tensor | None = None) -> TrainingSplit:
    """The first ``count`` utterances of ``split`` of the corpus :func:`build_training_set` would
    build with these arguments, without building the rest: the same plan, spoken in a fresh worker
    as the first utterances of the split's first shard are, stored in float16 as a shard stores
    them. Identical to ``load_training_set(build_training_set(...), split)[:count]``
    (``tests/test_induced_localisation.py`` compares them where the corpus is built).

    Args:
        split: ``"train"`` or ``"dev"``.
        count: at most :data:`SHARD_SIZE`.
        n_train, n_dev, voices, rates, seed: as in :func:`build_training_set`.
        mean, std: ``(80,)`` statistics to standardise the features with (a checkpoint's
            ``feature_mean`` / ``feature_std``), or ``None``.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    sizes = {"train": n_train, "dev": n_dev}
    if not 1 <= count <= min(sizes[split], SHARD_SIZE):
        raise ValueError(f"count must be between 1 and {min(sizes[split], SHARD_SIZE)} "
                         f"(the first shard of the {split} split); got {count}")
    plans = plan_utterances(n_train, n_dev, tuple(voices), tuple(rates), seed)
    other = "dev" if split == "train" else "train"
    excluded = frozenset(plan.text for plan in plans[other])
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{split}-00000.pt"
        [result] = _run_shard_jobs([_ShardJob(path, tuple(plans[split][:count]), excluded)], 1)
        shard = torch.load(path, weights_only=True)
    features = list(torch.split(shard["features"], shard["feature_lengths"].tolist()))
    labels = list(torch.split(shard["labels"], shard["label_lengths"].tolist()))
    return TrainingSplit(features, labels, result["records"], mean, std)
