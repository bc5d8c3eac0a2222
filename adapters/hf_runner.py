"""What the Hugging Face runners share: feeding a :class:`~attnprobe.batch.SpeechBatch` to a
model in the dtype and layout it wants, with errors that say how to fix the input."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from attnprobe.errors import CapabilityError, InputError

from .runner import Runner


class HuggingFaceRunner(Runner):
    """Base of the Hugging Face runners. A subclass sets ``locate``, the same function its family's
    site map finds the stacks with (``staticmethod(family_stacks)``)."""

    locate: Callable[[nn.Module], Any]

    def stacks(self) -> Any:
        """The family's stacks in the model (its encoder, decoder, ...)."""
        found = self.locate(self.model)
        assert found is not None, "the runner is only paired with a model its site map matched"
        return found


def model_input(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """``inputs`` on the model's device and in its floating dtype; the cast stays differentiable."""
    parameter = next(model.parameters(), None)
    if parameter is None:
        return inputs
    return inputs.to(device=parameter.device, dtype=parameter.dtype)


def require_rank(inputs: torch.Tensor, rank: int, layout: str, family: str, fix: str) -> None:
    """Raise :class:`InputError` unless ``inputs`` has ``rank`` dimensions."""
    if inputs.dim() != rank:
        raise InputError(f"the {family} adapter takes batch.inputs as {layout}, got shape "
                         f"{tuple(inputs.shape)}; {fix}")


def require_size(inputs: torch.Tensor, size: int, what: str, family: str) -> None:
    """Raise :class:`InputError` unless the last axis of ``inputs`` holds ``size`` ``what``."""
    if inputs.shape[-1] != size:
        raise InputError(f"this {family} model takes {size} {what} per frame, but batch.inputs "
                         f"has {inputs.shape[-1]} (shape {tuple(inputs.shape)}); extract the "
                         f"features with the checkpoint's own feature extractor")


def feature_extractor_default(class_name: str, parameter: str) -> Any:
    """The default of ``parameter`` in the constructor of transformers' ``class_name``."""
    import transformers

    constructor = inspect.signature(getattr(transformers, class_name).__init__)
    return constructor.parameters[parameter].default


def no_decoder_error(model: nn.Module, ctc_class: str, has_ctc_head: bool) -> CapabilityError:
    """What ``label_log_probs`` raises for an encoder-only family: where its label scores are."""
    name = type(model).__name__
    where = ("use runner.ctc_log_probs(batch) for its per-frame label posteriors" if has_ctc_head
             else f"load {ctc_class} and use runner.ctc_log_probs(batch) for per-frame label "
                  f"posteriors")
    return CapabilityError(f"{name} has no attention decoder to teacher-force labels with; "
                           f"{where}, or attnprobe.probes.frame_mapping, which needs no labels")
