"""Build the synthetic corpus with exact word timings and report its size and build time.

    python benchmarks/build_timed_corpus.py --out data/timed --n 120

Needs flite and/or festival (``apt-get install flite festival festvox-us-slt-hts
festvox-kallpc16k``); uses every installed voice unless ``--voices`` names some. A second run with
the same arguments reuses the files and finishes in well under a second.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

from benchmarks.corpus import build_corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/timed", help="output folder (default: data/timed)")
    parser.add_argument("--n", type=int, default=120, help="number of utterances (default: 120)")
    parser.add_argument("--seed", type=int, default=0, help="sentence order seed (default: 0)")
    parser.add_argument("--voices", nargs="+", default=None,
                        help="voice names (default: every installed flite and festival voice)")
    arguments = parser.parse_args()

    started = time.perf_counter()
    manifest = build_corpus(arguments.out, arguments.n,
                            voices=tuple(arguments.voices) if arguments.voices else None,
                            seed=arguments.seed)
    elapsed = time.perf_counter() - started

    per_voice = Counter(utterance.voice for utterance in manifest.utterances)
    words = sum(len(utterance.words) for utterance in manifest.utterances)
    print(f"manifest: {manifest.root / 'manifest.json'}")
    print(f"utterances: {len(manifest)}  words: {words}  "
          f"audio: {manifest.total_duration:.1f} s ({manifest.total_duration / 60:.1f} min)")
    print("per voice: " + ", ".join(f"{voice} {count}" for voice, count in per_voice.items()))
    print(f"wall-clock: {elapsed:.1f} s")


if __name__ == "__main__":
    main()
