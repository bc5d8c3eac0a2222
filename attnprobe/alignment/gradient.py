"""``attnprobe.gradient_alignment``: when is each label of a transcript spoken, from gradients.

The straight line (Schmitt et al., section V): teacher-force the transcript through the model,
take the gradient of every label's log-probability at the input (all labels in batched backward
passes, :mod:`.scoring`), reduce it to a score per frame, and hand the score matrix to the Viterbi
(:mod:`.decoding`), which places every label on a contiguous span of frames; frames become seconds
through the runner's frame shift and subsampling (where the runner does not know its frame shift,
the alignment stays in frames: :attr:`~attnprobe.alignment.Alignment.in_seconds`).

Usage::

    alignments = attnprobe.gradient_alignment(model, (features, lengths, labels, label_lengths),
                                              tokens=[["▁the", "▁cat"], ...])
    print(alignments[0])                          # words with start / end seconds
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from attnprobe.adapters import resolve_adapter
from attnprobe.batch import BatchForm, SpeechBatch, as_speech_batch

from .decoding.result import Alignment
from .decoding.silence import quietness
from .decoding.viterbi import align_score_matrix_batch
from .decoding.words import WordStyle
from .scoring.gradients import GradientScores, gradient_scores
from .scoring.label_batches import DEFAULT_MEMORY_BUDGET
from .scoring.loudness import input_loudness
from .scoring.model_forward import model_forward
from .scoring.smoothing import IntegratedGradients, SmoothGrad
from .settings import DEFAULT_SETTINGS, AlignmentSettings, settings_for


def gradient_alignment(
    model: nn.Module,
    batch: BatchForm,
    tokens: Sequence[Sequence[str]] | None = None,
    *,
    settings: AlignmentSettings | None = None,
    attribution: SmoothGrad | IntegratedGradients | None = None,
    chunk_size: int | None = None,
    memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
    subsampling: int | None = None,
    ctc_blank: int | None = None,
    word_style: WordStyle = "auto",
    adapter: Any = None,
    runner: Any = None,
) -> list[Alignment]:
    """Align every utterance of ``batch`` to its reference labels from gradient scores.

    Args:
        model: a supported model (run in eval mode; its own mode is restored after).
        batch: inputs with reference labels: a :class:`~attnprobe.batch.SpeechBatch` or
            ``(inputs, input_lengths, labels, label_lengths)`` (labels without begin/end symbols).
        tokens: ``tokens[i]`` holds the ``label_lengths[i]`` token strings of item ``i``, used for
            word grouping; ``None``: every label is its own word, named by its id.
        settings: where the gradients are taken, blank scoring, normalisation over time, gap
            closing and the norm over features; ``None``: the model family's defaults
            (:func:`~attnprobe.alignment.settings.settings_for`). ``settings.targets`` does not
            apply here (the labels are given); see :func:`attnprobe.alignment.align_transcript`.
        attribution: :class:`SmoothGrad` or :class:`IntegratedGradients` instead of plain
            gradients.
        chunk_size: labels per backward pass; ``None`` searches for the fastest size that fits
            ``memory_budget`` (see :mod:`attnprobe.alignment.scoring.label_batches`).
        memory_budget: bytes one backward pass may use; ``None``: no limit.
        subsampling: input frames per encoder-input frame, when the runner does not know it.
        ctc_blank: blank id of a CTC-only model, when the runner does not know it.
        word_style: tokenizer convention of ``tokens`` (see
            :mod:`attnprobe.alignment.decoding.words`).
        adapter: a site map (class or instance) or adapter to use instead of the automatic choice.
        runner: a runner to use instead of the site map's (see :mod:`attnprobe.adapters.runner`).

    Returns:
        One :class:`~attnprobe.alignment.Alignment` per item (``method="gradient_viterbi"``), in
        seconds; in frames where the runner's ``frame_shift_seconds`` is ``None``.
    """
    batch = as_speech_batch(batch)
    bound = resolve_adapter(model, adapter, runner, example=batch)
    if settings is None:
        settings = settings_for(bound.family)
    scores, loudness = gradient_score_matrices(
        model, batch, settings=settings, attribution=attribution, chunk_size=chunk_size,
        memory_budget=memory_budget, subsampling=subsampling, ctc_blank=ctc_blank, adapter=bound)
    if tokens is None:
        word_style = "continuation"
    return align_scores(scores, tokens if tokens is not None else _label_names(batch),
                        frame_shift_s=bound.runner.frame_shift_seconds, settings=settings,
                        word_style=word_style, loudness=loudness)


def gradient_score_matrices(
    model: nn.Module,
    batch: BatchForm,
    *,
    settings: AlignmentSettings | None = None,
    attribution: SmoothGrad | IntegratedGradients | None = None,
    chunk_size: int | None = None,
    memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
    subsampling: int | None = None,
    ctc_blank: int | None = None,
    adapter: Any = None,
    runner: Any = None,
) -> tuple[GradientScores, torch.Tensor | None]:
    """The scoring half of :func:`gradient_alignment` (same arguments): the score matrices, and
    the loudness of every score column ``(batch, frames)`` where ``settings.silence_weight`` asks
    for it (else ``None``). :func:`align_scores` decodes them; keeping them lets many decoding
    settings be compared on one scoring."""
    batch = as_speech_batch(batch)
    bound = resolve_adapter(model, adapter, runner, example=batch)
    if settings is None:
        settings = settings_for(bound.family)
    forward = model_forward(model, batch, gradient_input=settings.gradient_input, adapter=bound,
                            subsampling=subsampling, ctc_blank=ctc_blank)
    options = {"p": settings.p, "chunk_size": chunk_size, "memory_budget": memory_budget,
               "require_alignable": True}
    with bound.runner.fitted_window(settings.window_margin_s, settings.fit_decoder_only):
        if attribution is None:
            scores = gradient_scores(forward, **options)
        else:
            scores = attribution.scores(forward, **options)
    loudness = None
    if settings.silence_weight and batch.inputs.is_floating_point():
        loudness = input_loudness(batch.inputs, batch.input_lengths, scores.subsampling,
                                  scores.scores.shape[2])
    return scores, loudness


def align_scores(
    scores: GradientScores,
    tokens: Sequence[Sequence[str]],
    *,
    frame_shift_s: float | None,
    settings: AlignmentSettings = DEFAULT_SETTINGS,
    word_style: WordStyle = "auto",
    loudness: torch.Tensor | None = None,
) -> list[Alignment]:
    """Decode precomputed :class:`GradientScores` (e.g. of a callable scored with
    :func:`~attnprobe.alignment.scoring.forward.function_forward`) into alignments.

    Args:
        scores: the score matrices and their lengths.
        tokens: one list of token strings per item, ``label_lengths[i]`` long.
        frame_shift_s: seconds between two input feature frames; ``None`` when unknown (the
            alignments then count frames).
        settings / word_style: as in :func:`gradient_alignment`.
        loudness: ``(batch, frames)`` log loudness per score column
            (:func:`~attnprobe.alignment.scoring.loudness.input_loudness`), for the blank's
            silence prior; ``None``: no prior.
    """
    quiet = None if loudness is None else quietness(loudness, scores.frame_lengths)
    return align_score_matrix_batch(
        scores.scores.detach(), tokens, frame_shift_s=frame_shift_s,
        subsampling=scores.subsampling, label_lengths=scores.label_lengths,
        frame_lengths=scores.frame_lengths, settings=settings, word_style=word_style,
        quietness=quiet)


def _label_names(batch: SpeechBatch) -> list[list[str]]:
    """Label ids as token strings, one word each (used when no tokens are given)."""
    assert batch.labels is not None and batch.label_lengths is not None
    return [[str(label) for label in batch.labels[item, : int(count)].tolist()]
            for item, count in enumerate(batch.label_lengths.tolist())]
