"""The alignment of one utterance: label spans, word spans, and how frames map to seconds.

Every aligner in this package (gradient Viterbi, cross-attention DTW, CTC forced alignment, the
evenly-spaced floor) returns an :class:`Alignment`, so the metrics, exports and plots treat them
alike.

Frames and seconds: the score matrix has one column per model frame. With input features every
``frame_shift_s`` seconds and a frontend that subsamples by ``subsampling``, model frame ``i``
covers ``[i * subsampling * frame_shift_s, (i + 1) * subsampling * frame_shift_s)``. Where the
frame shift is unknown (a model whose runner does not say it), ``frame_shift_s`` and every
``*_s`` time are ``None``: the alignment is in frames only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class LabelSpan:
    """Frames of one label (a token position of the transcript).

    Attributes:
        index: position of the label in the transcript, ``0 .. labels - 1``.
        text: the token string.
        start_frame: first model frame of the label.
        end_frame: one past its last frame (``end_frame > start_frame``).
        start_s: start of ``start_frame`` in seconds (``None``: frame shift unknown).
        end_s: end of frame ``end_frame - 1`` in seconds (``None``: frame shift unknown).
    """

    index: int
    text: str
    start_frame: int
    end_frame: int
    start_s: float | None
    end_s: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "text": self.text,
            "start_frame": self.start_frame,
            "end_frame": self.end_frame,
            "start_s": self.start_s,
            "end_s": self.end_s,
        }


@dataclass(frozen=True)
class WordSpan:
    """Time of one word: from the first frame of its first token to the last frame of its last.

    Attributes:
        text: the word as written (sub-word markers removed).
        start_s: start time in seconds (``None``: frame shift unknown).
        end_s: end time in seconds (``None``: frame shift unknown).
        start_frame: first model frame.
        end_frame: one past the last model frame.
        label_start: index of the word's first label.
        label_end: one past the index of its last label.
        confidence: how clearly the word's labels stand above the blank, in ``(0, 1)``
            (:mod:`.confidence`); ``None`` where the aligner has no blank to compare with.
    """

    text: str
    start_s: float | None
    end_s: float | None
    start_frame: int
    end_frame: int
    label_start: int
    label_end: int
    confidence: float | None = None

    @property
    def centre_s(self) -> float | None:
        if self.start_s is None or self.end_s is None:
            return None
        return (self.start_s + self.end_s) / 2

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "start_s": self.start_s,
            "end_s": self.end_s,
            "start_frame": self.start_frame,
            "end_frame": self.end_frame,
            "label_start": self.label_start,
            "label_end": self.label_end,
            "confidence": self.confidence,
        }


@dataclass
class Alignment:
    """Labels and words of one utterance placed on its time axis.

    Attributes:
        labels: one :class:`LabelSpan` per label, in transcript order.
        words: the labels grouped into words, in transcript order.
        frame_shift_s: shift of the input features in seconds (0.01 for 10 ms log-mels);
            ``None`` when unknown (times are then ``None``; frames are always there).
        subsampling: frontend subsampling factor between input features and score columns.
        num_frames: valid model frames of the utterance (score-matrix columns).
        method: which aligner produced this (``"gradient_viterbi"``, ``"cross_attention_dtw"``,
            ``"ctc_forced_alignment"``, ``"evenly_spaced"``).
        path: ``(steps, 2)`` int64 pairs ``(label index, frame)`` the aligner visited, or ``None``.
        scores: ``(labels, frames)`` the matrix the aligner worked on, or ``None``.
        path_score: the aligner's objective along its path (summed log score for Viterbi and CTC,
            summed cost for DTW), or ``None`` where the method has none.
        warnings: why these times may mean nothing (no speech in the audio, a transcript the
            model finds very unlikely), one line each; every export carries them.
    """

    labels: list[LabelSpan]
    words: list[WordSpan]
    frame_shift_s: float | None
    subsampling: int
    num_frames: int
    method: str
    path: np.ndarray | None = field(default=None, repr=False)
    scores: np.ndarray | None = field(default=None, repr=False)
    path_score: float | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def in_seconds(self) -> bool:
        """Whether the frame shift is known, so that spans carry times in seconds."""
        return self.frame_shift_s is not None

    @property
    def seconds_per_frame(self) -> float | None:
        """Duration of one score-matrix column in seconds (``None``: frame shift unknown)."""
        return None if self.frame_shift_s is None else self.frame_shift_s * self.subsampling

    @property
    def duration_s(self) -> float | None:
        """Duration of the valid frames in seconds (``None``: frame shift unknown)."""
        seconds = self.seconds_per_frame
        return None if seconds is None else self.num_frames * seconds

    def require_seconds(self, purpose: str) -> None:
        """Raise :class:`attnprobe.errors.CapabilityError` for ``purpose`` when the alignment has
        frames only."""
        if not self.in_seconds:
            from attnprobe.errors import CapabilityError

            raise CapabilityError(
                f"{purpose} needs times in seconds, but this alignment counts frames: the "
                f"model's runner does not know its frame shift. Give the runner a "
                f"frame_shift_seconds (seconds per frame of batch.inputs) and align again")

    def to_dict(self, include_scores: bool = False) -> dict[str, Any]:
        """JSON-ready dictionary; the score matrix only with ``include_scores`` (it is large)."""
        result: dict[str, Any] = {
            "method": self.method,
            "frame_shift_s": self.frame_shift_s,
            "subsampling": self.subsampling,
            "num_frames": self.num_frames,
            "duration_s": self.duration_s,
            "path_score": self.path_score,
            "labels": [label.to_dict() for label in self.labels],
            "words": [word.to_dict() for word in self.words],
            "path": None if self.path is None else self.path.tolist(),
            "warnings": list(self.warnings),
        }
        if include_scores:
            result["scores"] = None if self.scores is None else self.scores.tolist()
        return result

    def to_json(self, indent: int | None = None, include_scores: bool = False) -> str:
        return json.dumps(self.to_dict(include_scores=include_scores), indent=indent)

    def summary(self) -> str:
        """A readable table of the words with their times (frames when the shift is unknown)."""
        if not self.in_seconds:
            return self._frame_summary()
        assert self.duration_s is not None and self.seconds_per_frame is not None
        header = (
            f"Alignment ({self.method}): {len(self.words)} words, {len(self.labels)} labels, "
            f"{self.duration_s:.2f} s ({self.num_frames} frames x "
            f"{self.seconds_per_frame * 1000:g} ms)"
        )
        width = max([len("word")] + [len(word.text) for word in self.words])
        rows = [header, f"  {'word':<{width}}  {'start_s':>8}  {'end_s':>8}"]
        rows += [
            f"  {word.text:<{width}}  {word.start_s:8.3f}  {word.end_s:8.3f}" for word in self.words
        ]
        rows += [f"  warning: {warning}" for warning in self.warnings]
        return "\n".join(rows)

    def _frame_summary(self) -> str:
        header = (f"Alignment ({self.method}): {len(self.words)} words, {len(self.labels)} "
                  f"labels, {self.num_frames} frames (frame shift unknown: times in frames of "
                  f"{self.subsampling} input frame{'s' if self.subsampling > 1 else ''})")
        width = max([len("word")] + [len(word.text) for word in self.words])
        rows = [header, f"  {'word':<{width}}  {'start':>6}  {'end':>6}"]
        rows += [f"  {word.text:<{width}}  {word.start_frame:6d}  {word.end_frame:6d}"
                 for word in self.words]
        rows += [f"  warning: {warning}" for warning in self.warnings]
        return "\n".join(rows)

    def __str__(self) -> str:
        return self.summary()

    def plot(self, ax: Axes | None = None) -> Figure:
        """Score matrix (labels x seconds) with the path and word boundaries (needs
        ``pip install 'attnprobe[plot]'``; see :func:`attnprobe.plotting.plot_alignment`)."""
        from attnprobe.plotting.alignment import plot_alignment

        return plot_alignment(self, ax=ax)
