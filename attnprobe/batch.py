"""A padded batch of speech with optional reference labels: what probes hand to adapters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch

from .errors import InputError


@dataclass
class SpeechBatch:
    """Model inputs plus optional teacher-forcing labels.

    Attributes:
        inputs: the model's main input: ``(batch, frames, features)`` features (log-mel) or
            ``(batch, samples)`` waveform, whichever the model's forward takes.
        input_lengths: ``(batch,)`` valid frames (or samples) per sequence.
        labels: ``(batch, labels)`` int64 reference label ids without begin/end symbols, or None.
        label_lengths: ``(batch,)`` valid labels per sequence, or None.
    """

    inputs: torch.Tensor
    input_lengths: torch.Tensor
    labels: torch.Tensor | None = None
    label_lengths: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.input_lengths.dim() != 1 or self.input_lengths.numel() != self.inputs.shape[0]:
            raise InputError(
                f"input_lengths must be (batch,) = ({self.inputs.shape[0]},), got "
                f"{tuple(self.input_lengths.shape)}; pass one valid length per sequence")
        if int(self.input_lengths.max()) > self.inputs.shape[1]:
            raise InputError(
                f"input_lengths max {int(self.input_lengths.max())} exceeds the "
                f"{self.inputs.shape[1]} frames of inputs; lengths count valid frames, not padding")
        if self.inputs.is_floating_point() and not torch.isfinite(self.inputs).all():
            raise InputError("inputs contain NaN or infinite values; clean or re-extract the "
                             "features before probing")
        if (self.labels is None) != (self.label_lengths is None):
            raise InputError("give labels and label_lengths together")
        if self.labels is not None and self.label_lengths is not None:
            if self.labels.shape[0] != self.inputs.shape[0]:
                raise InputError(f"labels have batch {self.labels.shape[0]} but inputs have "
                                 f"{self.inputs.shape[0]}")
            if int(self.label_lengths.min()) < 1:
                raise InputError("an empty transcription cannot be aligned or teacher-forced; "
                                 "drop that utterance or give its reference labels")

    @property
    def batch_size(self) -> int:
        return int(self.inputs.shape[0])

    def with_inputs(self, inputs: torch.Tensor) -> SpeechBatch:
        """The same batch with other inputs (e.g. a copy that requires grad)."""
        return SpeechBatch(inputs, self.input_lengths, self.labels, self.label_lengths)

    def without_labels(self) -> SpeechBatch:
        """The same inputs without reference labels."""
        return SpeechBatch(self.inputs, self.input_lengths)

    def item(self, index: int) -> SpeechBatch:
        """Sequence ``index`` alone, unpadded."""
        length = int(self.input_lengths[index])
        labels = label_lengths = None
        if self.labels is not None and self.label_lengths is not None:
            count = int(self.label_lengths[index])
            labels = self.labels[index : index + 1, :count]
            label_lengths = self.label_lengths[index : index + 1]
        return SpeechBatch(self.inputs[index : index + 1, :length],
                           self.input_lengths[index : index + 1], labels, label_lengths)


BatchForm = Union[SpeechBatch, tuple, list]
"""A :class:`SpeechBatch`, or ``(inputs, input_lengths)``, or ``(inputs, input_lengths, labels,
label_lengths)``: what every probe accepts as its batch."""


def as_speech_batch(batch: BatchForm) -> SpeechBatch:
    """Accept a :class:`SpeechBatch` or ``(features, lengths[, labels, label_lengths])``."""
    if isinstance(batch, SpeechBatch):
        return batch
    if isinstance(batch, (tuple, list)) and len(batch) in (2, 4):
        return SpeechBatch(*batch)
    raise InputError("pass a SpeechBatch or a tuple (features, lengths) or (features, lengths, "
                     "labels, label_lengths)")
