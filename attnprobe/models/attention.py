"""The two attention mechanisms of the model: encoder self-attention and decoder cross-attention.

Both expose their probabilities through taps (:mod:`attnprobe.taps`) and compute them explicitly
only while a tap is active, so an untraced forward pays nothing for traceability.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from attnprobe.lengths import valid_mask

from ..taps import AttentionTap, Tap


class RelativePositionSelfAttention(nn.Module):
    """Multi-head self-attention with Shaw-style learnable relative positions for the keys.

    The score of query frame ``i`` for key frame ``j`` is
    ``(q_i . k_j + q_i . E[clip(j - i, -clip, clip)]) / sqrt(d_head)``; one embedding table ``E``
    of ``(2 * clip + 1, d_head)`` is shared by all heads. Beyond ``clip`` frames every distance looks
    the same, so absolute position is only visible near the sequence edges (paper section 4).

    Attributes:
        disabled: when ``True``, return ``output(value(x))``: the per-frame value projection and the
            output projection, with nothing mixed across time (the paper's "self-attention off"
            mitigation; set by :meth:`ConformerAED.set_training_step`).
        attention_tap: receives the probabilities ``(batch, heads, query_frames, key_frames)``
            while ``attention_tap.active > 0``. They are the pre-dropout probabilities; padded keys
            get exactly 0, padded query rows are finite but meaningless.
    """

    def __init__(self, d_model: int, heads: int, rel_pos_clip: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = d_model // heads
        self.rel_pos_clip = rel_pos_clip
        self.attention_dropout = dropout
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.output = nn.Linear(d_model, d_model)
        self.relative_key_embedding = nn.Embedding(2 * rel_pos_clip + 1, self.head_dim)
        self.attention_tap = AttentionTap()
        self.disabled = False

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Attend over the valid frames of each sequence.

        Args:
            x: ``(batch, frames, d_model)``, already layer-normalised.
            lengths: ``(batch,)`` valid frames; keys beyond them are masked.

        Returns:
            ``(batch, frames, d_model)``.
        """
        values = self.value(x)
        if self.disabled:
            return self.output(values)
        batch, frames, d_model = x.shape
        queries = self._split_heads(self.query(x))
        keys = self._split_heads(self.key(x))
        values = self._split_heads(values)
        key_padding = ~valid_mask(lengths, frames)[:, None, None, :]
        score_bias = self._relative_position_bias(queries).masked_fill(key_padding, float("-inf"))
        attended = F.scaled_dot_product_attention(
            queries,
            keys,
            values,
            attn_mask=score_bias,
            dropout_p=self.attention_dropout if self.training else 0.0,
        )
        if self.attention_tap.active > 0:
            scores = queries @ keys.transpose(-1, -2) / math.sqrt(self.head_dim) + score_bias
            self.attention_tap(torch.softmax(scores, dim=-1))
        return self.output(attended.transpose(1, 2).reshape(batch, frames, d_model))

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, frames, d_model)`` -> ``(batch, heads, frames, head_dim)``."""
        batch, frames, _ = x.shape
        return x.view(batch, frames, self.heads, self.head_dim).transpose(1, 2)

    def _relative_position_bias(self, queries: torch.Tensor) -> torch.Tensor:
        """``q_i . E[clip(j - i)] / sqrt(d_head)`` as ``(batch, heads, query_frames, key_frames)``.

        Scores against the ``2 * clip + 1`` embeddings are computed once and then gathered per
        (i, j), instead of materialising a ``(frames, frames, head_dim)`` embedding tensor.
        """
        batch, heads, frames, _ = queries.shape
        positions = torch.arange(frames, device=queries.device)
        offsets = (positions[None, :] - positions[:, None]).clamp(-self.rel_pos_clip, self.rel_pos_clip)
        per_offset = queries @ self.relative_key_embedding.weight.T / math.sqrt(self.head_dim)
        index = (offsets + self.rel_pos_clip).expand(batch, heads, frames, frames)
        return per_offset.gather(-1, index)


@dataclass
class AttentionMemory:
    """What cross-attention precomputes once per utterance from the encoder output.

    Attributes:
        values: ``(batch, frames, encoder_dim)`` encoder output, zero on padded frames.
        keys: ``(batch, frames, attention_dim)`` projected encoder output.
        feedback_scale: ``(batch, frames)`` how much of each frame's weight is accumulated for the
            weight feedback (0.5 x a learned inverse fertility in (0, 1), as in the authors' setup).
        valid: ``(batch, frames)`` bool, ``False`` on padding.
        center: ``(batch, frames)`` one-hot on frame ``floor(length / 2)``.
        label_positions: ``(batch,)`` label positions of each sequence (labels + end), when the
            decoder knows them (teacher forcing); the reversed hard target spreads over them.
    """

    values: torch.Tensor
    keys: torch.Tensor
    feedback_scale: torch.Tensor
    valid: torch.Tensor
    center: torch.Tensor
    label_positions: torch.Tensor | None = None

    def reversed_diagonal(self, position: int) -> torch.Tensor:
        """``(batch, frames)`` one-hot on frame ``round((T - 1) (1 - s / (P - 1)))`` for label
        position ``s = position``: the first label on the last frame, the last on the first.
        Without ``label_positions`` (free decoding), ``P`` is the frame count."""
        return self._diagonal(position, backwards=True)

    def diagonal(self, position: int) -> torch.Tensor:
        """``(batch, frames)`` one-hot on frame ``round((T - 1) s / (P - 1))``: the mirror image of
        :meth:`reversed_diagonal`, a decoder that reads the encoder output in order."""
        return self._diagonal(position, backwards=False)

    def _diagonal(self, position: int, backwards: bool) -> torch.Tensor:
        lengths = self.valid.sum(-1)
        positions = lengths if self.label_positions is None else self.label_positions
        progress = (position / (positions - 1).clamp(min=1)).clamp(max=1.0)
        frame = torch.round((lengths - 1) * (1.0 - progress if backwards else progress)).long()
        return F.one_hot(frame, self.valid.shape[1]).to(self.values.dtype)

    def hard_target(self, target: str, position: int) -> torch.Tensor:
        """``(batch, frames)`` one-hot of the hard cross-attention ``target`` at label position
        ``position``: ``"centre"`` (frame ``floor(T / 2)``), ``"start"`` (frame 0),
        ``"reversed"`` (:meth:`reversed_diagonal`) or ``"diagonal"`` (:meth:`diagonal`)."""
        if target == "centre":
            return self.center
        if target == "start":
            start = torch.zeros_like(self.center)
            start[:, 0] = 1.0
            return start
        if target == "diagonal":
            return self.diagonal(position)
        return self.reversed_diagonal(position)


class AdditiveAttention(nn.Module):
    """Single-head MLP attention with weight feedback, called once per decoder step.

    ``energy_t = w . tanh(K h_t + Q s + F a_t)`` where ``a_t`` is the accumulated attention weight
    of frame ``t`` over the previous steps. Padded frames get weight exactly 0.

    Attributes:
        hard_center_weight: 0 gives the learned soft weights, 1 a hard one-hot on frame
            ``floor(length / 2)``, values in between the linear blend of the two weight vectors.
        hard_target: ``"centre"``, ``"start"``, ``"reversed"`` or ``"diagonal"``: the one-hot
            of ``hard_center_weight`` on the centre frame, the first frame, the anti-diagonal or
            the diagonal (:meth:`AttentionMemory.hard_target`).
        attention_tap: the decoder passes it all steps' weights ``(batch, 1, label_positions,
            frames)`` once per forward, while ``attention_tap.active > 0``.
        context_tap: likewise the attention outputs ``(batch, label_positions, encoder_dim)``.
    """

    def __init__(self, encoder_dim: int, query_dim: int, attention_dim: int) -> None:
        super().__init__()
        self.key_projection = nn.Linear(encoder_dim, attention_dim)
        self.query_projection = nn.Linear(query_dim, attention_dim, bias=False)
        self.weight_feedback = nn.Linear(1, attention_dim, bias=False)
        self.inverse_fertility = nn.Linear(encoder_dim, 1, bias=False)
        self.energy = nn.Linear(attention_dim, 1, bias=False)
        self.attention_tap = AttentionTap()
        self.context_tap = Tap()
        self.hard_center_weight = 0.0
        self.hard_target = "centre"

    def remember(self, encoder_out: torch.Tensor, encoder_lengths: torch.Tensor) -> AttentionMemory:
        """Precompute the per-frame parts of the energies for ``encoder_out (batch, frames, dim)``."""
        frames = encoder_out.shape[1]
        valid = valid_mask(encoder_lengths, frames)
        values = encoder_out.masked_fill(~valid[..., None], 0.0)
        center_frame = torch.div(encoder_lengths, 2, rounding_mode="floor")
        center = F.one_hot(center_frame, frames).to(encoder_out.dtype)
        return AttentionMemory(
            values=values,
            keys=self.key_projection(values),
            feedback_scale=0.5 * torch.sigmoid(self.inverse_fertility(values)).squeeze(-1),
            valid=valid,
            center=center,
        )

    def forward(
        self, query: torch.Tensor, memory: AttentionMemory, accumulated_weights: torch.Tensor,
        position: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One decoder step of attention.

        Args:
            query: ``(batch, query_dim)`` decoder LSTM output.
            memory: from :meth:`remember`.
            accumulated_weights: ``(batch, frames)`` from :meth:`accumulate` over previous steps.
            position: the label position (decoder step), for the anti-diagonal hard target.

        Returns:
            context ``(batch, encoder_dim)`` and weights ``(batch, frames)``.
        """
        energy_input = (
            memory.keys
            + self.query_projection(query)[:, None, :]
            + self.weight_feedback(accumulated_weights[..., None])
        )
        energies = self.energy(torch.tanh(energy_input)).squeeze(-1)
        weights = torch.softmax(energies.masked_fill(~memory.valid, float("-inf")), dim=-1)
        if self.hard_center_weight > 0.0:
            target = memory.hard_target(self.hard_target, position)
            weights = (1.0 - self.hard_center_weight) * weights + self.hard_center_weight * target
        context = (weights[:, None, :] @ memory.values).squeeze(1)
        return context, weights

    @staticmethod
    def accumulate(
        accumulated_weights: torch.Tensor, weights: torch.Tensor, memory: AttentionMemory
    ) -> torch.Tensor:
        """Weight feedback state after a step with ``weights``; all ``(batch, frames)``."""
        return accumulated_weights + weights * memory.feedback_scale
