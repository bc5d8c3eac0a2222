"""One rank of the FlipMonitor-under-DDP tests: ``torchrun --nproc-per-node 2 -m
tests.distributed_monitor {plain,trainer,lightning} OUT`` from the repository root.

Trains the tiny Conformer AED of ``test_monitor`` for four optimiser steps on CPU (gloo), with a
reversal planted after encoder block 1 from step 3 on (rank 0 only: the monitor must take rank 0's
word) and a monitor probing every 2 steps; each rank writes what its monitor saw to
``OUT/rank-<k>.json`` and rank 0's monitor also logs to ``OUT/monitor.jsonl``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from attnprobe.monitor import FlipMonitor
from tests.test_monitor import probe_batch, tiny_model, training_batch
from tests.test_monitor_frameworks import ExampleDataset, LossModel, stack

STEPS = 4
PLANT_BLOCK, PLANT_STEP = 1, 3


def planted(model: torch.nn.Module, monitor: FlipMonitor) -> Any:
    """From PLANT_STEP on, rank 0's copy of the encoder reverses time after PLANT_BLOCK when the
    monitor probes (training itself is untouched)."""
    if int(os.environ["RANK"]) != 0:
        return
    original = monitor.measure

    def measure(step: int) -> Any:
        if step < PLANT_STEP:
            return original(step)
        handle = model.encoder.blocks[PLANT_BLOCK].register_forward_hook(
            lambda module, inputs, output: output.flip(1))
        try:
            return original(step)
        finally:
            handle.remove()

    monitor.measure = measure  # type: ignore[method-assign]


def new_monitor(model: torch.nn.Module, out: Path, events: list) -> FlipMonitor:
    monitor = FlipMonitor(model, probe_batch(), every=2, on_flip=events.append,
                          log_path=out / "monitor.jsonl", timeout_s=60)
    planted(model, monitor)
    return monitor


def plain(out: Path, events: list) -> FlipMonitor:
    dist.init_process_group("gloo")
    model = tiny_model()
    monitor = new_monitor(model, out, events)
    wrapped = torch.nn.parallel.DistributedDataParallel(LossModel(model))
    optimizer = torch.optim.SGD(wrapped.parameters(), lr=1e-3)
    for step in range(1, STEPS + 1):
        features, lengths, labels, label_lengths = training_batch(step * 2 + dist.get_rank())
        loss = wrapped(features, lengths, labels, label_lengths)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        monitor.step(step)
    return monitor


def hugging_face(out: Path, events: list) -> FlipMonitor:
    import transformers

    from attnprobe.integrations import FlipMonitorTrainerCallback

    model = tiny_model()
    monitor = new_monitor(model, out, events)
    arguments = transformers.TrainingArguments(
        output_dir=str(out / "trainer"), max_steps=STEPS, per_device_train_batch_size=1,
        learning_rate=1e-3, report_to=[], save_strategy="no", logging_strategy="no",
        disable_tqdm=True, use_cpu=True, ddp_backend="gloo", dataloader_num_workers=0, seed=0)
    trainer = transformers.Trainer(model=LossModel(model), args=arguments,
                                   train_dataset=ExampleDataset(STEPS * 2), data_collator=stack,
                                   callbacks=[FlipMonitorTrainerCallback(monitor)])
    trainer.train()
    assert trainer.state.global_step == STEPS
    return monitor


def lightning(out: Path, events: list) -> FlipMonitor:
    import lightning.pytorch as pl

    from attnprobe.integrations import FlipMonitorLightningCallback

    model = tiny_model()
    monitor = new_monitor(model, out, events)

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def training_step(self, batch: dict[str, torch.Tensor], index: int) -> torch.Tensor:
            return self.model.loss(**batch)[0]

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=1e-3)

    loader = torch.utils.data.DataLoader(ExampleDataset(STEPS * 2), batch_size=1,
                                         collate_fn=stack)
    trainer = pl.Trainer(max_steps=STEPS, accelerator="cpu", devices=2, strategy="ddp",
                         callbacks=[FlipMonitorLightningCallback(monitor)], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(Module(), loader)
    return monitor


def rank_0_never_probes(out: Path, events: list) -> FlipMonitor:
    """Rank 1 calls ``step``, rank 0 does not: rank 1 must give up after the monitor's timeout,
    not wait forever."""
    dist.init_process_group("gloo")
    monitor = FlipMonitor(tiny_model(), probe_batch(), every=2, on_flip=events.append,
                          timeout_s=3)
    if dist.get_rank() == 1:
        try:
            monitor.step(2)
        except RuntimeError as error:
            (out / "rank-1-error.txt").write_text(str(error))
    dist.barrier()
    return monitor


def main() -> None:
    loop, out = sys.argv[1], Path(sys.argv[2])
    torch.set_num_threads(1)
    events: list = []
    monitor = {"plain": plain, "trainer": hugging_face, "lightning": lightning,
               "rank-0-never-probes": rank_0_never_probes}[loop](out, events)
    rank = dist.get_rank()
    (out / f"rank-{rank}.json").write_text(json.dumps({
        "steps": [record.step for record in monitor.history],
        "reversed_at": [record.reversed_at for record in monitor.history],
        "flip": None if monitor.flip is None else [monitor.flip.step, monitor.flip.reversed_at],
        "on_flip_calls": len(events)}))


if __name__ == "__main__":
    main()
