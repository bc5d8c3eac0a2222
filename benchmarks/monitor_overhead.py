"""Cost of one FlipMonitor probe next to one plain training step, measured in the same process.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/monitor_overhead.py
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/monitor_overhead.py --repeats 5 --every 50

Model and shapes are the reproduction recipe's (``benchmarks/reproduction``): the tiny Conformer
AED with 30 character labels, batches of 16 utterances of 360 log-mel frames (the corpus mean)
and 35 labels, a probe batch of 2 such utterances. Inputs are random: the cost does not depend on
what the model has learnt. The frame mapping probes the monitor's default of 48 of the 60 encoder
frames per utterance (``--max-frames``). Reported per variant (frame-mapping projections per
frame, with and without the gradient maps that let the decoder outvote the frame mapping): the
median probe time, its ratio to a training step, and the overhead amortised over ``--every`` steps.
CPU seconds (``time.process_time``) are given next to wall-clock seconds because the wall clock of
a shared machine says more about the neighbours than about the code; each is the median (range)
over ``--repeats``. Writes ``benchmarks/results/monitor_overhead.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attnprobe.models import ConformerAED, ConformerAEDConfig  # noqa: E402
from attnprobe.monitor import FlipMonitor  # noqa: E402
from benchmarks.results_file import RESULTS, Ratio, spread, write_results  # noqa: E402


def speech_batch(size: int, frames: int, labels: int, seed: int) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(size, frames, 80, generator=generator), torch.full((size,), frames),
            torch.randint(2, 30, (size, labels), generator=generator), torch.full((size,), labels))


def timed(action: Callable[[], object], repeats: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of ``action`` per call over ``repeats`` calls, after a warm-up call."""
    action()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        action()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return walls, cpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "monitor_overhead.md",
                        help="results file (markdown)")
    parser.add_argument("--every", type=int, default=50, help="monitor interval for the amortised figure")
    parser.add_argument("--frames", type=int, default=360)
    parser.add_argument("--labels", type=int, default=35)
    parser.add_argument("--projections", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--max-frames", type=int, default=48,
                        help="output frames per utterance the frame mapping probes")
    arguments = parser.parse_args()

    torch.manual_seed(0)
    model = ConformerAED(ConformerAEDConfig.tiny(vocab_size=30)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = speech_batch(16, arguments.frames, arguments.labels, seed=1)

    def training_step() -> None:
        loss, _ = model.loss(*batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step_walls, step_cpus = timed(training_step, arguments.repeats)
    step_cpu = statistics.median(step_cpus)
    lines = [f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); batch 16 x "
             f"{arguments.frames} frames x {arguments.labels} labels; probe batch 2 utterances, "
             f"frame mapping on {arguments.max_frames} frames each; median (range) over "
             f"{arguments.repeats} repeats.",
             f"Plain training step: {spread(step_walls)} s wall, {spread(step_cpus)} s CPU.", "",
             "| projections | gradient maps | probe wall s | probe CPU s | probe / step (CPU) | "
             f"overhead at every={arguments.every} (CPU) |", "|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    probe = speech_batch(2, arguments.frames, arguments.labels, seed=2)
    for projections in arguments.projections:
        for with_maps in (False, True):
            monitor = FlipMonitor(model, probe, every=1, on_flip=lambda event: None,
                                  projections=projections, max_frames=arguments.max_frames,
                                  with_gradient_maps=with_maps)
            probe_walls, probe_cpus = timed(lambda monitor=monitor: monitor.probe(0),
                                            arguments.repeats)
            ratio = Ratio.of(probe_cpus, step_cpus)
            lines.append(f"| {projections} | {'yes' if with_maps else 'no'} | "
                         f"{spread(probe_walls)} | {spread(probe_cpus)} | {ratio} | "
                         f"{100 * statistics.median(probe_cpus) / (arguments.every * step_cpu):.1f}"
                         f"% |")
            print(lines[-1], flush=True)
    write_results(arguments.out, "FlipMonitor overhead", "\n".join(lines))


if __name__ == "__main__":
    main()
