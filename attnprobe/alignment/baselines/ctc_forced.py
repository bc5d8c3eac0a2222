"""CTC forced-alignment baseline around ``torchaudio.functional.forced_align``.

torchaudio's aligner takes one utterance per call, so a batch is aligned item by item. Its frame
labelling (token id or blank per frame) becomes label spans: consecutive frames of the same token
form one label (CTC puts a blank between repeated tokens), blank frames are gaps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from attnprobe.adapters import resolve_adapter
from attnprobe.batch import BatchForm, as_speech_batch
from attnprobe.errors import CapabilityError, InputError

from ..decoding.result import Alignment
from ..decoding.words import WordStyle, alignment_from_label_frames


def ctc_label_frames(frame_tokens: np.ndarray, num_labels: int, blank: int = 0) -> np.ndarray:
    """Per-frame token ids of a CTC path -> ``(labels, 2)`` ``[start, end)`` frames per label.

    Args:
        frame_tokens: ``(frames,)`` token id of every frame, ``blank`` for blank frames.
        num_labels: labels in the target; the path must contain exactly that many token runs.
        blank: blank token id.
    """
    frame_tokens = np.asarray(frame_tokens)
    is_token = frame_tokens != blank
    changed = np.ones(frame_tokens.shape, dtype=bool)
    changed[1:] = frame_tokens[1:] != frame_tokens[:-1]
    starts = np.flatnonzero(is_token & changed)
    ends_mask = np.ones(frame_tokens.shape, dtype=bool)
    ends_mask[:-1] = changed[1:]
    ends = np.flatnonzero(is_token & ends_mask) + 1
    if len(starts) != num_labels:
        raise ValueError(
            f"the CTC path has {len(starts)} token runs but the target has {num_labels} labels; "
            f"pass the frame labelling that forced alignment returned for this target"
        )
    return np.stack([starts, ends], axis=1).astype(np.int64)


def ctc_forced_alignment(
    log_probs: torch.Tensor,
    targets: torch.Tensor | Sequence[int],
    tokens: Sequence[str],
    *,
    frame_shift_s: float,
    subsampling: int = 1,
    blank: int = 0,
    word_style: WordStyle = "auto",
) -> Alignment:
    """Align one utterance with CTC emissions.

    Args:
        log_probs: ``(frames, vocabulary)`` CTC log-probabilities (log-softmax over the vocabulary).
        targets: ``(labels,)`` token ids of the transcript, without blanks.
        tokens: ``(labels,)`` their strings.
        frame_shift_s: input feature shift in seconds.
        subsampling: input frames per CTC frame.
        blank: blank id.
        word_style: tokenizer convention for words (see :mod:`.words`).
    """
    from torchaudio.functional import forced_align

    log_probs = torch.as_tensor(log_probs).detach().float().cpu()
    targets = torch.as_tensor(targets, dtype=torch.int32).cpu()
    _check_target(log_probs, targets, tokens, blank)
    frame_tokens, frame_scores = forced_align(log_probs[None], targets[None], blank=blank)
    frame_tokens = frame_tokens[0].numpy()
    label_frames = ctc_label_frames(frame_tokens, len(tokens), blank)
    # Token runs are contiguous and in order, so the non-blank frames list them label by label.
    run_labels = np.repeat(np.arange(len(tokens)), label_frames[:, 1] - label_frames[:, 0])
    return alignment_from_label_frames(
        label_frames,
        tokens,
        frame_shift_s=frame_shift_s,
        subsampling=subsampling,
        num_frames=log_probs.shape[0],
        method="ctc_forced_alignment",
        word_style=word_style,
        path=np.stack([run_labels, np.flatnonzero(frame_tokens != blank)], axis=1),
        scores=log_probs[:, targets.long()].T.numpy(),
        path_score=float(frame_scores.sum()),
    )


def ctc_forced_alignment_batch(
    log_probs: torch.Tensor,
    targets: torch.Tensor,
    tokens: Sequence[Sequence[str]],
    *,
    frame_lengths: torch.Tensor | Sequence[int],
    target_lengths: torch.Tensor | Sequence[int],
    frame_shift_s: float,
    subsampling: int = 1,
    blank: int = 0,
    word_style: WordStyle = "auto",
) -> list[Alignment]:
    """:func:`ctc_forced_alignment` over a padded batch, one torchaudio call per item.

    Args:
        log_probs: ``(batch, frames, vocabulary)``.
        targets: ``(batch, labels)``, padded.
        tokens: per item, its ``target_lengths[i]`` token strings.
        frame_lengths: ``(batch,)`` valid frames.
        target_lengths: ``(batch,)`` valid labels.
    """
    frame_lengths = torch.as_tensor(frame_lengths).tolist()
    target_lengths = torch.as_tensor(target_lengths).tolist()
    if not len(tokens) == len(frame_lengths) == len(target_lengths) == log_probs.shape[0]:
        raise ValueError(
            f"batch of {log_probs.shape[0]} with {len(tokens)} token lists, {len(frame_lengths)} "
            f"frame lengths and {len(target_lengths)} target lengths; pass one of each per item"
        )
    return [
        ctc_forced_alignment(
            log_probs[item, :num_frames],
            targets[item, :num_labels],
            tokens[item],
            frame_shift_s=frame_shift_s,
            subsampling=subsampling,
            blank=blank,
            word_style=word_style,
        )
        for item, (num_frames, num_labels) in enumerate(zip(frame_lengths, target_lengths))
    ]


def _check_target(
    log_probs: torch.Tensor, targets: torch.Tensor, tokens: Sequence[str], blank: int
) -> None:
    if log_probs.dim() != 2 or targets.dim() != 1:
        raise ValueError(
            f"log_probs {tuple(log_probs.shape)} and targets {tuple(targets.shape)}: pass "
            f"(frames, vocabulary) and (labels,); use ctc_forced_alignment_batch for a batch"
        )
    if len(targets) == 0:
        raise ValueError("empty target: nothing to align; drop utterances with empty transcripts")
    if len(tokens) != len(targets):
        raise ValueError(
            f"{len(targets)} target ids but {len(tokens)} token strings; pass one string per id"
        )
    if (targets == blank).any():
        raise ValueError(
            f"targets contain the blank id {blank}; remove blanks from the target or pass blank="
        )
    repeats = int((targets[1:] == targets[:-1]).sum())
    needed = len(targets) + repeats
    if log_probs.shape[0] < needed:
        raise ValueError(
            f"cannot CTC-align {len(targets)} labels ({repeats} repeated) in {log_probs.shape[0]} "
            f"frames: CTC needs {needed} (a blank between repeats); use a lower subsampling "
            f"factor or check that the transcript belongs to this audio"
        )
    if torch.isnan(log_probs).any():
        raise ValueError("CTC log-probabilities contain NaN; check the model's output in float32")


def model_ctc_alignment(
    model: nn.Module,
    batch: BatchForm,
    tokens: Sequence[str],
    *,
    ctc_blank: int | None = None,
    word_style: WordStyle = "auto",
    adapter: Any = None,
    runner: Any = None,
) -> Alignment:
    """CTC forced alignment of one utterance's labels with the model's own CTC posteriors.

    Raises:
        CapabilityError: the model has no CTC head, or its blank id is unknown.
        InputError: the transcript does not fit the frames (see :func:`ctc_forced_alignment`).
    """
    batch = as_speech_batch(batch)
    bound = resolve_adapter(model, adapter, runner)
    blank = ctc_blank if ctc_blank is not None else bound.runner.ctc_blank
    if blank is None:
        raise CapabilityError(f"{type(model).__name__} has no CTC head with a known blank id; "
                              f"pass ctc_blank=<id>, or align with gradients")
    if batch.labels is None:
        raise InputError("CTC forced alignment needs the transcript's labels in the batch")
    with torch.no_grad():
        log_probs, frame_lengths = bound.runner.ctc_log_probs(batch)
    frames = int(frame_lengths[0])
    count = int(batch.label_lengths[0]) if batch.label_lengths is not None else len(tokens)
    try:
        return ctc_forced_alignment(
            log_probs[0, :frames], batch.labels[0, :count].tolist(), tokens,
            frame_shift_s=bound.runner.frame_shift_seconds,
            subsampling=bound.runner.subsampling, blank=blank, word_style=word_style)
    except ValueError as error:
        raise InputError(str(error)) from error
