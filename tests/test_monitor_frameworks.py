"""FlipMonitor inside real training frameworks: a Hugging Face ``Trainer`` and a Lightning
``Trainer`` train a tiny Conformer AED for a few optimiser steps (with gradient accumulation) and
the callbacks probe at the monitor's steps, once each, without changing what is trained."""

from __future__ import annotations

import importlib
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from attnprobe.monitor import FlipMonitor

from .test_monitor import probe_batch, tiny_model, training_batch

STEPS = 4
ACCUMULATION = 2


def quiet_monitor(model: nn.Module | None = None) -> FlipMonitor:
    return FlipMonitor(model if model is not None else tiny_model(), probe_batch(), every=2,
                       on_flip=lambda event: None)


def lightning_package() -> ModuleType:
    for name in ("lightning.pytorch", "pytorch_lightning"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    pytest.skip("Lightning is not installed (pip install lightning); the Lightning callback is "
                "created only where Lightning can be imported")


class ExampleDataset(torch.utils.data.Dataset):
    """One utterance per item, from the same random batches as the plain-loop tests."""

    def __init__(self, count: int) -> None:
        self.items = []
        for step in range(count):
            features, lengths, labels, label_lengths = training_batch(step)
            self.items.append({"features": features[0], "feature_lengths": lengths[0],
                               "labels": labels[0], "label_lengths": label_lengths[0]})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.items[index]


def stack(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {key: torch.stack([item[key] for item in items]) for key in items[0]}


class LossModel(nn.Module):
    """What a Hugging Face Trainer wants: ``forward(**batch)`` returning ``{"loss": ...}``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor, feature_lengths: torch.Tensor, labels: torch.Tensor,
                label_lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        loss, _ = self.model.loss(features, feature_lengths, labels, label_lengths)
        return {"loss": loss}


def test_a_hugging_face_trainer_run_probes_at_the_monitors_steps(tmp_path) -> None:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate", reason="the Hugging Face Trainer needs accelerate")
    from attnprobe.integrations import FlipMonitorTrainerCallback

    assert issubclass(FlipMonitorTrainerCallback, transformers.TrainerCallback)
    model = tiny_model()
    monitor = quiet_monitor(model)
    arguments = transformers.TrainingArguments(
        output_dir=str(tmp_path), max_steps=STEPS, per_device_train_batch_size=1,
        gradient_accumulation_steps=ACCUMULATION, learning_rate=1e-3, report_to=[],
        save_strategy="no", logging_strategy="no", disable_tqdm=True, use_cpu=True,
        dataloader_num_workers=0, seed=0)
    trainer = transformers.Trainer(model=LossModel(model), args=arguments,
                                   train_dataset=ExampleDataset(STEPS * ACCUMULATION),
                                   data_collator=stack,
                                   callbacks=[FlipMonitorTrainerCallback(monitor)])
    before = [parameter.detach().clone() for parameter in model.parameters()]
    trainer.train()
    assert trainer.state.global_step == STEPS
    assert [record.step for record in monitor.history] == [2, 4]
    assert all(len(record.reversal_scores) == 3 for record in monitor.history)
    assert any(not torch.equal(old, new) for old, new in zip(before, model.parameters()))


def test_a_lightning_trainer_run_probes_once_per_optimiser_step() -> None:
    lightning = lightning_package()
    from attnprobe.integrations import FlipMonitorLightningCallback

    assert issubclass(FlipMonitorLightningCallback, lightning.Callback)
    model = tiny_model()
    monitor = quiet_monitor(model)

    class Module(lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def training_step(self, batch: dict[str, torch.Tensor], batch_index: int) -> torch.Tensor:
            loss, _ = self.model.loss(**batch)
            return loss

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=1e-3)

    loader = torch.utils.data.DataLoader(ExampleDataset(STEPS * ACCUMULATION), batch_size=1,
                                         collate_fn=stack)
    trainer = lightning.Trainer(
        max_steps=STEPS, accumulate_grad_batches=ACCUMULATION, accelerator="cpu", devices=1,
        callbacks=[FlipMonitorLightningCallback(monitor)], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Module(), loader)
    assert trainer.global_step == STEPS
    # Each optimiser step spans two batches; the monitor probes each multiple of 2 once.
    assert [record.step for record in monitor.history] == [2, 4]


def test_the_lightning_callback_probes_a_repeated_global_step_once_and_not_step_0() -> None:
    lightning_package()
    from attnprobe.integrations import FlipMonitorLightningCallback

    monitor = quiet_monitor()
    callback = FlipMonitorLightningCallback(monitor)
    for batch_index, global_step in enumerate([0, 1, 1, 2, 2, 3, 3, 4, 4]):
        callback.on_train_batch_end(SimpleNamespace(global_step=global_step), monitor.model, None,
                                    None, batch_index)
    assert [record.step for record in monitor.history] == [2, 4]
