"""Run the reproduction sweep, skipping finished runs: ``python -m benchmarks.reproduction.sweep``.

    python -m benchmarks.reproduction.sweep --list                      # what is done, what is not
    python -m benchmarks.reproduction.sweep --groups baseline --jobs 2  # the baseline seeds
    python -m benchmarks.reproduction.sweep                             # everything, in GROUPS order
    python -m benchmarks.reproduction.sweep --groups aux-ctc hard-centre --seed-major --jobs 2
    python -m benchmarks.reproduction.sweep --groups baseline --device cuda --size paper \
        --runs-dir runs-paper                                           # the paper's size, on a GPU

Each run is its own process (``python -m benchmarks.reproduction.train <name>``) at ``nice``
10 with one thread, so the machine stays usable and each run is deterministic. A run is finished
when ``runs/<name>/summary.json`` exists; an interrupted run has none and starts over. The sweep
builds (or finds) the corpus once before starting runs, and never touches git.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from .device import DeviceUnavailableError, resolve_placement
from .experiments import GROUPS, SEEDS, Experiment, all_experiments
from .train import SUMMARY_NAME, add_placement_arguments, prepare_corpus, recipe_from


def pending(experiments: list[Experiment], runs_dir: Path) -> list[Experiment]:
    """The experiments without a ``summary.json``, in order."""
    return [run for run in experiments if not (runs_dir / run.name / SUMMARY_NAME).exists()]


def seed_major(experiments: list[Experiment]) -> list[Experiment]:
    """``experiments`` ordered by seed first, keeping the group order within a seed."""
    return sorted(experiments, key=lambda run: run.seed)  # sorted() is stable


def _command(run: Experiment, runs_dir: Path, corpus: str, steps: int | None, niceness: int,
             placement: tuple[str, ...] = ()) -> list[str]:
    command = ["nice", "-n", str(niceness), sys.executable, "-m", "benchmarks.reproduction.train", run.name,
               "--runs-dir", str(runs_dir), "--corpus", corpus, *placement]
    return command + (["--steps", str(steps)] if steps is not None else [])


def run_all(experiments: list[Experiment], runs_dir: Path, corpus: str, jobs: int, niceness: int,
            steps: int | None, placement: tuple[str, ...] = ()) -> list[tuple[str, int]]:
    """Run ``experiments`` with at most ``jobs`` at a time; returns ``(name, exit code)`` each.
    ``placement``: ``--device`` / ``--precision`` / ``--size`` arguments for every run."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    waiting = list(experiments)
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    finished: list[tuple[str, int]] = []
    runs_dir.mkdir(parents=True, exist_ok=True)
    while waiting or running:
        while waiting and len(running) < jobs:
            run = waiting.pop(0)
            # Next to the run folder, not in it: train.py empties the folder when it starts.
            output = (runs_dir / f"{run.name}.out").open("w")
            process = subprocess.Popen(_command(run, runs_dir, corpus, steps, niceness, placement),
                                       stdout=output, stderr=subprocess.STDOUT, env=environment)
            running[run.name] = (process, time.perf_counter())
            print(f"started {run.name} (pid {process.pid})", flush=True)
        time.sleep(2)
        for name, (process, started) in list(running.items()):
            if process.poll() is None:
                continue
            del running[name]
            finished.append((name, process.returncode))
            state = "finished" if process.returncode == 0 else f"FAILED (exit {process.returncode})"
            print(f"{state} {name} after {time.perf_counter() - started:.0f} s; output in "
                  f"{runs_dir / (name + '.out')}", flush=True)
    return finished


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the reproduction sweep (resumable).")
    parser.add_argument("--groups", nargs="+", choices=GROUPS, default=list(GROUPS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--corpus", help="corpus folder (default: build or find the recipe's)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at the same time (one core each)")
    parser.add_argument("--nice", type=int, default=10, help="niceness of the runs (default: 10)")
    parser.add_argument("--steps", type=int, help="override the recipe's step count (smoke sweeps)")
    parser.add_argument("--seed-major", action="store_true",
                        help="every group's seed 0, then seed 1, ...: a sweep stopped early leaves "
                             "whole seeds across the groups rather than whole groups")
    parser.add_argument("--list", action="store_true", help="print what is finished and stop")
    add_placement_arguments(parser)
    arguments = parser.parse_args(argv)
    try:
        resolve_placement(arguments.device, arguments.precision)
    except (DeviceUnavailableError, ValueError) as error:
        parser.error(str(error))
    placement = ("--device", arguments.device, "--precision", arguments.precision,
                 "--size", arguments.size)
    runs_dir = Path(arguments.runs_dir)
    recipe = recipe_from(arguments)
    chosen = [run for run in all_experiments(recipe, tuple(arguments.seeds))
              if run.group in arguments.groups]
    if arguments.seed_major:
        chosen = seed_major(chosen)
    todo = pending(chosen, runs_dir)
    if arguments.list:
        for run in chosen:
            print(f"{'pending ' if run in todo else 'finished'} {run.name}")
        print(f"{len(chosen) - len(todo)} of {len(chosen)} finished")
        return
    if not todo:
        print(f"all {len(chosen)} runs are finished")
        return
    corpus = prepare_corpus(recipe, arguments.corpus)
    print(f"{len(todo)} of {len(chosen)} runs to do; corpus {corpus}", flush=True)
    results = run_all(todo, runs_dir, corpus, arguments.jobs, arguments.nice, arguments.steps,
                      placement)
    failed = [name for name, code in results if code != 0]
    if failed:
        sys.exit(f"failed runs: {', '.join(failed)}")


if __name__ == "__main__":
    main()
