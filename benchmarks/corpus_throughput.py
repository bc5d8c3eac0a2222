"""Throughput of ``attnprobe align`` over a corpus: one process against ``torchrun`` ranks.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.corpus_throughput
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.corpus_throughput --utterances 48 --rounds 3 \\
        --model checkpoints/aux-ctc-seed0 --results benchmarks/results/corpus_throughput.md

The corpus: ``--utterances`` clips of the shipped utterance, 1.0 to 2.97 s long, each with the
words spoken in it, in one JSON-lines manifest. Each configuration runs the same command line a
user would (``python -m attnprobe align`` or ``python -m torch.distributed.run --standalone
--nproc-per-node R -m attnprobe align``) into a fresh ``--out``, every rank on one thread:

- ``1 rank``: one process, one thread;
- ``R ranks``: torchrun, one thread each;
- with ``--with-threads`` also ``1 rank, R threads``: one process with as many threads as the ranks
  have in all (on a busy shared machine torch's thread pool is slow: one round suffices).

Per run: wall-clock seconds, CPU seconds of every process (``RUSAGE_CHILDREN``: torchrun's agent
and its workers included), utterances per second, CPU seconds per second of audio. A run on one
utterance measures the fixed cost (interpreter, imports, model load, rendezvous), so that the
per-utterance work can be told apart from it. Rounds are interleaved; the table gives the median
and the spread (min-max) over rounds, and the speed-up of R ranks against 1 rank measured in the
same rounds. ``--results`` writes the table, the machine and the command to a Markdown file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "checkpoints" / "aux-ctc-seed0"


@dataclass(frozen=True)
class Measured:
    """One run of the command."""

    wall_s: float
    cpu_s: float


def write_corpus(folder: Path, count: int) -> tuple[Path, float]:
    """Clips of the shipped utterance and their manifest; returns it and the audio seconds."""
    import numpy as np
    import soundfile

    from attnprobe.audio import SHIPPED_UTTERANCE

    samples, rate = soundfile.read(str(SHIPPED_UTTERANCE), dtype="float32")
    words = json.loads(SHIPPED_UTTERANCE.with_suffix(".json").read_text())["words"]
    lengths = np.linspace(1.0, len(samples) / rate, count)
    entries, total = [], 0.0
    for index, seconds in enumerate(lengths):
        clip = samples[: int(seconds * rate)]
        soundfile.write(str(folder / f"utt{index:04d}.wav"), clip, rate)
        text = " ".join(word["word"] for word in words if word["end"] <= seconds)
        entries.append({"id": f"utt{index:04d}", "audio": f"utt{index:04d}.wav", "text": text})
        total += len(clip) / rate
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(entry) + "\n" for entry in entries))
    return manifest, total


def run(command: list[str], threads: int) -> Measured:
    """Run ``command`` to the end; its wall-clock and CPU seconds (every descendant waited for)."""
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads),
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                               os.environ.get("PYTHONPATH")]))}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=REPO)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Measured(wall, cpu)


def command_for(ranks: int, model: str, manifest: Path, out: Path) -> list[str]:
    align = ["-m", "attnprobe", "align", "--model", model, "--audio", str(manifest),
             "--format", "json", "--out", str(out)]
    if ranks == 1:
        return [sys.executable, *align]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
            str(ranks), *align]


def spread(values: list[float], digits: int = 2) -> str:
    return (f"{statistics.median(values):.{digits}f} "
            f"({min(values):.{digits}f}-{max(values):.{digits}f})")


def scaling(runs: dict[str, list[Measured]], fixed: dict[str, list[Measured]],
            configurations: dict[str, tuple[int, int]], audio_s: float) -> str:
    """The model for N machines with R ranks each, with this run's numbers put in."""
    one = "1 rank"
    many = next(name for name, (count, threads) in configurations.items() if count > 1)
    count = configurations[many][0]

    def median_of(name: str, value: Callable[[Measured, Measured], float]) -> float:
        return statistics.median(value(item, start)
                                 for item, start in zip(runs[name], fixed[name], strict=True))

    start_one = statistics.median(item.wall_s for item in fixed[one])
    start_many = statistics.median(item.wall_s for item in fixed[many])
    work = median_of(one, lambda item, start: (item.cpu_s - start.cpu_s) / audio_s)
    # Efficiency of the per-utterance work alone: its wall time on one rank over R times its
    # wall time on R ranks, each with the fixed cost of its own launch taken off.
    efficiency = statistics.median(
        (runs[one][index].wall_s - fixed[one][index].wall_s)
        / (count * (runs[many][index].wall_s - fixed[many][index].wall_s))
        for index in range(len(runs[one])))
    return (f"For N machines with R ranks each: wall ~ F + A x c / (N x R x e) + M. F is the "
            f"fixed cost every rank pays at once (interpreter, imports, model load, rendezvous; "
            f"here {start_one:.1f} s for one process, {start_many:.1f} s for torchrun with "
            f"{count} ranks), A the audio seconds, c the CPU seconds of work per audio second on "
            f"one rank ({work:.2f} here), e the parallel efficiency of that work "
            f"({efficiency:.2f} measured for {count} ranks on this machine, which other jobs "
            f"share) and M rank 0's merge of the summary (one small JSON record per "
            f"utterance). Shared by all ranks: the --out folder (a shared file system across "
            f"machines), the manifest and the audio headers (each rank reads 1/(N x R) of them), "
            f"the rendezvous store (one counter per utterance). Not shared: CPU time and memory "
            f"(every rank loads its own copy of the model). Ranks pay off once A x c / (N x R) "
            f"is large against F: a corpus of hours, not of a minute.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--with-threads", action="store_true",
                        help="also one process with as many threads as the ranks")
    parser.add_argument("--results", type=Path, help="write the table here (Markdown)")
    arguments = parser.parse_args()
    ranks = arguments.ranks
    configurations = {"1 rank": (1, 1), f"{ranks} ranks": (ranks, 1)}
    if arguments.with_threads:
        configurations[f"1 rank, {ranks} threads"] = (1, ranks)
    load_at_start = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="attnprobe-throughput-"))
    try:
        manifest, audio_s = write_corpus(work, arguments.utterances)
        single = work / "single"
        single.mkdir()
        one_manifest = single / "manifest.jsonl"
        first = json.loads(manifest.read_text().splitlines()[-1])
        shutil.copy(work / first["audio"], single / first["audio"])
        one_manifest.write_text(json.dumps(first) + "\n")
        runs: dict[str, list[Measured]] = {name: [] for name in configurations}
        fixed: dict[str, list[Measured]] = {name: [] for name in configurations}
        for round_index in range(arguments.rounds):
            for name, (rank_count, threads) in configurations.items():
                out = work / f"out-{round_index}-{rank_count}-{threads}"
                runs[name].append(run(command_for(rank_count, arguments.model, manifest, out),
                                      threads))
                fixed[name].append(run(command_for(rank_count, arguments.model, one_manifest,
                                                   out.with_name(out.name + "-one")), threads))
                print(f"round {round_index + 1}, {name}: {runs[name][-1].wall_s:.1f} s wall, "
                      f"{runs[name][-1].cpu_s:.1f} CPU s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = [measured.wall_s for measured in runs["1 rank"]]
    header = ["configuration", "wall s", "utterances / s", "CPU s / audio s",
              "fixed cost: wall s (1 utterance)", "work: CPU s / audio s (fixed cost taken off)",
              "speed-up vs 1 rank (same round)"]
    rows = []
    for name, measured in runs.items():
        rank_count = configurations[name][0]
        walls = [item.wall_s for item in measured]
        work_cpu = [(item.cpu_s - start.cpu_s) / audio_s
                    for item, start in zip(measured, fixed[name], strict=True)]
        rows.append([name, spread(walls, 1),
                     spread([arguments.utterances / wall for wall in walls]),
                     spread([item.cpu_s / audio_s for item in measured]),
                     spread([start.wall_s for start in fixed[name]], 1),
                     spread(work_cpu),
                     "1.00" if rank_count == 1 and name == "1 rank" else
                     spread([one / wall for one, wall in zip(base, walls, strict=True)])])
    table = "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                       *("| " + " | ".join(row) + " |" for row in rows)])
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load "
               f"{load_at_start:.1f} at the start and {os.getloadavg()[0]:.1f} at the end; "
               f"Python {platform.python_version()}")
    text = (f"{arguments.utterances} utterances, {audio_s:.1f} s of audio, model "
            f"{Path(arguments.model).name}, {arguments.rounds} rounds (median, min-max)\n"
            f"machine: {machine}\n\n{table}\n\n{scaling(runs, fixed, configurations, audio_s)}\n")
    print("\n" + text)
    if arguments.results is not None:
        arguments.results.parent.mkdir(parents=True, exist_ok=True)
        command = " ".join(["python -m benchmarks.corpus_throughput", *sys.argv[1:]])
        arguments.results.write_text(f"# Corpus throughput of `attnprobe align`\n\n"
                                     f"Written by `OMP_NUM_THREADS=1 {command}`.\n\n{text}")


if __name__ == "__main__":
    main()
