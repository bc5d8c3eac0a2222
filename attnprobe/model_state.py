"""Switches of a model that probes flip for the duration of a measurement, and restore exactly:
eval mode (no dropout, fixed batch-norm statistics) and frozen parameters."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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
