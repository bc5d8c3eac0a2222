"""Switches of a model that probes flip for the duration of a measurement, and restore exactly:
eval mode (no dropout, fixed batch-norm statistics), frozen parameters, and the global random
state (for passes the user did not ask for, such as discovering a model's structure)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[None]:
    """Switch ``model`` to eval mode, then restore every submodule's own training flag."""
    flags = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, training in flags.items():
            module.training = training


@contextmanager
def private_random_state(model: nn.Module) -> Iterator[None]:
    """Restore the global random state (CPU and the model's CUDA devices) afterwards."""
    devices = sorted({parameter.device.index or 0 for parameter in model.parameters()
                      if parameter.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        yield


@contextmanager
def side_pass(model: nn.Module) -> Iterator[None]:
    """A forward pass on the side (a trial, a count): eval mode, no gradients, and the global
    random state as it was before, whatever the pass draws."""
    with evaluation_mode(model), torch.no_grad(), private_random_state(model):
        yield


@contextmanager
def frozen_parameters(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Parameters stop requiring grad for the duration (gradients with respect to the input need
    no weight gradients, and autograd then saves less); the flags are restored after."""
    frozen = [parameter for parameter in model.parameters()
              if enabled and parameter.requires_grad]
    for parameter in frozen:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter in frozen:
            parameter.requires_grad_(True)
