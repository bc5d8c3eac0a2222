"""Gradient-based label-to-frame alignment of a model's own transcription (paper section 6).

The straight line: teacher-force the transcript through the model, take the gradient of every
label's log-probability at the input (all labels in one batched backward), reduce it to a score per
frame, and hand the score matrix to the alignment package's Viterbi, which places every label on a
contiguous span of frames; frames become seconds through the adapter's frame shift and subsampling.

Usage::

    batch = SpeechBatch(features, feature_lengths, labels, label_lengths)
    alignments = gradient_alignment(model, batch, tokens=[["▁the", "▁cat"], ...])
    print(alignments[0])                          # words with start / end seconds

Scoring the input *features* (``input="features"``, 10 ms frames) or the *encoder input* after the
frontend (``input="encoder_input"``, e.g. 60 ms frames) works on any model whose adapter has
``label_log_probs`` (attention decoders) or ``ctc_log_probs`` (CTC models, whose per-label term is
:func:`attnprobe.attribution.ctc.ctc_label_log_probs`). Because the gradient is taken at the input,
a model whose encoder reverses time internally aligns just as well.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch import nn

from attnprobe.alignment import Alignment, BlankScore, align_score_matrix_batch
from attnprobe.alignment.words import WordStyle
from attnprobe.batch import SpeechBatch
from attnprobe.capture import pick_tensor
from attnprobe.errors import CapabilityError, InputError
from attnprobe.probes.result import evaluation_mode
from attnprobe.trace import trace

from .batching import DEFAULT_MEMORY_BUDGET
from .ctc import ctc_label_log_probs
from .scores import (
    ForwardPass,
    GradientScores,
    InputTransform,
    LabelForward,
    gradient_scores,
    require_float_inputs,
)
from .smoothing import IntegratedGradients, SmoothGrad

ScoredInput = Literal["features", "encoder_input"]
FRONTEND_SITE = "encoder.frontend"


def gradient_alignment(
    model: nn.Module,
    batch: SpeechBatch,
    tokens: Sequence[Sequence[str]] | None = None,
    *,
    input: ScoredInput = "features",
    blank: BlankScore | None = None,
    log_softmax_over_time: bool = False,
    p: float = 2.0,
    attribution: SmoothGrad | IntegratedGradients | None = None,
    chunk_size: int | None = None,
    memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
    subsampling: int | None = None,
    ctc_blank: int | None = None,
    word_style: WordStyle = "auto",
    adapter: Any = None,
) -> list[Alignment]:
    """Align every utterance of ``batch`` to its reference labels from gradient scores.

    Args:
        model: a supported model (run in eval mode; its own mode is restored after).
        batch: inputs with reference ``labels`` / ``label_lengths`` (no begin/end symbols).
        tokens: ``tokens[i]`` holds the ``label_lengths[i]`` token strings of item ``i``, used for
            word grouping; ``None``: every label is its own word, named by its id.
        input: ``"features"`` scores the model input frames; ``"encoder_input"`` the output of the
            ``encoder.frontend`` site (subsampled frames).
        blank: blank scoring of the Viterbi; default: the paper's constants, -6 on input frames
            and -4 on subsampled encoder frames.
        log_softmax_over_time: normalise each label's log scores over time first.
        p: the norm over features (2: L2).
        attribution: :class:`SmoothGrad` or :class:`IntegratedGradients` instead of plain
            gradients.
        chunk_size: labels per backward pass; ``None`` searches for the fastest size that fits
            ``memory_budget`` (see :mod:`attnprobe.attribution.batching`).
        memory_budget: bytes one backward pass may use; ``None``: no limit.
        subsampling: input frames per encoder-input frame, when the adapter does not know it.
        ctc_blank: blank id of a CTC-only model, when the adapter does not know it.
        word_style: tokenizer convention of ``tokens`` (see :mod:`attnprobe.alignment.words`).
        adapter: an adapter class or instance to use instead of the automatic choice.

    Returns:
        One :class:`~attnprobe.alignment.Alignment` per item (``method="gradient_viterbi"``).
    """
    bound = _bind_adapter(model, adapter)
    forward = model_forward(model, batch, input=input, adapter=bound, subsampling=subsampling,
                            ctc_blank=ctc_blank)
    options = {"p": p, "chunk_size": chunk_size, "memory_budget": memory_budget,
               "require_alignable": True}
    if attribution is None:
        scores = gradient_scores(forward, **options)
    else:
        scores = attribution.scores(forward, **options)
    if tokens is None:
        word_style = "continuation"
    return align_scores(scores, tokens if tokens is not None else _label_names(batch),
                        frame_shift_s=bound.frame_shift_seconds, blank=blank,
                        log_softmax_over_time=log_softmax_over_time, word_style=word_style)


def align_scores(
    scores: GradientScores,
    tokens: Sequence[Sequence[str]],
    *,
    frame_shift_s: float,
    blank: BlankScore | None = None,
    log_softmax_over_time: bool = False,
    word_style: WordStyle = "auto",
) -> list[Alignment]:
    """Viterbi-align precomputed :class:`GradientScores` (e.g. of a callable scored with
    :func:`~attnprobe.attribution.scores.function_forward`).

    Args:
        scores: the score matrices and their lengths.
        tokens: one list of token strings per item, ``label_lengths[i]`` long.
        frame_shift_s: seconds between two input feature frames.
        blank / log_softmax_over_time / word_style: as in :func:`gradient_alignment`.
    """
    if blank is None:
        blank = BlankScore("constant", -6.0 if scores.subsampling == 1 else -4.0)
    return align_score_matrix_batch(
        scores.scores.detach(), tokens, frame_shift_s=frame_shift_s,
        subsampling=scores.subsampling, label_lengths=scores.label_lengths,
        frame_lengths=scores.frame_lengths, blank=blank,
        log_softmax_over_time=log_softmax_over_time, word_style=word_style)


def model_forward(
    model: nn.Module,
    batch: SpeechBatch,
    *,
    input: ScoredInput = "features",
    adapter: Any = None,
    subsampling: int | None = None,
    ctc_blank: int | None = None,
) -> LabelForward:
    """A :class:`LabelForward` that teacher-forces ``batch`` through ``model`` via its adapter.

    The per-label quantity is the adapter's ``label_log_probs`` (attention decoders); a model
    with only a CTC head (``ctc_log_probs``) gets
    :func:`~attnprobe.attribution.ctc.ctc_label_log_probs` with blank id ``ctc_blank`` (default:
    the adapter's ``ctc_blank``).

    Each pass runs in eval mode (restored after) with the parameters frozen (restored after): the
    scores need no weight gradients, and autograd then saves less. ``input="encoder_input"``
    differentiates the ``encoder.frontend`` site's output, kept attached to the graph by the
    trace; SmoothGrad and Integrated Gradients replace that output with a changed copy instead.
    """
    bound = _bind_adapter(model, adapter)
    if batch.labels is None or batch.label_lengths is None:
        raise InputError("gradient scores need the reference transcription: give SpeechBatch(..., "
                         "labels=..., label_lengths=...)")
    batch = _normal_tensors(batch)
    if input == "features":
        require_float_inputs(batch.inputs, "the batch inputs")
        return LabelForward(
            lambda transform: _features_pass(model, bound, batch, transform, ctc_blank), 1)
    if input == "encoder_input":
        factor = subsampling or _adapter_subsampling(bound)
        return LabelForward(
            lambda transform: _encoder_input_pass(model, bound, batch, transform, ctc_blank),
            factor)
    raise ValueError(f"input={input!r}; use 'features' or 'encoder_input'")


def label_log_probs(adapter: Any, batch: SpeechBatch, ctc_blank: int | None = None
                    ) -> torch.Tensor:
    """``(batch, labels)``: the attention decoder's ``log p(a_s | a_<s, X)``, or for a CTC-only
    model its per-label term of the CTC log-likelihood gradient (see :mod:`.ctc`)."""
    try:
        return adapter.label_log_probs(batch)
    except CapabilityError as no_decoder:
        try:
            log_probs, frame_lengths = adapter.ctc_log_probs(batch)
        except CapabilityError:
            raise no_decoder from None
    assert batch.labels is not None and batch.label_lengths is not None
    blank = ctc_blank if ctc_blank is not None else getattr(adapter, "ctc_blank", None)
    if blank is None:
        raise CapabilityError(
            f"the {adapter.family} adapter has a CTC head but does not say which id is the blank; "
            f"pass ctc_blank=<id> (for Hugging Face Wav2Vec2ForCTC: model.config.pad_token_id)")
    return ctc_label_log_probs(log_probs, batch.labels.to(log_probs.device), frame_lengths,
                               batch.label_lengths.to(log_probs.device), blank=blank)


def _features_pass(model: nn.Module, adapter: Any, batch: SpeechBatch,
                   transform: InputTransform | None, ctc_blank: int | None) -> ForwardPass:
    inputs = batch.inputs.detach()
    if transform is not None:
        inputs = transform(inputs, batch.input_lengths)
    target = inputs.detach().requires_grad_(True)
    with evaluation_mode(model), _frozen_parameters(model):
        log_probs = label_log_probs(adapter, batch.with_inputs(target), ctc_blank)
    assert batch.label_lengths is not None
    return ForwardPass(log_probs, target, batch.input_lengths.to(target.device),
                       batch.label_lengths.to(target.device))


def _encoder_input_pass(model: nn.Module, adapter: Any, batch: SpeechBatch,
                        transform: InputTransform | None, ctc_blank: int | None) -> ForwardPass:
    binding = _frontend_binding(adapter)
    inputs = batch.inputs.detach()
    differentiable = inputs.is_floating_point() and transform is None
    if differentiable:
        # Gradients reach the frontend output through the inputs, so parameters can stay frozen.
        inputs = inputs.clone().requires_grad_(True)
    replaced: list[torch.Tensor] = []
    with evaluation_mode(model), trace(model, FRONTEND_SITE, capture={"output"},
                                        attach=transform is None, adapter=adapter) as traced, \
            _frozen_parameters(model, enabled=transform is not None or differentiable), \
            _replacing_output(binding, transform, traced, replaced):
        log_probs = label_log_probs(adapter, batch.with_inputs(inputs), ctc_blank)
    record = traced[FRONTEND_SITE]
    if record.calls != 1:
        raise CapabilityError(
            f"the {FRONTEND_SITE} site ran {record.calls} times in one teacher-forced pass; "
            f"score input='features' instead")
    captured = record.outputs[0]
    if not captured.lengths_known and batch.batch_size > 1:
        raise CapabilityError(
            f"the {adapter.family} adapter does not say how many encoder frames of each padded "
            f"utterance are valid; score one utterance at a time, or input='features'")
    if transform is not None and not log_probs.requires_grad:
        raise CapabilityError(
            f"the {adapter.family} adapter's {FRONTEND_SITE} site observes the encoder input "
            f"without producing it, so SmoothGrad and Integrated Gradients cannot change it; "
            f"use them with input='features'")
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
            f"Make the adapter's frontend binding batch-first, or use input='features'")
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
        return _with_tensor(output, binding.output_index, leaf)

    # Registered after the trace's hook, so the trace has recorded the lengths when this runs.
    handle = (binding.output_module or binding.module).register_forward_hook(replace)
    try:
        yield
    finally:
        handle.remove()


def _with_tensor(output: Any, index: int, tensor: torch.Tensor) -> Any:
    """``output`` with its hidden state (as :func:`pick_tensor` finds it) replaced."""
    if isinstance(output, torch.Tensor):
        return tensor
    if isinstance(output, (tuple, list)):
        items = list(output)
        items[index] = tensor
        if hasattr(output, "_fields"):
            return type(output)(*items)
        return type(output)(items)
    if isinstance(output, Mapping):
        key = next(key for key, value in output.items() if isinstance(value, torch.Tensor))
        output[key] = tensor
        return output
    raise CapabilityError(f"cannot replace the {FRONTEND_SITE} output of type "
                          f"{type(output).__name__}; use input='features'")


@contextmanager
def _frozen_parameters(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Parameters stop requiring grad for the duration; the flags are restored after."""
    frozen = [parameter for parameter in model.parameters()
              if enabled and parameter.requires_grad]
    for parameter in frozen:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter in frozen:
            parameter.requires_grad_(True)


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


def _bind_adapter(model: nn.Module, adapter: Any) -> Any:
    if adapter is None:
        from attnprobe.adapters import find_adapter

        return find_adapter(model)
    return adapter(model) if isinstance(adapter, type) else adapter


def _frontend_binding(adapter: Any) -> Any:
    for binding in adapter.bindings():
        if binding.site.name == FRONTEND_SITE:
            return binding
    raise CapabilityError(
        f"the {getattr(adapter, 'family', type(adapter).__name__)} adapter has no "
        f"{FRONTEND_SITE} site, so the encoder input cannot be scored; use input='features'")


def _adapter_subsampling(adapter: Any) -> int:
    try:
        factor = adapter.subsampling
    except (AttributeError, CapabilityError):
        factor = None
    if not isinstance(factor, int) or factor < 1:
        raise CapabilityError(
            f"the {getattr(adapter, 'family', type(adapter).__name__)} adapter does not say how "
            f"many input frames one encoder-input frame spans; pass subsampling=<factor> (e.g. 6 "
            f"for attnprobe's Conformer, 2 for Whisper)")
    return factor


def _label_names(batch: SpeechBatch) -> list[list[str]]:
    """Label ids as token strings, one word each (used when no tokens are given)."""
    assert batch.labels is not None and batch.label_lengths is not None
    return [[str(label) for label in batch.labels[item, : int(count)].tolist()]
            for item, count in enumerate(batch.label_lengths.tolist())]
