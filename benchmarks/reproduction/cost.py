"""What a training step costs at the CPU runs' size and at the paper's, measured here, and what a
GPU run would cost, estimated from those measurements:

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.reproduction.cost --out docs/reproduction/cost.json

Measured, per recipe step (batch of 16 utterances of 360 log-mel frames, 35 labels: the corpus
means; random inputs, the cost does not depend on them): parameters; floating-point operations of
the forward and backward pass (``torch.utils.flop_counter``: matrix products and convolutions,
which are nearly all of them); the number of aten operations (on a GPU, about one kernel launch
each); the CPU seconds of one step on one thread (median over ``--rounds``).

Estimated, for ``--steps`` steps on one GPU: the larger of the arithmetic time at
``--gpu-tflops`` sustained (a fraction of the card's peak: small batches and a recurrent decoder
keep it far from the peak) and the launch time at ``--launch-us`` per operation (the LSTM decoder
runs one small step per label, so eager PyTorch is bound by launches at these sizes). These are
estimates, not GPU measurements; the JSON says which numbers are which.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from attnprobe.models import ConformerAED, ConformerAEDConfig

from .experiments import BASE_MODEL, Recipe

FRAMES, LABELS = 360, 35


class OperationCount(TorchDispatchMode):
    """Counts aten operations (about one GPU kernel each)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.count += 1
        return func(*args, **(kwargs or {}))


def recipe_batch(size: int) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    return (torch.randn(size, FRAMES, 80, generator=generator), torch.full((size,), FRAMES),
            torch.randint(2, 30, (size, LABELS), generator=generator), torch.full((size,), LABELS))


def step(model: ConformerAED, batch: tuple[torch.Tensor, ...]) -> None:
    loss, _ = model.loss(*batch)
    loss.backward()
    model.zero_grad(set_to_none=True)


def measure(size: str, batch_size: int, rounds: int) -> dict[str, Any]:
    torch.manual_seed(0)
    build = ConformerAEDConfig.tiny if size == "tiny" else ConformerAEDConfig.paper
    model = ConformerAED(build(**BASE_MODEL)).train()
    batch = recipe_batch(batch_size)
    counter = FlopCounterMode(display=False)
    with counter:
        step(model, batch)
    operations = OperationCount()
    with operations:
        step(model, batch)
    seconds = []
    for _ in range(rounds):
        started = time.process_time()
        step(model, batch)
        seconds.append(time.process_time() - started)
    return {"size": size, "parameters": sum(p.numel() for p in model.parameters()),
            "flops_per_step": counter.get_total_flops(), "operations_per_step": operations.count,
            "cpu_seconds_per_step": statistics.median(seconds),
            "cpu_seconds_spread": [min(seconds), max(seconds)]}


def estimate(measured: dict[str, Any], steps: int, tflops: float, launch_us: float
             ) -> dict[str, Any]:
    arithmetic = measured["flops_per_step"] / (tflops * 1e12)
    launches = measured["operations_per_step"] * launch_us * 1e-6
    per_step = max(arithmetic, launches)
    return {"steps": steps, "gpu_seconds_per_step_estimate": per_step,
            "bound_by": "arithmetic" if arithmetic >= launches else "kernel launches",
            "gpu_hours_estimate": per_step * steps / 3600,
            "cpu_hours_measured_rate": measured["cpu_seconds_per_step"] * steps / 3600}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, nargs="+", default=[Recipe().steps, 20000])
    parser.add_argument("--gpu-tflops", type=float, default=100.0,
                        help="sustained bf16 TFLOP/s assumed for the estimate (default 100: about "
                             "a tenth of an H100's dense peak)")
    parser.add_argument("--launch-us", type=float, default=10.0,
                        help="microseconds per aten operation on a GPU (eager PyTorch)")
    parser.add_argument("--out", type=Path)
    arguments = parser.parse_args(argv)
    torch.set_num_threads(1)
    batch_size = Recipe().batch_size
    results = []
    for size in ("tiny", "paper"):
        measured = measure(size, batch_size, arguments.rounds)
        measured["estimates"] = [estimate(measured, steps, arguments.gpu_tflops,
                                          arguments.launch_us) for steps in arguments.steps]
        results.append(measured)
        print(f"{size}: {measured['parameters'] / 1e6:.1f} M parameters, "
              f"{measured['flops_per_step'] / 1e12:.2f} TFLOP and "
              f"{measured['operations_per_step']} operations per step, "
              f"{measured['cpu_seconds_per_step']:.1f} CPU s per step (1 thread, measured)")
        for item in measured["estimates"]:
            print(f"  {item['steps']} steps: CPU {item['cpu_hours_measured_rate']:.1f} h at the "
                  f"measured rate; GPU about {item['gpu_hours_estimate'] * 60:.0f} min "
                  f"(estimate, bound by {item['bound_by']})")
    document = {"batch": {"utterances": batch_size, "frames": FRAMES, "labels": LABELS},
                "assumptions": {"gpu_tflops": arguments.gpu_tflops,
                                "launch_us": arguments.launch_us},
                "sizes": results, "torch": torch.__version__}
    if arguments.out:
        arguments.out.parent.mkdir(parents=True, exist_ok=True)
        arguments.out.write_text(json.dumps(document, indent=1))


if __name__ == "__main__":
    main()
