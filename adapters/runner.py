"""The runner: how to run a batch through one model and read what the probes need from it.

The trace only needs the site map; the probes also need to run the model themselves (the frame
mapping runs the encoder once per block, gradient alignment teacher-forces the transcript). A
runner is that knowledge, kept apart so that a model attnprobe does not know — an ESPnet, NeMo,
SpeechBrain, icefall or in-house model — can bring its own in a few lines and pass it as
``runner=`` to :func:`attnprobe.reversal_report`, :class:`attnprobe.FlipMonitor`,
:func:`attnprobe.probes.streaming_probes` and :func:`attnprobe.gradient_alignment`::

    class MyRunner(attnprobe.adapters.Runner):
        frame_shift_seconds = 0.01          # seconds per frame of batch.inputs (None: unknown)
        subsampling = 4                     # input frames per encoder frame

        def run(self, batch):               # one forward pass, teacher-forced with labels
            return self.model(batch.inputs, batch.input_lengths, batch.labels)

        def label_log_probs(self, batch):   # (batch, labels) log p(a_s | a_<s, X)
            ...

The protocol, all of it optional except ``run``:

- ``run(batch)``: one forward pass on a :class:`~attnprobe.batch.SpeechBatch` (teacher-forced
  when it carries labels). Every reversal probe needs it.
- ``label_log_probs(batch)``: ``(batch, labels)`` teacher-forced label log-probabilities, for the
  decoder probes and gradient alignment; or ``ctc_log_probs(batch)`` (log-posteriors and valid
  frames) with ``ctc_blank`` for a CTC model.
- ``frame_shift_seconds`` (``None``: unknown, and alignments count frames instead of seconds),
  ``subsampling`` (input frames per encoder-input frame), ``first_label_position``.
- ``encoder_lengths(input_lengths)``: valid encoder frames, for models whose encoder does not get
  a padding mask; ``example_batch()``: a small batch the model takes, so that discovery can watch
  one forward pass (:mod:`attnprobe.adapters.discovery`) before any probe runs.

Every method a runner does not implement raises :class:`attnprobe.errors.CapabilityError`
naming what is missing; the probes that need it say so instead of failing the report.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any, ClassVar

import torch
from torch import nn

from attnprobe.batch import SpeechBatch
from attnprobe.errors import CapabilityError


class Runner:
    """Runs one model on a :class:`~attnprobe.batch.SpeechBatch` (the base of every runner).

    Attributes:
        family: a name for messages.
        frame_shift_seconds: seconds between two frames of ``batch.inputs`` (0.01 for 10 ms
            features, ``1 / 16000`` for 16 kHz waveforms); ``None`` where unknown.
        first_label_position: decoder position whose output predicts the first reference label (the
            last prompt position; 0 for models without a prompt).
        ctc_blank: blank id of a CTC head, or ``None``.
    """

    family: ClassVar[str] = "custom"
    frame_shift_seconds: float | None = None
    first_label_position: int = 0
    ctc_blank: int | None = None

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def run(self, batch: SpeechBatch) -> Any:
        """One forward pass of the model on ``batch`` (teacher-forced when it carries labels)."""
        raise CapabilityError(
            f"attnprobe cannot run a batch through {type(self.model).__name__} by itself: pass "
            f"runner=<an attnprobe.adapters.Runner whose run(batch) calls your model> to the "
            f"probe (see the README section 'Probes on your own model')")

    def label_log_probs(self, batch: SpeechBatch) -> torch.Tensor:
        """Teacher-forced ``log p(a_s | a_<s, X)`` per reference label, ``(batch, labels)``.

        Differentiable with respect to ``batch.inputs``; 0 at padded label positions.
        """
        raise CapabilityError(f"the {self.family} runner has no teacher-forced label "
                              f"probabilities; gradient alignment needs a decoder or CTC head")

    def ctc_log_probs(self, batch: SpeechBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """CTC log-posteriors ``(batch, frames, vocab)`` and valid frames ``(batch,)``.

        Differentiable with respect to ``batch.inputs``.
        """
        raise CapabilityError(f"the {self.family} runner has no CTC output; use "
                              f"label_log_probs for attention decoders")

    def fitted_window(self, margin_seconds: float | None, decoder_only: bool = False
                      ) -> AbstractContextManager[None]:
        """Inside: a model that pads every input to a fixed window (Whisper's 30 s) runs on
        the longest utterance of the batch plus ``margin_seconds`` instead (``None``: the full
        window); ``decoder_only``: the encoder still reads the full window, the decoder only
        the fitted part of its output. Runners of models without such a window change nothing."""
        return nullcontext()

    def encoder_output_gradients_only(self, frames: torch.Tensor
                                      ) -> AbstractContextManager[None]:
        """Inside: gradients are wanted at the encoder's output only, and only at its first
        ``frames[i]`` frames of item ``i``; a runner may skip the backward work of the others
        (Whisper: its silence padding) where that leaves those gradients exact. Default:
        nothing skipped."""
        return nullcontext()

    @property
    def subsampling(self) -> int:
        """Input frames (of ``batch.inputs``) per output frame of the encoder."""
        raise CapabilityError(f"the {self.family} runner does not know its subsampling factor")

    def encoder_lengths(self, input_lengths: torch.Tensor) -> torch.Tensor | None:
        """``(batch,)`` valid encoder frames of a batch with ``input_lengths`` valid input frames;
        ``None`` (the default) leaves them to the padding masks the encoder receives."""
        return None

    def example_batch(self) -> SpeechBatch | None:
        """A small batch this runner can ``run``, for discovery to watch; ``None`` (the default)
        when there is none (the probes then discover with their own batch)."""
        return None
