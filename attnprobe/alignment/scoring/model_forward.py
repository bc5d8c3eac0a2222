"""Teacher-forced passes of a model, ready for the labels' gradients: the model-level
:class:`~attnprobe.alignment.scoring.forward.LabelForward`.

Scoring the input *features* (``gradient_input="features"``, e.g. 10 ms frames) or the *encoder
input* after the frontend (``gradient_input="encoder_input"``, e.g. 60 ms frames) works on any
model whose runner has ``label_log_probs`` (attention decoders) or ``ctc_log_probs`` (CTC models,
whose per-label term is :func:`~attnprobe.alignment.scoring.ctc_term.ctc_label_log_probs`).
Because the gradient is taken at the input, a model whose encoder reverses time internally aligns
just as well.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from attnprobe.adapters import Adapter, Runner, SiteBinding, SiteMap, resolve_adapter
from attnprobe.batch import BatchForm, SpeechBatch, as_speech_batch
from attnprobe.capture import pick_tensor, replace_tensor
from attnprobe.errors import CapabilityError, InputError
from attnprobe.model_state import evaluation_mode, frozen_parameters
from attnprobe.sites import FRONTEND_SITE
from attnprobe.trace import trace

from ..settings import AlignmentSettings, GradientInput, encoder_block
from .block_output import block_output_forward
from .ctc_term import ctc_label_log_probs
from .forward import ForwardPass, InputTransform, LabelForward, require_float_inputs


def model_forward(
    model: nn.Module,
    batch: BatchForm,
    *,
    gradient_input: GradientInput = "auto",
    adapter: Any = None,
    runner: Any = None,
    subsampling: int | None = None,
    ctc_blank: int | None = None,
) -> LabelForward:
    """A :class:`LabelForward` that teacher-forces ``batch`` through ``model`` via its runner.

    The per-label quantity is the runner's ``label_log_probs`` (attention decoders); a model
    with only a CTC head (``ctc_log_probs``) gets
    :func:`~attnprobe.alignment.scoring.ctc_term.ctc_label_log_probs` with blank id ``ctc_blank``
    (default: the runner's ``ctc_blank``).

    Each pass runs in eval mode (restored after) with the parameters frozen (restored after): the
    scores need no weight gradients, and autograd then saves less. ``input="encoder_input"``
    differentiates the ``encoder.frontend`` site's output, kept attached to the graph by the
    trace; SmoothGrad and Integrated Gradients replace that output with a changed copy instead.
    ``gradient_input="encoder.<i>"`` differentiates that block's output (:mod:`.block_output`).
    ``gradient_input="auto"`` picks one by the runner's frame shift, or where that is unknown by
    the inputs' rank (:meth:`~attnprobe.alignment.settings.AlignmentSettings.scored_input`).
    """
    batch = as_speech_batch(batch)
    bound = resolve_adapter(model, adapter, runner, example=batch)
    if batch.labels is None or batch.label_lengths is None:
        raise InputError("gradient scores need the reference transcription: give SpeechBatch(..., "
                         "labels=..., label_lengths=...)")
    batch = _normal_tensors(batch)
    scored = AlignmentSettings(gradient_input=gradient_input).scored_input(
        bound.runner.frame_shift_seconds, batch.inputs.dim())
    if scored == "features":
        require_float_inputs(batch.inputs, "the batch inputs")
        return LabelForward(
            lambda transform: _features_pass(model, bound, batch, transform, ctc_blank), 1)
    block = encoder_block(scored)
    if block is not None:
        return block_output_forward(
            model, bound, batch, block,
            lambda runner, scored_batch: label_log_probs(runner, scored_batch, ctc_blank),
            subsampling or _runner_subsampling(bound.runner))
    factor = subsampling or _runner_subsampling(bound.runner)
    return LabelForward(
        lambda transform: _encoder_input_pass(model, bound, batch, transform, ctc_blank), factor)


def label_log_probs(runner: Runner, batch: SpeechBatch, ctc_blank: int | None = None
                    ) -> torch.Tensor:
    """``(batch, labels)``: the attention decoder's ``log p(a_s | a_<s, X)``, or for a CTC-only
    model its per-label term of the CTC log-likelihood gradient (see :mod:`.ctc_term`)."""
    try:
        return runner.label_log_probs(batch)
    except CapabilityError as no_decoder:
        try:
            log_probs, frame_lengths = runner.ctc_log_probs(batch)
        except CapabilityError:
            raise no_decoder from None
    assert batch.labels is not None and batch.label_lengths is not None
    blank = ctc_blank if ctc_blank is not None else runner.ctc_blank
    if blank is None:
        raise CapabilityError(
            f"the {runner.family} runner has a CTC head but does not say which id is the blank; "
            f"pass ctc_blank=<id> (for Hugging Face Wav2Vec2ForCTC: model.config.pad_token_id)")
    return ctc_label_log_probs(log_probs, batch.labels.to(log_probs.device), frame_lengths,
                               batch.label_lengths.to(log_probs.device), blank=blank)


def _features_pass(model: nn.Module, adapter: Adapter, batch: SpeechBatch,
                   transform: InputTransform | None, ctc_blank: int | None) -> ForwardPass:
    inputs = batch.inputs.detach()
    if transform is not None:
        inputs = transform(inputs, batch.input_lengths)
    target = inputs.detach().requires_grad_(True)
    with evaluation_mode(model), frozen_parameters(model):
        log_probs = label_log_probs(adapter.runner, batch.with_inputs(target), ctc_blank)
    assert batch.label_lengths is not None
    return ForwardPass(log_probs, target, batch.input_lengths.to(target.device),
                       batch.label_lengths.to(target.device))


def _encoder_input_pass(model: nn.Module, adapter: Adapter, batch: SpeechBatch,
                        transform: InputTransform | None, ctc_blank: int | None) -> ForwardPass:
    binding = _frontend_binding(adapter.site_map)
    inputs = batch.inputs.detach()
    differentiable = inputs.is_floating_point() and transform is None
    if differentiable:
        # Gradients reach the frontend output through the inputs, so parameters can stay frozen.
        inputs = inputs.clone().requires_grad_(True)
    replaced: list[torch.Tensor] = []
    with evaluation_mode(model), trace(model, FRONTEND_SITE, capture={"output"},
                                       attach=transform is None, adapter=adapter.site_map,
                                       input_lengths=batch.input_lengths) as traced, \
            frozen_parameters(model, enabled=transform is not None or differentiable), \
            _replacing_output(binding, transform, traced, replaced):
        log_probs = label_log_probs(adapter.runner, batch.with_inputs(inputs), ctc_blank)
    record = traced[FRONTEND_SITE]
    if record.calls != 1:
        raise CapabilityError(
            f"the {FRONTEND_SITE} site ran {record.calls} times in one teacher-forced pass; "
            f"score gradient_input='features' instead")
    captured = record.outputs[0]
    if not captured.lengths_known and batch.batch_size > 1:
        raise CapabilityError(
            f"the {adapter.family} adapter does not say how many encoder frames of each padded "
            f"utterance are valid; score one utterance at a time, or gradient_input='features'")
    if transform is not None and not log_probs.requires_grad:
        raise CapabilityError(
            f"the {adapter.family} adapter's {FRONTEND_SITE} site observes the encoder input "
            f"without producing it, so SmoothGrad and Integrated Gradients cannot change it; "
            f"use them with gradient_input='features'")
    target = replaced[0] if replaced else captured.value
    assert batch.label_lengths is not None
    return ForwardPass(log_probs, target, captured.lengths.to(target.device),
                       batch.label_lengths.to(target.device))


@contextmanager
def _replacing_output(binding: Any, transform: InputTransform | None, traced: Any,
                      replaced: list[torch.Tensor]) -> Iterator[None]:
    """With a ``transform``: swap the frontend's output for a changed leaf that requires grad.

    Without one, nothing is installed: the trace keeps the real output attached to the graph.
    """
    if not binding.batch_first:
        raise CapabilityError(
            f"the {FRONTEND_SITE} output of this adapter is time-first; the trace hands it over "
            f"transposed, a copy off the path to the encoder, so its gradient would be zero. "
            f"Make the adapter's frontend binding batch-first, or use gradient_input='features'")
    if transform is None:
        yield
        return

    def replace(_module: nn.Module, _args: tuple, output: Any) -> Any:
        value = pick_tensor(output, binding.output_index)
        if value is None:
            raise CapabilityError(f"the {FRONTEND_SITE} module returned no tensor at output "
                                  f"index {binding.output_index}; check the adapter's binding")
        lengths = traced[FRONTEND_SITE].outputs[-1].lengths.to(value.device)
        leaf = transform(value.detach(), lengths).detach().requires_grad_(True)
        replaced.append(leaf)
        try:
            return replace_tensor(output, binding.output_index, leaf)
        except TypeError as error:
            raise CapabilityError(f"{error}; score gradient_input='features' instead") from None

    # Registered after the trace's hook, so the trace has recorded the lengths when this runs.
    handle = (binding.output_module or binding.module).register_forward_hook(replace)
    try:
        yield
    finally:
        handle.remove()


def _normal_tensors(batch: SpeechBatch) -> SpeechBatch:
    """``batch`` with copies of any tensors made under ``torch.inference_mode()``, which autograd
    may not save for the backward."""
    tensors = (batch.inputs, batch.input_lengths, batch.labels, batch.label_lengths)
    if not any(tensor is not None and tensor.is_inference() for tensor in tensors):
        return batch
    inputs, input_lengths, labels, label_lengths = (
        None if tensor is None else tensor.clone() for tensor in tensors)
    assert inputs is not None and input_lengths is not None
    return SpeechBatch(inputs, input_lengths, labels, label_lengths)


def _frontend_binding(site_map: SiteMap) -> SiteBinding:
    binding = site_map.binding(FRONTEND_SITE)
    if binding is None:
        raise CapabilityError(
            f"the {site_map.family} adapter has no {FRONTEND_SITE} site, so the encoder input "
            f"cannot be scored; use gradient_input='features'")
    return binding


def _runner_subsampling(runner: Runner) -> int:
    try:
        factor = runner.subsampling
    except (AttributeError, CapabilityError):
        factor = None
    if not isinstance(factor, int) or factor < 1:
        raise CapabilityError(
            f"the {runner.family} runner does not say how many input frames one encoder-input "
            f"frame spans; pass subsampling=<factor> (e.g. 6 for attnprobe's Conformer, 2 for "
            f"Whisper)")
    return factor
