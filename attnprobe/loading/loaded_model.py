"""What :func:`attnprobe.loading.load_model` returns: a model with everything needed to feed it
audio and text."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from attnprobe.adapters import Adapter
from attnprobe.batch import SpeechBatch
from attnprobe.errors import InputError, ModelLoadError

from .transcripts import TextTokenizer, Transcript


@dataclass
class LoadedModel:
    """A model in eval mode with its adapter, its input pipeline and its tokenizer.

    Attributes:
        model: the torch module.
        adapter: its attnprobe site map and runner.
        name: what to call it in reports.
        sample_rate: audio rate the input pipeline expects, Hz.
        extract: ``(samples,)`` float audio at ``sample_rate`` -> the model's input for one
            utterance: ``(frames, features)`` features or ``(samples,)`` waveform.
        tokenizer: text -> label ids and token strings; ``None`` when the model came without one.
        transcriber: audio -> the model's own greedy transcript (decoder models), or ``None``.
        ctc_blank: blank id of a CTC head.
        alignment_heads: ``(decoder layer, head)`` pairs for cross-attention DTW; ``None``: all
            heads of the upper half of the decoder.
        max_seconds: longest audio the model reads in one piece, or ``None``.
        trained: ``False`` for randomly initialised stand-ins.
        notes: what a report on this model should mention (e.g. a missing normalisation).
    """

    model: nn.Module
    adapter: Adapter
    name: str
    sample_rate: int
    extract: Callable[[np.ndarray], torch.Tensor]
    tokenizer: TextTokenizer | None = None
    transcriber: Callable[[np.ndarray], str] | None = None
    ctc_blank: int | None = None
    alignment_heads: list[tuple[int, int]] | None = None
    max_seconds: float | None = None
    trained: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def family(self) -> str:
        return self.adapter.family

    @property
    def word_style(self) -> str:
        """How the tokenizer's strings form words (``"auto"`` without a tokenizer)."""
        return "auto" if self.tokenizer is None else self.tokenizer.word_style

    @property
    def first_label_position(self) -> int:
        """Decoder position whose query predicts the first label (the last prompt position)."""
        return self.adapter.runner.first_label_position

    def inputs(self, samples: np.ndarray) -> torch.Tensor:
        """The model input of one utterance (see ``extract``)."""
        duration = len(samples) / self.sample_rate
        if self.max_seconds is not None and duration > self.max_seconds:
            raise InputError(f"the audio lasts {duration:.1f} s but {self.name} reads at most "
                             f"{self.max_seconds:g} s at a time; cut it into shorter pieces")
        return self.extract(samples)

    def transcript(self, text: str) -> Transcript:
        """Label ids and token strings of ``text`` (raises when the model has no tokenizer)."""
        if self.tokenizer is None:
            raise ModelLoadError(f"{self.name} came without a tokenizer, so text cannot be turned "
                                 f"into its labels; add the tokenizer files (tokenizer.json, or "
                                 f"vocab.json for CTC models) to the model folder")
        return self.tokenizer.encode(text)

    def spelled_transcript(self, text: str) -> Transcript:
        """``text`` as single-character labels of the model's vocabulary (byte-level BPE:
        ``"Ġt" "h" "e"``), the targets gradient alignment teacher-forces for Whisper."""
        self.transcript(text)  # the same checks and errors as the model's own tokens
        assert self.tokenizer is not None
        return self.tokenizer.spell(text)

    def batch(self, samples: np.ndarray, transcript: Transcript | None = None) -> SpeechBatch:
        """A one-utterance :class:`SpeechBatch`, teacher-forced with ``transcript`` if given."""
        inputs = self.inputs(samples)
        lengths = torch.tensor([inputs.shape[0]])
        if transcript is None:
            return SpeechBatch(inputs[None], lengths)
        return SpeechBatch(inputs[None], lengths, torch.tensor([transcript.ids]),
                           torch.tensor([len(transcript.ids)]))

    def transcribe(self, samples: np.ndarray) -> str | None:
        """The model's own transcript of ``samples``, or ``None`` when it cannot decode."""
        return None if self.transcriber is None else self.transcriber(samples)


