"""One teacher-forced forward pass, ready for the labels' backward passes.

A :class:`LabelForward` runs a model (or any callable) teacher-forced and returns a
:class:`ForwardPass`: the per-label log-probabilities ``(batch, labels)`` still attached to the
graph of the scored input ``(batch, frames, *features)``. :func:`function_forward` builds one from
a plain callable; :func:`attnprobe.alignment.scoring.model_forward.model_forward` from a model and
its runner.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from attnprobe.errors import GradientUnavailableError, InputError
from attnprobe.lengths import checked_lengths
from attnprobe.vjp import require_grad_mode

from .label_batches import counting_saved_bytes

InputTransform = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(inputs, frame_lengths) -> inputs``: a change of the scored input before the forward pass
(noise for SmoothGrad, a point on the path for Integrated Gradients). Shapes are kept."""


@dataclass
class ForwardPass:
    """One teacher-forced forward pass, ready for backward.

    Attributes:
        label_log_probs: ``(batch, labels)`` ``log p(a_s | a_<s, X)`` (or a CTC model's per-label
            term), attached to the graph of ``target``.
        target: ``(batch, frames, *features)`` the scored input, in the graph of
            ``label_log_probs`` (a leaf, or the encoder input as the model computed it).
        frame_lengths: ``(batch,)`` valid frames of ``target``.
        label_lengths: ``(batch,)`` valid labels.
        saved_bytes: bytes autograd saved for the backward during this pass.
    """

    label_log_probs: torch.Tensor
    target: torch.Tensor
    frame_lengths: torch.Tensor
    label_lengths: torch.Tensor
    saved_bytes: int = 0


@dataclass
class LabelForward:
    """Runs the model teacher-forced and returns a :class:`ForwardPass` on the scored input.

    Build it with :func:`function_forward` (any callable) or
    :func:`attnprobe.alignment.scoring.model_forward.model_forward` (a model and its runner).

    Attributes:
        run: ``transform -> ForwardPass``; ``transform`` (or ``None``) changes the scored input
            before the model sees it.
        subsampling: input feature frames per frame of the scored input (1 for the features).
    """

    run: Callable[[InputTransform | None], ForwardPass]
    subsampling: int = 1

    def __call__(self, transform: InputTransform | None = None) -> ForwardPass:
        require_grad_mode("gradient scoring")
        with torch.enable_grad(), counting_saved_bytes() as counter:
            result = self.run(transform)
        result.saved_bytes = counter.total
        check_forward(result)
        return result


def function_forward(
    log_probs_fn: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    *,
    input_lengths: torch.Tensor | None = None,
    label_lengths: torch.Tensor | None = None,
) -> LabelForward:
    """Score a plain callable ``log_probs_fn(inputs) -> (batch, labels)``.

    Args:
        log_probs_fn: teacher-forced per-label log-probabilities, differentiable in ``inputs``.
        inputs: ``(batch, frames, *features)`` floating point.
        input_lengths: ``(batch,)`` valid frames; all frames when ``None``.
        label_lengths: ``(batch,)`` valid labels; all labels when ``None``.
    """
    require_float_inputs(inputs, "inputs")
    frames = frame_lengths_for(input_lengths, inputs)

    def run(transform: InputTransform | None) -> ForwardPass:
        target = inputs.detach()
        if transform is not None:
            target = transform(target, frames)
        # A copy, so that inputs made under torch.inference_mode() can require grad.
        target = target.detach().clone().requires_grad_(True)
        log_probs = log_probs_fn(target)
        labels = label_lengths_for(label_lengths, log_probs)
        return ForwardPass(log_probs, target, frames, labels)

    return LabelForward(run)


def check_forward(result: ForwardPass) -> None:
    """Shapes and gradient flow of a forward pass, with errors that name the fix."""
    log_probs = result.label_log_probs
    if log_probs.dim() != 2 or log_probs.shape[0] != result.target.shape[0]:
        raise InputError(
            f"label log-probabilities must be (batch, labels) = ({result.target.shape[0]}, "
            f"labels), got {tuple(log_probs.shape)}; return one log p(a_s | a_<s, X) per "
            f"reference label")
    if int(result.label_lengths.min()) < 1 or log_probs.shape[1] == 0:
        raise InputError("an empty transcription has no label to score; drop that utterance or "
                         "give its reference labels")
    if not log_probs.requires_grad:
        raise GradientUnavailableError(
            "the label log-probabilities do not depend on the scored input through autograd: the "
            "model ran under torch.no_grad() inside, detached a tensor, or ignores the input; "
            "remove the no_grad / detach from the model's teacher-forced path")


def require_float_inputs(inputs: torch.Tensor, name: str) -> None:
    """Gradients exist only for floating-point inputs."""
    if not inputs.is_floating_point():
        raise InputError(
            f"{name} are {inputs.dtype}, which cannot require gradients (e.g. integer token ids); "
            f"score a floating-point representation instead: the features, or the encoder input "
            f"after the frontend (input='encoder_input')")


def label_lengths_for(lengths: torch.Tensor | None, log_probs: torch.Tensor) -> torch.Tensor:
    """``(batch,)`` valid labels of ``log_probs (batch, labels)``; all when ``None``."""
    if lengths is not None and bool((torch.as_tensor(lengths) < 1).any()):
        raise InputError("an empty transcription has no label to score; drop that utterance or "
                         "give its reference labels")
    try:
        return checked_lengths(lengths, log_probs.shape[0], log_probs.shape[-1], "label_lengths",
                               log_probs.device)
    except ValueError as error:
        raise InputError(str(error)) from None


def frame_lengths_for(lengths: torch.Tensor | None, target: torch.Tensor) -> torch.Tensor:
    """``(batch,)`` valid frames of ``target (batch, frames, ...)``; all when ``None``."""
    try:
        return checked_lengths(lengths, target.shape[0], target.shape[1], "frame_lengths",
                               target.device, minimum=0)
    except ValueError as error:
        raise InputError(str(error)) from None
