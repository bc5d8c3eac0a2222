"""A three-minute recording aligned end to end: the shipped utterance followed by synthetic
sentences (flite voices) with pauses between them, every word's true time known, aligned by
:func:`attnprobe.alignment.align_transcript` in windows Whisper accepts.

    python -m benchmarks.long_audio --minutes 3 --out benchmarks/results/long_audio.md

Reports the windows used, whether every word came back exactly once and in order, and the
word-boundary and word-position TSE against the true times, with CPU-seconds per audio-second.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from attnprobe.alignment import align_transcript, timestamp_errors
from attnprobe.audio import read_audio, resample
from attnprobe.loading import load_model

from .corpus import SENTENCES, flite
from .results_file import recorded_output, write_results

ASSETS = Path(__file__).resolve().parents[1] / "attnprobe" / "assets"
RATE = 16000
VOICES = ("slt", "awb", "rms")


def long_recording(seconds: float, seed: int = 0
                   ) -> tuple[np.ndarray, str, list[tuple[str, float, float]]]:
    """``(samples, text, words)``: the shipped utterance, then flite sentences with 0.2-1.5 s
    pauses, until ``seconds`` are reached."""
    rng = random.Random(seed)
    meta = json.loads((ASSETS / "utterance.json").read_text())
    pieces = [read_audio(ASSETS / "utterance.wav").at_rate(RATE).samples]
    words = [(word["word"], word["start"], word["end"]) for word in meta["words"]]
    texts = [meta["text"]]
    offset = len(pieces[0]) / RATE
    sentences = list(SENTENCES)
    rng.shuffle(sentences)
    for index, sentence in enumerate(sentences * 4):
        if offset >= seconds:
            break
        pause = np.zeros(int(rng.uniform(0.2, 1.5) * RATE), dtype=np.float32)
        offset += len(pause) / RATE
        speech = flite.synthesize(sentence, VOICES[index % len(VOICES)])
        samples = resample(speech.samples, speech.sample_rate, RATE).astype(np.float32)
        words += [(timing.word, offset + timing.start, offset + timing.end)
                  for timing in speech.words]
        pieces += [pause, samples]
        texts.append(sentence)
        offset += len(samples) / RATE
    return np.concatenate(pieces), " ".join(texts), words


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--out", default=None)
    arguments = parser.parse_args()
    if not flite.is_available():
        print(f"skipped: flite is not installed ({flite.INSTALL_HINT})")
        return
    torch.set_num_threads(1)
    samples, text, reference = long_recording(60 * arguments.minutes)
    loaded = load_model("whisper-tiny.en")
    with recorded_output() as printed:
        started = time.process_time()
        alignment = align_transcript(loaded, samples, text)
        cpu = time.process_time() - started
        duration = len(samples) / RATE
        aligned = [word.text for word in alignment.words]
        same_words = aligned == text.split()
        errors = timestamp_errors(alignment.words, reference)
        print(f"Whisper tiny.en, {duration:.1f} s ({duration / 60:.1f} min), {len(reference)} "
              f"words: {alignment.method}")
        print(f"every word exactly once, in order: {same_words}")
        print(f"warnings: {alignment.warnings or 'none'}\n")
        print("| TSE-b ms | TSE-p ms | <= 20 ms | <= 50 ms | mean offset start / end ms | "
              "CPU-s / audio-s |\n|---|---|---|---|---|---|")
        print(f"| {errors.tse_boundaries_ms:.1f} | {errors.tse_position_ms:.1f} | "
              f"{100 * errors.within_20ms:.1f}% | {100 * errors.within_50ms:.1f}% | "
              f"{errors.start_offsets_ms.mean():+.0f} / {errors.end_offsets_ms.mean():+.0f} | "
              f"{cpu / duration:.2f} |")
        worst = np.argsort(-errors.boundary_errors_ms)[:3]
        print("\nlargest word-boundary errors: " + ", ".join(
            f"{reference[index][0]!r} at {reference[index][1]:.1f} s: "
            f"{errors.boundary_errors_ms[index]:.0f} ms" for index in worst))
    write_results(None if arguments.out is None else Path(arguments.out),
                  "A three-minute recording aligned in windows", printed.getvalue())


if __name__ == "__main__":
    main()
