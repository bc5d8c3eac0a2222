"""CPU-seconds per audio-second of gradient alignment on Whisper tiny.en: the method as shipped
before (the code of ``--baseline-commit``, run from a ``git archive`` of it in a child process)
against this code's default, in interleaved rounds on the same utterances, one thread each.

    python -m benchmarks.alignment_speed --corpus ../shared/timit --rounds 3 \\
        --out benchmarks/results/alignment_speed.md

Utterances: every eighth of TIMIT's report half (``--corpus``), or the shipped utterance where
TIMIT is absent. Each round times, with the process's CPU clock and after the model is loaded:
(a) the old code's ``gradient_alignment`` with its defaults (BPE tokens, gradients at the 10 ms
log-mel, 30 s window, torch Viterbi), (b) this code with the same old settings (what the shared
improvements alone give: numpy Viterbi, the label head's backward), (c) this code's
``align_transcript`` with Whisper's defaults. Ratios are per round, reported as median and range.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from attnprobe.alignment import DEFAULT_SETTINGS, align_transcript, gradient_alignment
from attnprobe.loading import load_model

from .results_file import Ratio, recorded_output, spread, write_results

REPOSITORY = Path(__file__).resolve().parents[1]
BASELINE_COMMIT = "a9b0253"
"""The restructured library before issue 12: today's method."""

OLD_CODE = """
import json, sys, time
import numpy as np, torch
torch.set_num_threads(1)
from attnprobe.alignment import DEFAULT_SETTINGS, gradient_alignment
from attnprobe.loading import load_model
loaded = load_model("whisper-tiny.en")
items = json.loads(open(sys.argv[1]).read())
started = time.process_time()
for item in items:
    samples = np.load(item["samples"])
    transcript = loaded.transcript(item["text"])
    batch = loaded.batch(samples, transcript)
    gradient_alignment(loaded.model, batch, [transcript.tokens], settings=DEFAULT_SETTINGS,
                       word_style=loaded.word_style, adapter=loaded.adapter)
print(json.dumps({"cpu": time.process_time() - started}))
"""


def utterances(corpus: Path) -> list[tuple[np.ndarray, str]]:
    if (corpus / "README.md").is_file():
        from .timit import load_half

        return [(u.samples, u.text) for u in load_half(corpus, "report")[::8]]
    from attnprobe.audio import read_audio

    assets = REPOSITORY / "attnprobe" / "assets"
    meta = json.loads((assets / "utterance.json").read_text())
    return [(read_audio(assets / "utterance.wav").at_rate(16000).samples, meta["text"])]


def old_code(commit: str, folder: Path) -> Path:
    """The library at ``commit``, unpacked into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(REPOSITORY), "archive", commit, "attnprobe",
                              "adapters"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    # A checkout imports attnprobe.adapters through this link (an installed wheel maps the
    # package instead); without it the old code would import whatever adapters are installed.
    link = folder / "attnprobe" / "adapters"
    if not link.exists():
        link.symlink_to(Path("..") / "adapters")
    return folder


def old_cpu_seconds(code: Path, items_file: Path) -> float:
    result = subprocess.run([sys.executable, "-c", OLD_CODE, str(items_file)], cwd=code,
                            capture_output=True, text=True, check=True,
                            env={"PYTHONPATH": str(code), "OMP_NUM_THREADS": "1",
                                 "PATH": "/usr/bin:/bin"})
    return float(json.loads(result.stdout.strip().splitlines()[-1])["cpu"])


def new_cpu_seconds(loaded, items, old_settings: bool) -> float:
    started = time.process_time()
    for samples, text in items:
        if old_settings:
            transcript = loaded.transcript(text)
            batch = loaded.batch(samples, transcript)
            gradient_alignment(loaded.model, batch, [transcript.tokens],
                               settings=DEFAULT_SETTINGS, word_style=loaded.word_style,
                               adapter=loaded.adapter)
        else:
            align_transcript(loaded, samples, text)
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="../shared/timit")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline-commit", default=BASELINE_COMMIT)
    parser.add_argument("--out", default=None)
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    items = utterances(Path(arguments.corpus))
    audio = sum(len(samples) for samples, _ in items) / 16000
    loaded = load_model("whisper-tiny.en")
    with tempfile.TemporaryDirectory() as scratch, recorded_output() as printed:
        folder = Path(scratch)
        code = old_code(arguments.baseline_commit, folder / "code")
        listing = []
        for index, (samples, text) in enumerate(items):
            np.save(folder / f"{index}.npy", samples)
            listing.append({"samples": str(folder / f"{index}.npy"), "text": text})
        (folder / "items.json").write_text(json.dumps(listing))
        new_cpu_seconds(loaded, items[:1], old_settings=False)  # warm-up: first-call costs
        rows: dict[str, list[float]] = {"old": [], "old settings, new code": [], "new": []}
        for round_index in range(arguments.rounds):
            rows["old"].append(old_cpu_seconds(code, folder / "items.json") / audio)
            rows["old settings, new code"].append(new_cpu_seconds(loaded, items, True) / audio)
            rows["new"].append(new_cpu_seconds(loaded, items, False) / audio)
            print(f"round {round_index + 1}: " + ", ".join(
                f"{name} {values[-1]:.3f}" for name, values in rows.items()), flush=True)
        print(f"\nWhisper tiny.en, {len(items)} utterances, {audio:.1f} s of audio, "
              f"{arguments.rounds} interleaved rounds, one thread, CPU-s per audio-s "
              f"(median (min-max)):\n")
        print("| method | CPU-s / audio-s | ratio to the old code |\n|---|---|---|")
        names = {"old": f"before ({arguments.baseline_commit}): BPE tokens, 10 ms log-mel, 30 s "
                        f"window, torch Viterbi",
                 "old settings, new code": "the old settings on this code (numpy Viterbi, "
                                           "label head without the vocabulary backward)",
                 "new": "this code's default: align_transcript (characters, last encoder "
                        "block, Whisper's settings)"}
        for key, values in rows.items():
            ratio = Ratio.of(values, rows["old"])
            print(f"| {names[key]} | {spread(values)} | {ratio} |")
        speedup = Ratio.of(rows["old"], rows["new"])
        print(f"\nSpeed-up of the default over the method before: {speedup}")
    write_results(None if arguments.out is None else Path(arguments.out),
                  "Gradient alignment speed, Whisper tiny.en", printed.getvalue())


if __name__ == "__main__":
    main()
