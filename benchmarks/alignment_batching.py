"""Does batching utterances make gradient alignment cheaper on the CPU? Whisper tiny.en with its
default settings (characters, last encoder block, 30 s window): ``B`` utterances aligned in one
``gradient_alignment`` call against the same utterances one call each, CPU seconds, interleaved
rounds; also checks that both give the same word times.

    python -m benchmarks.alignment_batching --rounds 3 --out benchmarks/results/alignment_batching.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from attnprobe.alignment import gradient_alignment, settings_for
from attnprobe.alignment.transcript import LABELS_PER_BACKWARD
from attnprobe.audio import SHIPPED_UTTERANCE, read_audio
from attnprobe.batch import SpeechBatch
from attnprobe.loading import load_model

from .results_file import Ratio, recorded_output, spread, write_results

TEXT = "my brother carried a heavy basket across the bridge"
WORDS = TEXT.split()


def utterances(loaded, count: int) -> list[tuple[np.ndarray, str]]:
    """The shipped utterance and its word-aligned prefixes: different lengths and transcripts."""
    samples = read_audio(SHIPPED_UTTERANCE).at_rate(loaded.sample_rate).samples
    pieces = []
    for index in range(count):
        words = len(WORDS) - 2 * index
        keep = int(len(samples) * (0.55 + 0.45 * words / len(WORDS)))
        pieces.append((samples[:keep] if index else samples, " ".join(WORDS[:words])))
    return pieces


def batched(loaded, pieces) -> tuple[SpeechBatch, list[list[str]]]:
    transcripts = [loaded.spelled_transcript(text) for _, text in pieces]
    inputs = [loaded.inputs(samples) for samples, _ in pieces]
    labels = [torch.tensor(transcript.ids) for transcript in transcripts]
    return (SpeechBatch(pad_sequence(inputs, batch_first=True),
                        torch.tensor([item.shape[0] for item in inputs]),
                        pad_sequence(labels, batch_first=True),
                        torch.tensor([len(item) for item in labels])),
            [transcript.tokens for transcript in transcripts])


def align(loaded, batch: SpeechBatch, tokens: list[list[str]]):
    return gradient_alignment(loaded.model, batch, tokens, settings=settings_for(loaded.family),
                              word_style=loaded.word_style, adapter=loaded.adapter,
                              chunk_size=LABELS_PER_BACKWARD)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="whisper-tiny.en")
    parser.add_argument("--batch", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    loaded = load_model(arguments.model)
    pieces = utterances(loaded, arguments.batch)
    together, tokens = batched(loaded, pieces)
    alone = [batched(loaded, [piece]) for piece in pieces]
    batched_s, single_s, differences = [], [], []
    with recorded_output() as output:
        for _ in range(arguments.rounds):
            started = time.process_time()
            joint = align(loaded, together, tokens)
            batched_s.append(time.process_time() - started)
            started = time.process_time()
            separate = [align(loaded, batch, words)[0] for batch, words in alone]
            single_s.append(time.process_time() - started)
            differences.append(max(abs(a.start_s - b.start_s) + abs(a.end_s - b.end_s)
                                   for one, other in zip(joint, separate, strict=True)
                                   for a, b in zip(one.words, other.words, strict=True)))
        ratio = Ratio.of(single_s, batched_s)
        print(f"{arguments.model}, {arguments.batch} utterances ("
              f"{', '.join(str(len(text.split())) for _, text in pieces)} words), 1 thread, "
              f"{arguments.rounds} interleaved rounds")
        print(f"one call for the batch: {spread(batched_s)} CPU s")
        print(f"one call per utterance: {spread(single_s)} CPU s")
        print(f"batched is {ratio} cheaper (single / batched)")
        print(f"largest word-time difference between the two: {max(differences) * 1000:.1f} ms")
    write_results(arguments.out, "Batching utterances in gradient alignment",
                  f"```\n{output.getvalue()}```")


if __name__ == "__main__":
    main()
