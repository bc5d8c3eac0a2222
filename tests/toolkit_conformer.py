"""A small attention-encoder-decoder Conformer written the way speech toolkits write theirs
(ESPnet's module names and call conventions: ``encoders`` / ``decoders`` lists, ``(x, mask)``
layer calls, a ``MultiHeadedAttention`` that computes its own softmax, macaron feed-forward defined
after the one it runs before), which attnprobe has no adapter for, and the few-line runner a user
would write for it. Tests use it to check the generic path on a model only structure can explain.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from attnprobe.adapters import Runner
from attnprobe.batch import SpeechBatch
from attnprobe.lengths import valid_mask

VOCAB, SOS = 12, 1


class MultiHeadedAttention(nn.Module):
    def __init__(self, heads: int, width: int) -> None:
        super().__init__()
        self.heads, self.head_width = heads, width // heads
        self.linear_q, self.linear_k = nn.Linear(width, width), nn.Linear(width, width)
        self.linear_v, self.linear_out = nn.Linear(width, width), nn.Linear(width, width)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        batch = query.shape[0]

        def split(x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
            return linear(x).view(batch, -1, self.heads, self.head_width).transpose(1, 2)

        q, k, v = split(query, self.linear_q), split(key, self.linear_k), split(value, self.linear_v)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_width)
        attention = torch.softmax(scores.masked_fill(~mask[:, None], -1e9), dim=-1)
        mixed = (attention @ v).transpose(1, 2).reshape(batch, -1, self.heads * self.head_width)
        return self.linear_out(mixed)


class PositionwiseFeedForward(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.w_1, self.w_2 = nn.Linear(width, hidden), nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(torch.relu(self.w_1(x)))


class ConvolutionModule(nn.Module):
    def __init__(self, width: int, kernel: int = 3) -> None:
        super().__init__()
        self.pointwise_conv1 = nn.Conv1d(width, 2 * width, 1)
        self.depthwise_conv = nn.Conv1d(width, width, kernel, padding=kernel // 2, groups=width)
        self.norm = nn.BatchNorm1d(width)
        self.pointwise_conv2 = nn.Conv1d(width, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.glu(self.pointwise_conv1(x.transpose(1, 2)), dim=1)
        return self.pointwise_conv2(torch.relu(self.norm(self.depthwise_conv(x)))).transpose(1, 2)


class EncoderLayer(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.self_attn = MultiHeadedAttention(heads, width)
        self.feed_forward = PositionwiseFeedForward(width, 2 * width)
        self.feed_forward_macaron = PositionwiseFeedForward(width, 2 * width)
        self.conv_module = ConvolutionModule(width)
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(5))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x + 0.5 * self.feed_forward_macaron(self.norms[0](x))
        y = self.norms[1](x)
        x = x + self.self_attn(y, y, y, mask)
        x = x + self.conv_module(self.norms[2](x))
        x = x + 0.5 * self.feed_forward(self.norms[3](x))
        return self.norms[4](x), mask


class Conv2dSubsampling(nn.Module):
    """Frames / 4: two stride-2 convolutions over (time, feature)."""

    def __init__(self, features: int, width: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 4, 3, 2), nn.ReLU(), nn.Conv2d(4, 4, 3, 2),
                                  nn.ReLU())
        self.out = nn.Linear(4 * (((features - 1) // 2 - 1) // 2), width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x.unsqueeze(1))
        return self.out(x.transpose(1, 2).flatten(2))


class ConformerEncoder(nn.Module):
    def __init__(self, features: int, width: int, heads: int, blocks: int) -> None:
        super().__init__()
        self.embed = Conv2dSubsampling(features, width)
        self.encoders = nn.ModuleList(EncoderLayer(width, heads) for _ in range(blocks))

    def forward(self, xs: torch.Tensor, ilens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xs = self.embed(xs)
        olens = ((ilens - 1) // 2 - 1) // 2
        mask = valid_mask(olens.to(xs.device), xs.shape[1])[:, None, :]
        for layer in self.encoders:
            xs, mask = layer(xs, mask)
        return xs, olens


class DecoderLayer(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.self_attn = MultiHeadedAttention(heads, width)
        self.src_attn = MultiHeadedAttention(heads, width)
        self.feed_forward = PositionwiseFeedForward(width, 2 * width)
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(3))

    def forward(self, tgt: torch.Tensor, tgt_mask: torch.Tensor, memory: torch.Tensor,
                memory_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = self.norms[0](tgt)
        x = tgt + self.self_attn(y, y, y, tgt_mask)
        x = x + self.src_attn(self.norms[1](x), memory, memory, memory_mask)
        return x + self.feed_forward(self.norms[2](x)), tgt_mask, memory, memory_mask


class TransformerDecoder(nn.Module):
    def __init__(self, width: int, heads: int, blocks: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.decoders = nn.ModuleList(DecoderLayer(width, heads) for _ in range(blocks))
        self.output_layer = nn.Linear(width, VOCAB)

    def forward(self, ys_in: torch.Tensor, ys_lens: torch.Tensor, memory: torch.Tensor,
                memory_lens: torch.Tensor) -> torch.Tensor:
        steps = ys_in.shape[1]
        causal = torch.ones(steps, steps, dtype=torch.bool, device=ys_in.device).tril()
        tgt_mask = valid_mask(ys_lens.to(ys_in.device), steps)[:, None, :] & causal
        memory_mask = valid_mask(memory_lens.to(memory.device), memory.shape[1])[:, None, :]
        x = self.embed(ys_in)
        for layer in self.decoders:
            x, tgt_mask, memory, memory_mask = layer(x, tgt_mask, memory, memory_mask)
        return self.output_layer(x)


class ToolkitASR(nn.Module):
    """``forward(speech (batch, frames, features), speech_lengths, ys_in, ys_lens) -> logits``."""

    def __init__(self, features: int = 12, width: int = 16, heads: int = 2, blocks: int = 3
                 ) -> None:
        super().__init__()
        self.encoder = ConformerEncoder(features, width, heads, blocks)
        self.decoder = TransformerDecoder(width, heads, 2)

    def forward(self, speech: torch.Tensor, speech_lengths: torch.Tensor, ys_in: torch.Tensor,
                ys_lens: torch.Tensor) -> torch.Tensor:
        memory, memory_lens = self.encoder(speech, speech_lengths)
        return self.decoder(ys_in, ys_lens, memory, memory_lens)


class ToolkitRunner(Runner):
    """What a user writes for :class:`ToolkitASR`: <start> + labels in, one forward pass."""

    frame_shift_seconds = 0.01
    subsampling = 4

    def run(self, batch: SpeechBatch) -> Any:
        labels, lengths = self._labels(batch)
        start = torch.full((batch.batch_size, 1), SOS, dtype=torch.long)
        return self.model(batch.inputs, batch.input_lengths, torch.cat([start, labels], 1),
                          lengths + 1)

    def label_log_probs(self, batch: SpeechBatch) -> torch.Tensor:
        labels, lengths = self._labels(batch)
        log_probs = self.run(batch)[:, :labels.shape[1]].log_softmax(-1)
        per_label = log_probs.gather(-1, labels[..., None]).squeeze(-1)
        return per_label.masked_fill(~valid_mask(lengths, labels.shape[1]), 0.0)

    def _labels(self, batch: SpeechBatch) -> tuple[torch.Tensor, torch.Tensor]:
        if batch.labels is None or batch.label_lengths is None:
            return (torch.zeros(batch.batch_size, 0, dtype=torch.long),
                    torch.zeros(batch.batch_size, dtype=torch.long))
        return batch.labels.long(), batch.label_lengths.long()


def toolkit_asr(blocks: int = 3, seed: int = 0) -> ToolkitASR:
    torch.manual_seed(seed)
    return ToolkitASR(blocks=blocks).eval()


def toolkit_batch(encoder_frames: list[int], labels: list[int] | None = None, seed: int = 0
                  ) -> SpeechBatch:
    """Features giving ``encoder_frames`` frames after the subsampling (4 * frames + 3 each)."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([4 * frames + 3 for frames in encoder_frames])
    features = torch.randn(len(encoder_frames), int(lengths.max()), 12, generator=generator)
    if labels is None:
        return SpeechBatch(features, lengths)
    ids = torch.randint(2, VOCAB, (len(labels), max(labels)), generator=generator)
    return SpeechBatch(features, lengths, ids, torch.tensor(labels))
