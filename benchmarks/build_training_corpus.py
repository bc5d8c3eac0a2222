"""Build the espeak-ng training corpus of the time-reversal experiments; report size and speed.

    .venv/bin/python benchmarks/build_training_corpus.py --out data/train --train 4000 --dev 200
    .venv/bin/python benchmarks/build_training_corpus.py --out /tmp/corpus --train 180 --dev 20

Needs espeak-ng (``apt-get install -y espeak-ng``). The corpus goes to
``<out>/espeak-<hash of the arguments>/``; a second run with the same arguments finds it and
finishes at once (reported as cached). Utterances per second count a fresh build only, including
the start of the worker processes.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter

from benchmarks.corpus.training_set import (
    DEFAULT_RATES,
    DEFAULT_VOICES,
    INDEX_NAME,
    SHARD_SIZE,
    build_training_set,
)


def ctc_frames_per_encoder_frame(utterance: dict) -> float:
    """Frames a character CTC path needs (one per letter, one between repeated letters) over
    the utterance's encoder frames at 6x downsampling (60 ms), as the project's models use."""
    text = utterance["text"]
    repeats = sum(first == second for first, second in zip(text, text[1:]))
    return (len(text) + repeats) / (utterance["frames"] // 6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/train", help="parent folder (default: data/train)")
    parser.add_argument("--train", type=int, default=4000,
                        help="training utterances (default: 4000)")
    parser.add_argument("--dev", type=int, default=200, help="dev utterances (default: 200)")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed (default: 0)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default: 2)")
    parser.add_argument("--shard-size", type=int, default=SHARD_SIZE,
                        help=f"utterances per shard file (default: {SHARD_SIZE})")
    parser.add_argument("--voices", nargs="+", default=list(DEFAULT_VOICES),
                        help="espeak-ng voices (default: %(default)s)")
    parser.add_argument("--rates", nargs="+", type=int, default=list(DEFAULT_RATES),
                        help="speaking rates in words per minute (default: %(default)s)")
    arguments = parser.parse_args()

    started_at = time.time()
    started = time.perf_counter()
    path = build_training_set(
        arguments.out, arguments.train, arguments.dev, voices=tuple(arguments.voices),
        rates=tuple(arguments.rates), seed=arguments.seed, workers=arguments.workers,
        shard_size=arguments.shard_size,
    )
    elapsed = time.perf_counter() - started
    cached = (path / INDEX_NAME).stat().st_mtime < started_at

    index = json.loads((path / INDEX_NAME).read_text())
    print(f"corpus: {path}")
    total_utterances = 0
    for split, contents in index["splits"].items():
        utterances = contents["utterances"]
        seconds = sum(utterance["duration_s"] for utterance in utterances)
        words = sum(len(utterance["words"]) for utterance in utterances)
        total_utterances += len(utterances)
        print(f"{split}: {len(utterances)} utterances, {words} words, {seconds / 3600:.2f} h "
              f"({seconds / max(len(utterances), 1):.2f} s each), {len(contents['shards'])} shards")
    train = index["splits"]["train"]["utterances"]
    if train:
        ratios = [ctc_frames_per_encoder_frame(utterance) for utterance in train]
        print(f"CTC frames needed per 60 ms encoder frame: mean {sum(ratios) / len(ratios):.2f}, "
              f"max {max(ratios):.2f} (character CTC needs <= 1)")
    for condition in ("voice", "rate"):
        counts = sorted(Counter(utterance[condition] for utterance in train).items())
        print(f"{condition}s: " + ", ".join(f"{value} {count}" for value, count in counts))
    if cached:
        print(f"wall-clock: {elapsed:.2f} s (cached; delete {path} to rebuild)")
    else:
        print(f"wall-clock: {elapsed:.1f} s with {arguments.workers} workers, "
              f"{total_utterances / elapsed:.1f} utterances/s")


if __name__ == "__main__":
    main()
