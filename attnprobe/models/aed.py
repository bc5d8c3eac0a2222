"""The whole model: Conformer encoder, LSTM attention decoder, optional auxiliary CTC heads.

Label tensors hold real labels only (no begin/end symbols), padded with
:data:`~attnprobe.models.config.BLANK_INDEX`; the model adds begin-of-sentence in front of the
decoder input and end-of-sentence as the last target itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from attnprobe.lengths import valid_mask

from .config import BLANK_INDEX, END_OF_SENTENCE_INDEX, FIRST_REAL_LABEL, ConformerAEDConfig
from .conformer import ConformerEncoder
from .decoder import LSTMDecoder

IGNORED_TARGET = -100
"""Target value that ``cross_entropy`` skips (its default ``ignore_index``)."""


@dataclass
class AEDOutput:
    """What :meth:`ConformerAED.forward` returns.

    Attributes:
        encoder_out: ``(batch, enc_frames, d_model)``, zero on padded frames.
        encoder_lengths: ``(batch,)``.
        logits: ``(batch, labels + 1, vocab)`` teacher-forced; position ``s`` predicts label ``s``,
            the last one end-of-sentence. ``None`` when no labels were given.
        aux_ctc_logits: ``{block index: (batch, enc_frames, vocab)}`` for ``config.aux_ctc_blocks``.
        cross_attention: ``(batch, labels + 1, enc_frames)`` or ``None`` without labels.
    """

    encoder_out: torch.Tensor
    encoder_lengths: torch.Tensor
    logits: torch.Tensor | None
    aux_ctc_logits: dict[int, torch.Tensor]
    cross_attention: torch.Tensor | None


class ConformerAED(nn.Module):
    """Attention encoder-decoder of Schmitt et al. (ICASSP 2025), built from a config.

    Children: ``encoder`` (:class:`ConformerEncoder`), ``decoder`` (:class:`LSTMDecoder`) and
    ``ctc_heads`` (``nn.ModuleDict`` of ``Linear(d_model, vocab)`` keyed by ``str(block index)``).
    There is no CTC head on the final encoder output: the paper's model has none.

    Example::

        model = ConformerAED(ConformerAEDConfig.tiny(vocab_size=40))
        loss, parts = model.loss(features, feature_lengths, labels, label_lengths)
        hypotheses = model.eval().greedy_decode(features, feature_lengths)
    """

    def __init__(self, config: ConformerAEDConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = ConformerEncoder(config)
        self.decoder = LSTMDecoder(config)
        self.ctc_heads = nn.ModuleDict(
            {str(block): nn.Linear(config.d_model, config.vocab_size) for block in config.aux_ctc_blocks}
        )

    def forward(
        self,
        features: torch.Tensor,
        feature_lengths: torch.Tensor,
        labels: torch.Tensor | None = None,
        label_lengths: torch.Tensor | None = None,
    ) -> AEDOutput:
        """Encode, and decode teacher-forced when labels are given.

        Args:
            features: ``(batch, frames, n_mels)`` log-mel.
            feature_lengths: ``(batch,)`` int64.
            labels: ``(batch, labels)`` int64 real labels, without begin/end symbols.
            label_lengths: ``(batch,)`` int64; required with ``labels``.
        """
        if (labels is None) != (label_lengths is None):
            raise ValueError("pass labels and label_lengths together, or neither")
        encoder_out, encoder_lengths, block_outputs = self.encoder(
            features, feature_lengths, return_block_outputs=self.config.aux_ctc_blocks
        )
        aux_ctc_logits = {
            block: self.ctc_heads[str(block)](output) for block, output in block_outputs.items()
        }
        if labels is None or label_lengths is None:
            return AEDOutput(encoder_out, encoder_lengths, None, aux_ctc_logits, None)
        self._check_labels(labels, label_lengths)
        begin = labels.new_full((labels.shape[0], 1), END_OF_SENTENCE_INDEX)
        decoded = self.decoder(encoder_out, encoder_lengths, torch.cat([begin, labels], dim=1),
                               label_lengths + 1)
        return AEDOutput(
            encoder_out, encoder_lengths, decoded.logits, aux_ctc_logits, decoded.attention_weights
        )

    def loss(
        self,
        features: torch.Tensor,
        feature_lengths: torch.Tensor,
        labels: torch.Tensor,
        label_lengths: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training loss: label-smoothed cross-entropy plus 1.0 x each auxiliary CTC loss.

        Cross-entropy is averaged over target positions (labels and end-of-sentence, padding
        excluded); each CTC loss is summed per sequence and divided by the number of labels.

        Returns:
            The scalar loss and its detached parts, ``{"cross_entropy": ..., "ctc_block_3": ...}``.
        """
        output = self(features, feature_lengths, labels, label_lengths)
        assert output.logits is not None
        targets = self._decoder_targets(labels, label_lengths)
        cross_entropy = F.cross_entropy(
            output.logits.flatten(0, 1),
            targets.flatten(),
            ignore_index=IGNORED_TARGET,
            label_smoothing=self.config.label_smoothing,
        )
        parts = {"cross_entropy": cross_entropy}
        if output.aux_ctc_logits:
            self._check_ctc_feasible(label_lengths, output.encoder_lengths)
        label_count = label_lengths.sum().clamp(min=1)
        for block, logits in output.aux_ctc_logits.items():
            log_probs = logits.log_softmax(dim=-1).transpose(0, 1)  # (enc_frames, batch, vocab)
            ctc = F.ctc_loss(
                log_probs,
                labels,
                output.encoder_lengths,
                label_lengths,
                blank=BLANK_INDEX,
                reduction="sum",
                zero_infinity=True,
            )
            parts[f"ctc_block_{block}"] = ctc / label_count
        total = torch.stack(list(parts.values())).sum()
        return total, {name: value.detach() for name, value in parts.items()}

    def label_log_probs(
        self,
        features: torch.Tensor,
        feature_lengths: torch.Tensor,
        labels: torch.Tensor,
        label_lengths: torch.Tensor,
    ) -> torch.Tensor:
        """``log p(a_s | a_<s, X)`` of each reference label, teacher-forced.

        Differentiable with respect to ``features`` (gradient alignment differentiates it).

        Returns:
            ``(batch, labels)``, 0 at padded positions.
        """
        output = self(features, feature_lengths, labels, label_lengths)
        assert output.logits is not None
        log_probs = output.logits[:, : labels.shape[1]].log_softmax(dim=-1)
        per_label = log_probs.gather(-1, labels[..., None]).squeeze(-1)
        return per_label.masked_fill(~valid_mask(label_lengths, labels.shape[1]), 0.0)

    @torch.no_grad()
    def greedy_decode(
        self, features: torch.Tensor, feature_lengths: torch.Tensor, max_labels: int | None = None
    ) -> list[list[int]]:
        """Greedy label sequences (without end-of-sentence), one list per utterance.

        ``max_labels`` defaults to the longest encoder output, one label per 60 ms frame.
        """
        encoder_out, encoder_lengths = self.encoder(features, feature_lengths)
        if max_labels is None:
            max_labels = int(encoder_lengths.max())
        return self.decoder.greedy_decode(encoder_out, encoder_lengths, max_labels)

    def set_training_step(self, step: int) -> None:
        """Set the mitigation switches for optimiser step ``step`` from the config.

        Self-attention is off while ``step < self_attention_off_steps``. Cross-attention is a hard
        one-hot (on the centre frame, the first frame with ``hard_cross_attention_target="start"``,
        or the anti-diagonal with ``"reversed"``) while ``step < hard_cross_attention_steps``,
        then blends linearly to soft attention over ``cross_attention_blend_steps`` steps.
        """
        config = self.config
        attention_off = step < config.self_attention_off_steps
        for block in self.encoder.blocks:
            block.self_attn.attention.disabled = attention_off
        blend_progress = step - config.hard_cross_attention_steps
        if blend_progress < 0:
            hard_weight = 1.0
        elif blend_progress < config.cross_attention_blend_steps:
            hard_weight = 1.0 - blend_progress / config.cross_attention_blend_steps
        else:
            hard_weight = 0.0
        self.decoder.cross_attn.hard_center_weight = hard_weight
        self.decoder.cross_attn.hard_target = config.hard_cross_attention_target

    @staticmethod
    def _decoder_targets(labels: torch.Tensor, label_lengths: torch.Tensor) -> torch.Tensor:
        """``(batch, labels + 1)``: the labels, end-of-sentence after the last, padding ignored."""
        batch, max_labels = labels.shape
        targets = torch.cat([labels, labels.new_full((batch, 1), IGNORED_TARGET)], dim=1)
        targets = targets.masked_fill(~valid_mask(label_lengths, max_labels + 1), IGNORED_TARGET)
        targets[torch.arange(batch, device=labels.device), label_lengths] = END_OF_SENTENCE_INDEX
        return targets

    def _check_labels(self, labels: torch.Tensor, label_lengths: torch.Tensor) -> None:
        if labels.dim() != 2 or label_lengths.shape != labels.shape[:1]:
            raise ValueError(
                f"expected labels (batch, labels) and label_lengths (batch,); got "
                f"{tuple(labels.shape)} and {tuple(label_lengths.shape)}"
            )
        if int(label_lengths.max()) > labels.shape[1]:
            raise ValueError(
                f"label_lengths say {int(label_lengths.max())} labels but labels have only "
                f"{labels.shape[1]} columns; lengths count the valid labels of the padded batch"
            )
        valid = labels[valid_mask(label_lengths, labels.shape[1])]
        if valid.numel() and (
            int(valid.min()) < FIRST_REAL_LABEL or int(valid.max()) >= self.config.vocab_size
        ):
            raise ValueError(
                f"labels must lie in {FIRST_REAL_LABEL}..{self.config.vocab_size - 1}; got "
                f"{int(valid.min())}..{int(valid.max())}. Index {BLANK_INDEX} is the CTC blank and "
                f"{END_OF_SENTENCE_INDEX} end-of-sentence: shift your label ids up by {FIRST_REAL_LABEL}"
            )

    @staticmethod
    def _check_ctc_feasible(label_lengths: torch.Tensor, encoder_lengths: torch.Tensor) -> None:
        too_long = label_lengths > encoder_lengths
        if bool(too_long.any()):
            index = int(too_long.nonzero()[0])
            raise ValueError(
                f"labels longer than frames for auxiliary CTC: sequence {index} has "
                f"{int(label_lengths[index])} labels but {int(encoder_lengths[index])} encoder frames; "
                "use a smaller time downsampling, coarser labels, or drop the utterance"
            )
