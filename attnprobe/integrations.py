"""Training-framework callbacks that call a :class:`attnprobe.FlipMonitor` after every step.

Both classes are created on first use, so importing attnprobe never imports transformers or
lightning::

    from attnprobe.integrations import FlipMonitorTrainerCallback        # Hugging Face Trainer
    trainer = Trainer(model=model, ..., callbacks=[FlipMonitorTrainerCallback(monitor)])

    from attnprobe.integrations import FlipMonitorLightningCallback      # Lightning
    pl.Trainer(callbacks=[FlipMonitorLightningCallback(monitor)])

Each passes the framework's global step (optimiser steps taken so far) to ``monitor.step``, which
probes when it is a multiple of the monitor's ``every``. The monitor holds the model it probes: give
it the module the framework trains (for Lightning, the ``LightningModule``'s inner model that
attnprobe has an adapter for), not the DDP wrapper.

Under DDP both frameworks call the callback on every rank at the same global step, which is what
the monitor needs: rank 0 probes and shares the record, and the verdict is logged once (see
:mod:`attnprobe.monitor`; ``tests/test_distributed_monitor.py`` runs both under ``torchrun``).
"""

from __future__ import annotations

from typing import Any

_created: dict[str, type] = {}


def _trainer_callback_class() -> type:
    try:
        from transformers import TrainerCallback
    except ImportError as error:
        raise ImportError("FlipMonitorTrainerCallback needs Hugging Face transformers: "
                          "pip install 'attnprobe[hf]'") from error

    class FlipMonitorTrainerCallback(TrainerCallback):
        """A ``transformers.TrainerCallback`` that calls ``monitor.step(state.global_step)``
        at the end of every optimiser step."""

        def __init__(self, monitor: Any) -> None:
            self.monitor = monitor

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.monitor.step(state.global_step)

    FlipMonitorTrainerCallback.__module__ = __name__
    return FlipMonitorTrainerCallback


def _lightning_callback_class() -> type:
    try:
        from lightning.pytorch import Callback
    except ImportError:
        try:
            from pytorch_lightning import Callback
        except ImportError as error:
            raise ImportError("FlipMonitorLightningCallback needs Lightning: pip install lightning "
                              "(or the older pytorch_lightning)") from error

    class FlipMonitorLightningCallback(Callback):
        """A Lightning ``Callback`` that calls ``monitor.step(trainer.global_step)`` after every
        training batch. The global step counts optimiser steps and the monitor probes a step once,
        so gradient accumulation still probes once per ``every`` optimiser steps. Batches before
        the first optimiser step (global step 0 under gradient accumulation) are skipped, as the
        Hugging Face callback never sees them: call ``monitor.step(0)`` before ``fit`` to probe
        the initial model."""

        def __init__(self, monitor: Any) -> None:
            self.monitor = monitor

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                               batch_idx: int) -> None:
            if trainer.global_step > 0:
                self.monitor.step(trainer.global_step)

    FlipMonitorLightningCallback.__module__ = __name__
    return FlipMonitorLightningCallback


_FACTORIES = {
    "FlipMonitorTrainerCallback": _trainer_callback_class,
    "FlipMonitorLightningCallback": _lightning_callback_class,
}


def __getattr__(name: str) -> type:
    factory = _FACTORIES.get(name)
    if factory is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}; it offers "
                             f"{', '.join(_FACTORIES)}")
    if name not in _created:
        _created[name] = factory()
    return _created[name]


__all__ = list(_FACTORIES)
