"""Viterbi forced alignment of labels to frames (step 3 of the paper's recipe).

States for ``S`` labels: ``[blank, a_1, blank, a_2, ..., a_S, blank]``, ``2S + 1`` of them; label
``s`` (0-based) is state ``2s + 1``. Moves between frames: stay, advance one state, or skip the
blank between two labels. The labels are transcript positions, not token ids, so a repeated token
needs no blank between its copies. A path starts in state 0 or 1 and ends in one of the last two
states; the aligner maximises the summed log score and backtraces. Every label gets a contiguous
span of at least one frame.

The dynamic programme loops over frames only; each step is vectorised over states and over the
items of a padded batch. It runs in numpy on the CPU whatever device the scores live on: its steps
are hundreds of tiny operations, which torch sends through its thread pool and a GPU through
kernel launches, so with two threads the torch loop ran 60x slower than with one, and numpy was
3-4x faster than torch on one thread, with identical paths.

Example::

    log_scores = label_log_scores(grad_norms)                     # (labels, frames)
    blank = blank_log_scores(log_scores, BlankScore("constant", -6.0))
    path = viterbi_align(log_scores, blank)
    path.label_frames                                             # (labels, 2) [start, end)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from attnprobe.lengths import checked_lengths

from ..settings import DEFAULT_SETTINGS, AlignmentSettings
from .blank import blank_log_scores, label_log_scores
from .confidence import low_confidence_warning, word_confidences
from .gaps import close_word_gaps
from .result import Alignment
from .words import WordStyle, alignment_from_label_frames


@dataclass(frozen=True)
class ViterbiPath:
    """Best state path of one utterance.

    Attributes:
        label_frames: ``(labels, 2)`` int64, frames ``[start, end)`` of every label.
        state_path: ``(frames,)`` int64, the state of every frame (label ``s`` is ``2s + 1``,
            even states are blanks).
        path_score: summed log score along the path.
    """

    label_frames: np.ndarray
    state_path: np.ndarray
    path_score: float

    def label_frame_pairs(self) -> np.ndarray:
        """``(steps, 2)`` pairs ``(label index, frame)`` for the frames spent in label states."""
        frames = np.flatnonzero(self.state_path % 2 == 1)
        return np.stack([(self.state_path[frames] - 1) // 2, frames], axis=1)


def viterbi_align(
    label_log_scores: torch.Tensor | np.ndarray, blank_log_scores: torch.Tensor | np.ndarray
) -> ViterbiPath:
    """Force-align one utterance.

    Args:
        label_log_scores: ``(labels, frames)`` log score of label ``s`` at frame ``t``.
        blank_log_scores: ``(frames,)`` log score of the blank state at frame ``t``.

    Raises:
        ValueError: no labels, more labels than frames, or NaN scores.
    """
    labels = torch.as_tensor(label_log_scores)
    blank = torch.as_tensor(blank_log_scores)
    if labels.dim() != 2 or blank.dim() != 1:
        raise ValueError(
            f"label scores {tuple(labels.shape)} and blank scores {tuple(blank.shape)}: pass "
            f"(labels, frames) and (frames,); use viterbi_align_batch for a batch"
        )
    return viterbi_align_batch(labels[None], blank[None])[0]


def viterbi_align_batch(
    label_log_scores: torch.Tensor | np.ndarray,
    blank_log_scores: torch.Tensor | np.ndarray,
    label_lengths: torch.Tensor | Sequence[int] | None = None,
    frame_lengths: torch.Tensor | Sequence[int] | None = None,
) -> list[ViterbiPath]:
    """Force-align a padded batch in one pass over frames.

    Args:
        label_log_scores: ``(batch, labels, frames)``, padded.
        blank_log_scores: ``(batch, frames)``, padded.
        label_lengths: ``(batch,)`` valid labels per item; all when ``None``.
        frame_lengths: ``(batch,)`` valid frames per item; all when ``None``.

    Returns:
        One :class:`ViterbiPath` per item, cut to its own lengths.
    """
    labels = torch.as_tensor(label_log_scores)
    blank = torch.as_tensor(blank_log_scores).to(device=labels.device)
    if labels.dim() != 3 or blank.shape != (labels.shape[0], labels.shape[2]):
        raise ValueError(
            f"label scores {tuple(labels.shape)} and blank scores {tuple(blank.shape)}: pass "
            f"(batch, labels, frames) and (batch, frames)"
        )
    batch, max_labels, max_frames = labels.shape
    label_lengths = checked_lengths(label_lengths, batch, max_labels, "label_lengths",
                                    labels.device, minimum=0)
    frame_lengths = checked_lengths(frame_lengths, batch, max_frames, "frame_lengths",
                                    labels.device, minimum=0)
    _check_alignable(labels, blank, label_lengths, frame_lengths)
    emissions = _emissions(labels.detach().cpu().double().numpy(),
                           blank.detach().cpu().double().numpy(), label_lengths.cpu().numpy())
    moves, final_states, final_scores = _forward(emissions, label_lengths.cpu().numpy(),
                                                 frame_lengths.cpu().numpy())
    if np.isinf(final_scores).any():
        item = int(np.flatnonzero(np.isinf(final_scores))[0])
        raise ValueError(
            f"item {item} has no path with a finite score: its scores contain -inf where every "
            f"path must pass; build label scores with label_log_scores (which floors zero norms)"
        )
    paths = _backtrace(moves, final_states)
    results = []
    for item in range(batch):
        state_path = paths[item, : int(frame_lengths[item])]
        label_states = 2 * np.arange(int(label_lengths[item])) + 1
        starts = np.searchsorted(state_path, label_states, side="left")
        ends = np.searchsorted(state_path, label_states, side="right")
        results.append(
            ViterbiPath(
                label_frames=np.stack([starts, ends], axis=1).astype(np.int64),
                state_path=state_path.copy(),
                path_score=float(final_scores[item]),
            )
        )
    return results


def _emissions(labels: np.ndarray, blank: np.ndarray, label_lengths: np.ndarray) -> np.ndarray:
    """``(batch, frames, 2 * labels + 1)`` float64 log score of every state at every frame."""
    batch, max_labels, max_frames = labels.shape
    emissions = np.full((batch, max_frames, 2 * max_labels + 1), -np.inf)
    emissions[:, :, 0::2] = blank[:, :, None]
    emissions[:, :, 1::2] = labels.transpose(0, 2, 1)
    # States past an item's last blank must stay unreachable whatever the padding holds.
    beyond = np.arange(2 * max_labels + 1)[None, :] > 2 * label_lengths[:, None]
    emissions[np.broadcast_to(beyond[:, None, :], emissions.shape)] = -np.inf
    return emissions


def _forward(emissions: np.ndarray, label_lengths: np.ndarray, frame_lengths: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Max-sum recursion over frames.

    Returns:
        moves: ``(batch, frames, states)`` int8, how many states the best path into each state
            advanced (0 stay, 1 advance, 2 skip); 0 on padded frames so the path stands still.
        final_states: ``(batch,)`` best of the two final states.
        final_scores: ``(batch,)`` its summed log score.
    """
    batch, max_frames, num_states = emissions.shape
    states = np.arange(num_states)
    # Skipping a blank is allowed only into a label that follows another label.
    no_skip = (states % 2 == 0) | (states < 3)
    alpha = np.where(states >= 2, -np.inf, emissions[:, 0])
    moves = np.zeros((batch, max_frames, num_states), dtype=np.int8)
    candidates = np.full((3, batch, num_states), -np.inf)
    items = np.arange(batch)[:, None]
    for frame in range(1, max_frames):
        candidates[0] = alpha
        candidates[1, :, 1:] = alpha[:, :-1]
        candidates[2, :, 2:] = np.where(no_skip[2:], -np.inf, alpha[:, :-2])
        move = candidates.argmax(axis=0)
        best = candidates[move, items, states]
        active = (frame < frame_lengths)[:, None]
        alpha = np.where(active, best + emissions[:, frame], alpha)
        moves[:, frame] = np.where(active, move, 0)
    last_blank = 2 * label_lengths.astype(np.int64)
    finals = np.stack([alpha[np.arange(batch), last_blank],
                       alpha[np.arange(batch), np.maximum(last_blank - 1, 0)]], axis=1)
    which = finals.argmax(axis=1)
    return moves, last_blank - which, finals[np.arange(batch), which]


def _backtrace(moves: np.ndarray, final_states: np.ndarray) -> np.ndarray:
    """``(batch, frames)`` state path from the moves, walking back from the final states."""
    batch, max_frames, _ = moves.shape
    items = np.arange(batch)
    state = final_states.astype(np.int64)
    paths = np.empty((batch, max_frames), dtype=np.int64)
    for frame in range(max_frames - 1, -1, -1):
        paths[:, frame] = state
        state = state - moves[items, frame, state]
    return paths


def _check_alignable(
    labels: torch.Tensor,
    blank: torch.Tensor,
    label_lengths: torch.Tensor,
    frame_lengths: torch.Tensor,
) -> None:
    for item, (num_labels, num_frames) in enumerate(
        zip(label_lengths.tolist(), frame_lengths.tolist())
    ):
        where = f"item {item}: " if labels.shape[0] > 1 else ""
        if num_labels == 0:
            raise ValueError(
                f"{where}empty label sequence: nothing to align; drop utterances with an empty "
                f"transcript before aligning"
            )
        if num_labels > num_frames:
            raise ValueError(
                f"{where}cannot align {num_labels} labels but only {num_frames} frames; every "
                f"label needs at least one frame: use scores at a finer frame rate (a smaller "
                f"subsampling factor, e.g. the 10 ms input features) or check that the "
                f"transcript belongs to this audio"
            )
        if (
            torch.isnan(labels[item, :num_labels, :num_frames]).any()
            or torch.isnan(blank[item, :num_frames]).any()
        ):
            raise ValueError(
                f"{where}scores contain NaN; the gradients overflowed or NaN marks padding: "
                f"compute gradients in float32, and pass lengths instead of NaN padding"
            )


def align_score_matrix(
    scores: torch.Tensor | np.ndarray,
    tokens: Sequence[str],
    *,
    frame_shift_s: float,
    subsampling: int = 1,
    settings: AlignmentSettings = DEFAULT_SETTINGS,
    word_style: WordStyle = "auto",
    quietness: torch.Tensor | np.ndarray | None = None,
) -> Alignment:
    """The whole decoding of one utterance: gradient norms -> words with times.

    Args:
        scores: ``(labels, frames)`` gradient norms ``|| d log p(a_s) / d x_t ||``.
        tokens: ``(labels,)`` token strings of the transcript, one per score row.
        frame_shift_s: input feature shift in seconds (0.01 for 10 ms log-mels).
        subsampling: input frames per score column (1 for gradients at the 10 ms input, 6 for
            the 60 ms encoder input).
        settings: blank scoring, normalisation over time and gap closing (the library's
            defaults; :meth:`AlignmentSettings.paper` for the paper's recipe).
        word_style: tokenizer convention for grouping tokens into words (see :mod:`.words`).
        quietness: ``(frames,)`` in ``[0, 1]`` (:func:`.silence.quietness`); the blank gains
            ``settings.silence_weight`` times it. ``None``: no silence prior.
    """
    return align_score_matrix_batch(
        torch.as_tensor(scores)[None],
        [tokens],
        frame_shift_s=frame_shift_s,
        subsampling=subsampling,
        settings=settings,
        word_style=word_style,
        quietness=None if quietness is None else torch.as_tensor(quietness)[None],
    )[0]


def align_score_matrix_batch(
    scores: torch.Tensor | np.ndarray,
    tokens: Sequence[Sequence[str]],
    *,
    frame_shift_s: float | None,
    subsampling: int = 1,
    label_lengths: torch.Tensor | Sequence[int] | None = None,
    frame_lengths: torch.Tensor | Sequence[int] | None = None,
    settings: AlignmentSettings = DEFAULT_SETTINGS,
    word_style: WordStyle = "auto",
    quietness: torch.Tensor | np.ndarray | None = None,
) -> list[Alignment]:
    """:func:`align_score_matrix` for a padded batch ``(batch, labels, frames)``.

    ``tokens[i]`` holds the ``label_lengths[i]`` token strings of item ``i``; ``quietness`` is
    ``(batch, frames)``. Every word gets a confidence (:mod:`.confidence`), and an alignment whose
    words barely stand out of the blank gets a warning. With ``frame_shift_s=None`` (unknown) the
    alignments are in frames and gaps are not closed (their length in seconds is unknown).
    """
    scores = torch.as_tensor(scores)
    label_lengths = checked_lengths(label_lengths, scores.shape[0], scores.shape[1],
                                    "label_lengths", scores.device, minimum=0)
    frame_lengths = checked_lengths(frame_lengths, scores.shape[0], scores.shape[2],
                                    "frame_lengths", scores.device, minimum=0)
    if len(tokens) != scores.shape[0]:
        raise ValueError(
            f"{len(tokens)} token lists for a batch of {scores.shape[0]}; pass one list per item"
        )
    for item, (item_tokens, count) in enumerate(zip(tokens, label_lengths.tolist())):
        if len(item_tokens) != count:
            raise ValueError(
                f"item {item} has {len(item_tokens)} tokens but {count} score rows; pass one "
                f"token string per score row (and label_lengths for padded rows)"
            )
    lengths = {"label_lengths": label_lengths, "frame_lengths": frame_lengths}
    log_scores = label_log_scores(scores, log_softmax_over_time=settings.log_softmax_over_time,
                                  **lengths)
    blanks = blank_log_scores(log_scores, settings.blank_for(subsampling), **lengths)
    if quietness is not None and settings.silence_weight:
        quiet = torch.as_tensor(quietness).to(device=blanks.device, dtype=blanks.dtype)
        blanks = blanks + settings.silence_weight * quiet[:, : blanks.shape[1]]
    paths = viterbi_align_batch(log_scores, blanks, label_lengths, frame_lengths)
    alignments = []
    for item, path in enumerate(paths):
        num_labels, num_frames = int(label_lengths[item]), int(frame_lengths[item])
        alignment = alignment_from_label_frames(
            path.label_frames,
            tokens[item],
            frame_shift_s=frame_shift_s,
            subsampling=subsampling,
            num_frames=num_frames,
            method="gradient_viterbi",
            word_style=word_style,
            path=path.label_frame_pairs(),
            scores=log_scores[item, :num_labels, :num_frames].cpu().numpy(),
            path_score=path.path_score,
        )
        confidences = word_confidences(
            alignment.words, path.label_frames, log_scores[item, :num_labels, :num_frames].cpu()
            .double().numpy(), blanks[item, :num_frames].cpu().double().numpy())
        alignment.words = [replace(word, confidence=confidence)
                           for word, confidence in zip(alignment.words, confidences)]
        warning = low_confidence_warning(confidences)
        if warning is not None:
            alignment.warnings.append(warning)
        if settings.max_gap_s > 0 and frame_shift_s is not None:
            alignment = close_word_gaps(alignment, max_gap_s=settings.max_gap_s)
        alignments.append(alignment)
    return alignments
