"""The runner of the Hugging Face encoder-decoder families (Whisper, Speech2Text): running and
teacher-forcing a batch after the checkpoint's decoder prompt."""

from __future__ import annotations

import contextlib
from abc import abstractmethod
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from attnprobe.batch import SpeechBatch
from attnprobe.errors import CapabilityError, InputError
from attnprobe.lengths import valid_mask

from .hf_runner import HuggingFaceRunner
from .label_head import label_log_probs_from_hidden


class DecoderInputs(NamedTuple):
    """A teacher-forced decoder call: the prompt followed by the reference labels."""

    input_ids: torch.Tensor
    """``(batch, prompt + labels)``; padded label positions hold the pad token."""
    attention_mask: torch.Tensor
    """``(batch, prompt + labels)`` int64, 1 on the prompt and the valid labels."""
    labels: torch.Tensor
    """``(batch, labels)``, padded positions holding the pad token (a valid index to gather)."""
    valid: torch.Tensor
    """``(batch, labels)`` bool, True on valid labels."""


class HuggingFaceEncoderDecoderRunner(HuggingFaceRunner):
    """Running and teacher-forcing the encoder-decoder families (Whisper, Speech2Text).

    The decoder input is ``prompt_ids`` (an attribute: set it to the checkpoint's language / task
    tokens where it needs them) followed by the reference labels, so the logits at the last prompt
    position predict the first label. A subclass sets ``generation_class`` (the class with the
    output projection) and implements :meth:`encoder_inputs` and :meth:`default_prompt_ids`.
    """

    generation_class: ClassVar[str] = ""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.prompt_ids: list[int] = self.default_prompt_ids()

    @property
    def first_label_position(self) -> int:  # type: ignore[override]
        """The last prompt position: its output predicts the first label."""
        return max(len(self.prompt_ids) - 1, 0)

    @abstractmethod
    def encoder_inputs(self, batch: SpeechBatch) -> dict[str, torch.Tensor]:
        """Keyword arguments that feed ``batch.inputs`` to the model (features, padding mask)."""

    @abstractmethod
    def default_prompt_ids(self) -> list[int]:
        """The decoder prompt the checkpoint generates after (at least its start token)."""

    def generation_setting(self, name: str) -> Any:
        """``name`` from the model's generation config, else from its config, else None."""
        generation_config = getattr(self.model, "generation_config", None)
        value = getattr(generation_config, name, None)
        return value if value is not None else getattr(self.model.config, name, None)

    def run(self, batch: SpeechBatch) -> Any:
        """One forward pass: the encoder on ``batch.inputs``, the decoder on the prompt followed by
        the labels (the prompt alone without labels). Encoder-only models run the encoder."""
        stacks = self.stacks()
        if stacks.encoder is None:
            raise CapabilityError(f"{type(self.model).__name__} is a decoder without an encoder; "
                                  f"load {self.generation_class} to run speech through it")
        inputs = self.encoder_inputs(batch)
        with self.encoder_window(batch):
            if stacks.decoder is None:
                return self.model(**inputs)
            decoder = self.decoder_inputs(batch)
            return self.model(**inputs, decoder_input_ids=decoder.input_ids,
                              decoder_attention_mask=decoder.attention_mask, use_cache=False)

    def label_log_probs(self, batch: SpeechBatch) -> torch.Tensor:
        """``(batch, labels)`` teacher-forced ``log p(a_s | prompt, a_<s, X)``, 0 at padded labels;
        differentiable with respect to ``batch.inputs``."""
        stacks = self.stacks()
        if (stacks.encoder is None or stacks.decoder is None
                or self.model.get_output_embeddings() is None):
            raise CapabilityError(f"{type(self.model).__name__} has no encoder, decoder and output "
                                  f"projection together to score labels with; load "
                                  f"{self.generation_class} from the same checkpoint")
        if batch.labels is None:
            raise InputError("teacher forcing needs reference labels: give SpeechBatch(..., "
                             "labels=..., label_lengths=...), label ids without the prompt")
        decoder = self.decoder_inputs(batch)
        hidden = self.decoder_hidden_states(batch)
        first = len(self.prompt_ids) - 1
        predicting = hidden[:, first : first + decoder.labels.shape[1]]
        per_label = label_log_probs_from_hidden(predicting, self.model.get_output_embeddings(),
                                                decoder.labels)
        return per_label.masked_fill(~decoder.valid, 0.0)

    def decoder_hidden_states(self, batch: SpeechBatch) -> torch.Tensor:
        """``(batch, prompt + labels, width)``: the decoder's output before the output
        projection, teacher-forced with ``batch``'s labels."""
        base = getattr(self.model, "base_model", self.model)
        inputs = self.encoder_inputs(batch)
        decoder = self.decoder_inputs(batch)
        with self.encoder_window(batch):
            output = base(**inputs, decoder_input_ids=decoder.input_ids,
                          decoder_attention_mask=decoder.attention_mask, use_cache=False)
        return output.last_hidden_state

    def encoder_window(self, batch: SpeechBatch) -> contextlib.AbstractContextManager[None]:
        """What must hold while the model reads :meth:`encoder_inputs` of ``batch`` (nothing
        here; Whisper's fitted window changes its positional embedding for the call)."""
        return contextlib.nullcontext()

    def decoder_inputs(self, batch: SpeechBatch) -> DecoderInputs:
        """The prompt followed by ``batch``'s labels, checked against the decoder's limits."""
        config = self.model.config
        device = next(self.model.parameters()).device
        if not self.prompt_ids:
            raise InputError("adapter.prompt_ids is empty; the decoder needs at least its start "
                             f"token, {self.generation_setting('decoder_start_token_id')}")
        prompt = torch.tensor(self.prompt_ids, dtype=torch.long, device=device)
        batch_size = batch.batch_size
        if batch.labels is None or batch.label_lengths is None:
            labels = torch.zeros(batch_size, 0, dtype=torch.long, device=device)
            valid = torch.zeros(batch_size, 0, dtype=torch.bool, device=device)
        else:
            labels = batch.labels.to(device=device, dtype=torch.long)
            valid = valid_mask(batch.label_lengths.to(device), labels.shape[1])
        positions = len(self.prompt_ids) + labels.shape[1]
        if positions > config.max_target_positions:
            raise InputError(
                f"labels too long for the decoder: {labels.shape[1]} labels after a "
                f"{len(self.prompt_ids)}-token prompt take {positions} positions, but this "
                f"{type(self.model).__name__} has max_target_positions="
                f"{config.max_target_positions}; split the utterance into shorter segments")
        out_of_vocabulary = valid & ((labels < 0) | (labels >= config.vocab_size))
        if out_of_vocabulary.any():
            raise InputError(f"label ids must lie in [0, {config.vocab_size}), found "
                             f"{labels[out_of_vocabulary].unique().tolist()} at valid positions; "
                             f"tokenize with the checkpoint's tokenizer and mark padding with "
                             f"label_lengths")
        pad = self.generation_setting("pad_token_id")
        labels = labels.masked_fill(~valid, 0 if pad is None else pad)
        input_ids = torch.cat([prompt.expand(batch_size, -1), labels], dim=1)
        attention_mask = torch.cat([torch.ones(batch_size, len(self.prompt_ids), dtype=torch.bool,
                                               device=device), valid], dim=1).long()
        return DecoderInputs(input_ids, attention_mask, labels, valid)
