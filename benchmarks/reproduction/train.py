"""Train one reproduction run: ``python -m benchmarks.reproduction.train baseline-seed0``.

Writes ``runs/<name>/``:

- ``config.json``: the experiment, the full model config, the corpus, torch version and threads;
- ``log.jsonl``: every :data:`LOG_EVERY` steps the loss (and its parts), learning rate, gradient
  norm, wall-clock and CPU seconds;
- ``monitor.jsonl``: one :class:`attnprobe.monitor.MonitorRecord` per probe of the
  :class:`attnprobe.FlipMonitor` (per-block reversal scores, dominance ratios, ...);
- ``checkpoints/step-XXXXXX.pt``: ``{"step", "model_config", "state_dict", "feature_mean",
  "feature_std"}`` with the floating tensors in float16 and the training corpus's per-mel-bin
  statistics the inputs were standardised with, every ``checkpoint_every`` steps and at the end;
- ``summary.json``, written last: the run is finished when it exists (the sweep skips it then).

The same experiment, corpus, torch build and thread count give bit-identical runs: the seed fixes
the initial weights, dropout and the batch order, and the monitor draws no random numbers.

``--device cuda`` trains on a GPU with autocast (bf16, or fp16 with a gradient scaler;
:mod:`benchmarks.reproduction.device`), ``--size paper`` builds the paper's 12 x 512 encoder
(:meth:`ConformerAEDConfig.paper`) instead of the CPU runs' 6 x 96; the CPU default stays float32
and tiny. GPU runs are not bit-identical (cuDNN / cuBLAS pick their own kernels).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from attnprobe.batch import SpeechBatch
from attnprobe.models import ConformerAED, ConformerAEDConfig
from attnprobe.monitor import FlipEvent, FlipMonitor
from benchmarks.corpus.training_set import TrainingSplit, build_training_set

from .data import collate, fixed_examples, load_split, training_batches
from .device import PRECISIONS, DeviceUnavailableError, Placement, resolve_placement
from .experiments import MODEL_SIZES, Experiment, Recipe, experiment
from .scoring import character_error_rate

LOG_EVERY = 10
SUMMARY_NAME = "summary.json"


def build_model(run: Experiment) -> ConformerAED:
    """The run's model (the recipe's size: :meth:`ConformerAEDConfig.tiny` or ``.paper``),
    initialised from its seed."""
    torch.manual_seed(run.seed)
    sizes = {"tiny": ConformerAEDConfig.tiny, "paper": ConformerAEDConfig.paper}
    return ConformerAED(sizes[run.recipe.model_size](**run.model_overrides()))


def learning_rate_factor(recipe: Recipe, step: int) -> float:
    """Multiplier of ``peak_learning_rate`` for optimiser step ``step`` (1-based)."""
    progress = step / recipe.steps
    if recipe.schedule == "one-cycle":
        if progress <= 0.45:
            return 0.1 + 0.9 * progress / 0.45
        if progress <= 0.9:
            return 1.0 - 0.9 * (progress - 0.45) / 0.45
        return 0.1 * 0.01 ** ((progress - 0.9) / 0.1)
    warmup = max(1.0, recipe.warmup_share * recipe.steps)
    if step <= warmup:
        return step / warmup
    return 1.0 - 0.99 * (step - warmup) / max(1.0, recipe.steps - warmup)


def save_checkpoint(model: ConformerAED, step: int, path: Path,
                    feature_mean: torch.Tensor | None = None,
                    feature_std: torch.Tensor | None = None) -> None:
    """Float16 state dict, the model config and the feature statistics the model was trained with
    (``(80,)`` each, or ``None``: each utterance normalised by itself), written atomically."""
    state = {name: (tensor.detach().half() if tensor.is_floating_point() else tensor.detach()).cpu()
             for name, tensor in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save({"step": step, "model_config": model.config.to_dict(), "state_dict": state,
                "feature_mean": None if feature_mean is None else feature_mean.tolist(),
                "feature_std": None if feature_std is None else feature_std.tolist()}, partial)
    os.replace(partial, path)


def load_checkpoint(path: str | Path) -> tuple[ConformerAED, int]:
    """A model (float32, eval mode) from :func:`save_checkpoint`, and its step."""
    saved = torch.load(path, weights_only=True)
    model = ConformerAED(ConformerAEDConfig.from_dict(saved["model_config"]))
    model.load_state_dict({name: tensor.float() if tensor.is_floating_point() else tensor
                           for name, tensor in saved["state_dict"].items()})
    return model.eval(), int(saved["step"])


def train(run: Experiment, run_dir: Path, train_split: TrainingSplit, dev_split: TrainingSplit,
          *, corpus_path: str = "", report: Callable[[str], None] = print,
          placement: Placement | None = None) -> dict[str, Any]:
    """Train ``run`` into ``run_dir`` (emptied first) and return the summary it wrote.

    ``placement`` (default: CPU, float32) says where and in which precision
    (:mod:`benchmarks.reproduction.device`).
    """
    recipe = run.recipe
    placement = placement or resolve_placement("cpu", "float32")
    torch.set_num_threads(recipe.threads)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    (run_dir / "checkpoints").mkdir(parents=True)
    model = build_model(run).to(placement.device)
    (run_dir / "config.json").write_text(json.dumps({
        "experiment": run.to_dict(), "model_config": model.config.to_dict(), "corpus": corpus_path,
        "torch": torch.__version__, "threads": recipe.threads, **placement.to_dict(),
        "parameters": sum(parameter.numel() for parameter in model.parameters())}, indent=1))
    dev_examples = fixed_examples(dev_split, len(dev_split) // recipe.concatenate, recipe.concatenate)
    flips: list[FlipEvent] = []

    def on_flip(event: FlipEvent) -> None:
        flips.append(event)
        report(f"{run.name}: {event.message()}")

    monitor = FlipMonitor(model, collate(dev_examples[: recipe.probe_examples]),
                          every=recipe.monitor_every, on_flip=on_flip,
                          log_path=run_dir / "monitor.jsonl", projections=recipe.monitor_projections,
                          with_gradient_maps=recipe.monitor_gradient_maps)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.peak_learning_rate,
                                  weight_decay=recipe.weight_decay)
    scaler = placement.gradient_scaler()
    batches = training_batches(train_split, recipe.batch_size, recipe.concatenate, run.seed)
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    monitor_seconds = monitor.probe(0).seconds
    status, parts = "finished", {}
    model.train()
    with (run_dir / "log.jsonl").open("w") as log:
        for step in range(1, recipe.steps + 1):
            batch = to_device(next(batches), placement.device)
            model.set_training_step(step - 1)
            learning_rate = recipe.peak_learning_rate * learning_rate_factor(recipe, step)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate
            with placement.autocast():
                loss, parts = model.loss(batch.inputs, batch.input_lengths, batch.labels,
                                         batch.label_lengths)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                status = f"diverged at step {step} (loss {loss_value})"
                break
            optimizer.zero_grad(set_to_none=True)
            gradient_norm = optimizer_step(model, optimizer, loss, recipe.gradient_clip, scaler)
            if step % LOG_EVERY == 0 or step == recipe.steps:
                log.write(json.dumps({
                    "step": step, "loss": loss_value,
                    **{name: float(value) for name, value in parts.items()},
                    "learning_rate": learning_rate, "gradient_norm": float(gradient_norm),
                    "wall_s": time.perf_counter() - wall_start,
                    "cpu_s": time.process_time() - cpu_start}) + "\n")
                log.flush()
            record = monitor.step(step) if step < recipe.steps else monitor.probe(step)
            if record is not None:
                monitor_seconds += record.seconds
                report(f"{run.name} step {step}: loss {loss_value:.3f}, reversal scores "
                       + " ".join(f"{score:+.2f}" for score in record.reversal_scores))
            if step % recipe.checkpoint_every == 0 or step == recipe.steps:
                save_checkpoint(model, step, run_dir / "checkpoints" / f"step-{step:06d}.pt",
                                train_split.mean, train_split.std)
    wall_s, cpu_s = time.perf_counter() - wall_start, time.process_time() - cpu_start
    last = monitor.history[-1]
    summary = {
        "name": run.name, "group": run.group, "seed": run.seed, "status": status,
        "steps": recipe.steps, "wall_s": wall_s, "cpu_s": cpu_s, "monitor_wall_s": monitor_seconds,
        "final_loss": {name: float(value) for name, value in parts.items()},
        **placement.to_dict(),
        "dev_character_error_rate": character_error_rate(model, dev_examples),
        "first_flip": ({"step": flips[0].step, "block": flips[0].reversed_at} if flips else None),
        "final_reversed_at": last.reversed_at,
        "final_reversal_scores": last.reversal_scores,
        "final_cross_attention_monotonicity": last.cross_attention_monotonicity,
    }
    (run_dir / SUMMARY_NAME).write_text(json.dumps(summary, indent=1))
    return summary


def to_device(batch: SpeechBatch, device: torch.device) -> SpeechBatch:
    """``batch`` with every tensor on ``device`` (unchanged on the CPU)."""
    if device.type == "cpu":
        return batch
    return SpeechBatch(batch.inputs.to(device), batch.input_lengths.to(device),
                       None if batch.labels is None else batch.labels.to(device),
                       None if batch.label_lengths is None else batch.label_lengths.to(device))


def optimizer_step(model: ConformerAED, optimizer: torch.optim.Optimizer, loss: torch.Tensor,
                   clip: float, scaler: torch.amp.GradScaler | None) -> torch.Tensor:
    """Backward, clip the global gradient norm to ``clip``, step; with a float16 ``scaler`` the
    loss is scaled and the gradients unscaled before clipping. Returns the norm before clipping."""
    if scaler is None:
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        return norm
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    scaler.step(optimizer)
    scaler.update()
    return norm


def prepare_corpus(recipe: Recipe, corpus: str | None) -> str:
    """The corpus folder: ``corpus`` if given, else built (or found cached) from the recipe."""
    if corpus is not None:
        return corpus
    spec = recipe.corpus
    return str(build_training_set(spec.out_dir, spec.n_train, spec.n_dev, seed=spec.seed))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train one reproduction run (see experiments.py).")
    parser.add_argument("experiment", help="e.g. baseline-seed0, aux-ctc-seed3")
    parser.add_argument("--runs-dir", default="runs", help="parent of the run folder (default: runs)")
    parser.add_argument("--corpus", help="corpus folder holding index.json (default: build or find "
                                         "the recipe's corpus under data/train)")
    parser.add_argument("--steps", type=int, help="override the recipe's step count (smoke runs)")
    add_placement_arguments(parser)
    arguments = parser.parse_args(argv)
    try:
        placement = resolve_placement(arguments.device, arguments.precision)
    except (DeviceUnavailableError, ValueError) as error:
        parser.error(str(error))
    run = experiment(arguments.experiment, recipe_from(arguments))
    corpus = prepare_corpus(run.recipe, arguments.corpus)
    summary = train(run, Path(arguments.runs_dir) / run.name, load_split(corpus, "train"),
                    load_split(corpus, "dev"), corpus_path=corpus,
                    report=lambda line: print(line, flush=True), placement=placement)
    json.dump(summary, sys.stdout, indent=1)
    print()


def add_placement_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device``, ``--precision`` and ``--size``, shared with ``sweep.py``."""
    parser.add_argument("--device", default="cpu",
                        help="cpu (default), cuda or cuda:<index>; a clear error where CUDA is absent")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="autocast precision: auto (bf16 on a GPU that has it, else fp16; "
                             "float32 on the CPU), float32, bf16 or fp16")
    parser.add_argument("--size", default="tiny", choices=MODEL_SIZES,
                        help="tiny (6 x 96, the CPU runs) or paper (12 x 512, the paper's model)")


def recipe_from(arguments: argparse.Namespace) -> Recipe:
    """The recipe with the command line's ``--steps`` and ``--size``."""
    overrides: dict[str, Any] = {"model_size": arguments.size}
    if arguments.steps is not None:
        overrides["steps"] = arguments.steps
    return Recipe(**overrides)


if __name__ == "__main__":
    main()
