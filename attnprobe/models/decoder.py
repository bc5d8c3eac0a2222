"""The LSTM decoder with additive cross-attention (one LSTM layer, one attention head).

Per step, as in the authors' RETURNN setup: the LSTM reads the previous label's embedding and the
previous attention context; its output queries the encoder; a maxout readout of
(LSTM output, previous embedding, new context) gives the logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from .attention import AdditiveAttention, AttentionMemory
from .config import END_OF_SENTENCE_INDEX, ConformerAEDConfig


class DecoderState(NamedTuple):
    """What one step hands to the next: LSTM ``hidden``/``cell`` ``(batch, lstm_dim)``,
    attention ``context`` ``(batch, d_model)`` and ``accumulated_weights`` ``(batch, frames)``."""

    hidden: torch.Tensor
    cell: torch.Tensor
    context: torch.Tensor
    accumulated_weights: torch.Tensor


@dataclass
class DecoderOutput:
    """A teacher-forced pass over ``label_positions`` steps.

    Attributes:
        logits: ``(batch, label_positions, vocab)``.
        attention_weights: ``(batch, label_positions, enc_frames)``, zero on padded frames.
        contexts: ``(batch, label_positions, d_model)``, the attention outputs.
    """

    logits: torch.Tensor
    attention_weights: torch.Tensor
    contexts: torch.Tensor


class LSTMDecoder(nn.Module):
    """Embedding, LSTMCell, :class:`AdditiveAttention` (child ``cross_attn``), maxout readout."""

    def __init__(self, config: ConformerAEDConfig) -> None:
        super().__init__()
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim)
        self.lstm = nn.LSTMCell(config.embed_dim + config.d_model, config.lstm_dim)
        self.cross_attn = AdditiveAttention(config.d_model, config.lstm_dim, config.attention_dim)
        self.readout = nn.Linear(config.lstm_dim + config.embed_dim + config.d_model, config.readout_dim)
        self.readout_dropout = nn.Dropout(config.dropout)
        self.output = nn.Linear(config.readout_dim // 2, config.vocab_size)

    def initial_state(self, memory: AttentionMemory) -> DecoderState:
        """All-zero LSTM state, context and accumulated weights for ``memory``'s batch."""
        batch, frames, d_model = memory.values.shape
        zeros = memory.values.new_zeros
        return DecoderState(
            hidden=zeros(batch, self.lstm.hidden_size),
            cell=zeros(batch, self.lstm.hidden_size),
            context=zeros(batch, d_model),
            accumulated_weights=zeros(batch, frames),
        )

    def step(
        self, previous_labels: torch.Tensor, state: DecoderState, memory: AttentionMemory,
        position: int = 0,
    ) -> tuple[torch.Tensor, DecoderState, torch.Tensor]:
        """One label position.

        Args:
            previous_labels: ``(batch,)`` int64, :data:`END_OF_SENTENCE_INDEX` at the first step.
            state: from :meth:`initial_state` or the previous step.
            memory: from ``cross_attn.remember``.
            position: the label position of this step (0 first).

        Returns:
            logits ``(batch, vocab)``, the next state, attention weights ``(batch, frames)``.
        """
        embedded = self.embedding(previous_labels)
        hidden, cell = self.lstm(torch.cat([embedded, state.context], dim=-1), (state.hidden, state.cell))
        context, weights = self.cross_attn(hidden, memory, state.accumulated_weights, position)
        readout = self.readout(torch.cat([hidden, embedded, context], dim=-1))
        readout = readout.view(*readout.shape[:-1], -1, 2).amax(dim=-1)  # maxout over pairs
        logits = self.output(self.readout_dropout(readout))
        accumulated = self.cross_attn.accumulate(state.accumulated_weights, weights, memory)
        return logits, DecoderState(hidden, cell, context, accumulated), weights

    def forward(
        self, encoder_out: torch.Tensor, encoder_lengths: torch.Tensor, previous_labels: torch.Tensor,
        label_positions: torch.Tensor | None = None,
    ) -> DecoderOutput:
        """Teacher-forced decoding.

        Args:
            encoder_out: ``(batch, enc_frames, d_model)``.
            encoder_lengths: ``(batch,)``.
            previous_labels: ``(batch, label_positions)`` int64, the label before each position
                (begin-of-sentence first). Later positions never influence earlier ones, so any
                value may fill the padding.
            label_positions: ``(batch,)`` valid positions per sequence (labels + end), for the
                reversed hard cross-attention target; ``None``: unknown.

        Returns:
            :class:`DecoderOutput` over ``label_positions`` steps.
        """
        memory = self.cross_attn.remember(encoder_out, encoder_lengths)
        memory.label_positions = label_positions
        state = self.initial_state(memory)
        logits, weights, contexts = [], [], []
        for position in range(previous_labels.shape[1]):
            step_logits, state, step_weights = self.step(previous_labels[:, position], state, memory,
                                                         position)
            logits.append(step_logits)
            weights.append(step_weights)
            contexts.append(state.context)
        output = DecoderOutput(
            logits=torch.stack(logits, dim=1),
            attention_weights=torch.stack(weights, dim=1),
            contexts=torch.stack(contexts, dim=1),
        )
        self._report_to_taps(output.attention_weights, output.contexts)
        return output

    @torch.no_grad()
    def greedy_decode(
        self, encoder_out: torch.Tensor, encoder_lengths: torch.Tensor, max_labels: int
    ) -> list[list[int]]:
        """Best label per step until end-of-sentence or ``max_labels`` labels.

        Args:
            encoder_out: ``(batch, enc_frames, d_model)``.
            encoder_lengths: ``(batch,)``.
            max_labels: most labels per hypothesis; one more step may still end it.

        Returns:
            One label list per sequence, without the end-of-sentence symbol. The taps receive all
            steps at the end; steps after a hypothesis ended are computed but meaningless.
        """
        memory = self.cross_attn.remember(encoder_out, encoder_lengths)
        state = self.initial_state(memory)
        batch = encoder_out.shape[0]
        previous = torch.full((batch,), END_OF_SENTENCE_INDEX, dtype=torch.long, device=encoder_out.device)
        hypotheses: list[list[int]] = [[] for _ in range(batch)]
        finished = [False] * batch
        weights, contexts = [], []
        for position in range(max_labels + 1):
            logits, state, step_weights = self.step(previous, state, memory, position)
            weights.append(step_weights)
            contexts.append(state.context)
            previous = logits.argmax(dim=-1)
            for index, label in enumerate(previous.tolist()):
                if finished[index]:
                    continue
                if label == END_OF_SENTENCE_INDEX or position == max_labels:
                    finished[index] = True
                else:
                    hypotheses[index].append(label)
            if all(finished):
                break
        self._report_to_taps(torch.stack(weights, dim=1), torch.stack(contexts, dim=1))
        return hypotheses

    def _report_to_taps(self, weights: torch.Tensor, contexts: torch.Tensor) -> None:
        """Hand ``weights (batch, steps, frames)`` and ``contexts (batch, steps, d_model)`` to the taps."""
        if self.cross_attn.attention_tap.active > 0:
            self.cross_attn.attention_tap(weights[:, None])
        if self.cross_attn.context_tap.active > 0:
            self.cross_attn.context_tap(contexts)
