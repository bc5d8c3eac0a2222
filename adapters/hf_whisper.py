"""Hugging Face Whisper: ``WhisperForConditionalGeneration``, ``WhisperModel``, ``WhisperEncoder``
(and the other Whisper classes holding an encoder or a decoder).

Sites: ``encoder.frontend`` (input: the log-mel features as ``conv1`` receives them, transposed to
``(batch, frames, mel)``; output: what enters the first block, after both convolutions and the
positional embedding), ``encoder.{i}``, ``encoder.{i}.self_attn``, ``encoder.{i}.ffn``,
``decoder.{i}``, ``decoder.{i}.self_attn`` (causal), ``decoder.{i}.cross_attn``,
``decoder.{i}.ffn``. The feed-forward branch is inline code: its input is ``fc1``'s input and its
output ``fc2``'s output (before dropout and the residual addition).

Lengths: Whisper's encoder always sees 30 s of audio, ``2 * max_source_positions`` mel frames
(3000) turned into ``max_source_positions`` encoder frames (1500), and has no padding mask: shorter
audio is padded with log-mel silence that the encoder attends to like any other frame. The model
call reveals no lengths, so a plain trace records every frame as valid (3000 and 1500); a trace
told the batch's ``input_lengths`` (the probes always tell it) records as valid only the frames
that carry audio: the mel frames up to each length and the encoder frames computed from them
(``lengths_for_inputs``). The ``attention_mask`` a Whisper feature extractor returns is ignored by
the model and by attnprobe. Decoder lengths come from ``decoder_attention_mask`` when given, else every position
decoded so far is valid.

Runner: ``run`` and ``label_log_probs`` take ``batch.inputs`` as log-mel ``(batch, frames,
mel)`` (attnprobe's frames-second layout; the adapter hands Whisper ``(batch, mel, frames)``). As
the encoder has no padding mask, the adapter writes log-mel silence from each sequence's
``input_lengths`` on and pads to 3000 frames: the value ``WhisperFeatureExtractor`` gives all-zero
audio, so a padded batch computes what each utterance computes alone. What the caller put past
``input_lengths`` has no effect and gets zero gradient, yet the encoder still attends to the silence
frames; pass ``input_lengths`` of 3000 to feed extractor features unchanged. The decoder prompt is
``runner.prompt_ids``: ``<|startoftranscript|>`` and, when the generation config has it,
``<|notimestamps|>``; multilingual checkpoints want their language and task tokens in between, e.g.
``runner.prompt_ids = tokenizer.convert_tokens_to_ids(["<|startoftranscript|>", "<|en|>",
"<|transcribe|>", "<|notimestamps|>"])`` (``load_model(..., language="en")`` does it).

Windows: inside ``runner.fitted_window(margin_s)`` the model reads the longest utterance plus the
margin instead of 30 s (the positional embedding's first rows, put back on exit; the model is not
changed); with ``decoder_only=True`` the encoder still reads 30 s and only the decoder reads the
fitted part of its output. Inside ``runner.encoder_output_gradients_only(frames)`` the decoder's
cross-attention keys and values of the padding are computed without autograd, which is exact for
gradients taken at the encoder output and saves most of their backward work.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from attnprobe.batch import SpeechBatch
from attnprobe.errors import CapabilityError, InputError
from attnprobe.lengths import valid_mask

from .hf_common import (
    MBART_DECODER_BRANCHES,
    MBART_ENCODER_BRANCHES,
    EncoderDecoderStacks,
    HuggingFaceSiteMap,
    argument,
    decoder_lengths,
    encoder_decoder_stacks,
)
from .hf_runner import feature_extractor_default, model_input, require_rank
from .hf_seq2seq import HuggingFaceEncoderDecoderRunner
from .site_map import LengthEntry, SiteBinding, register_builtin

FAMILY = "hf-whisper"
SILENCE_BELOW_LOUDEST = 2.0
"""Log-mel of silence, below the utterance's largest feature: WhisperFeatureExtractor floors
log10-mel 8 below the utterance's maximum and maps x -> (x + 4) / 4, so all-zero audio sits 8 / 4
below the maximum."""


def whisper_stacks(model: nn.Module) -> EncoderDecoderStacks | None:
    """Whisper's encoder and decoder in ``model`` (either may be missing), or ``None``."""
    return encoder_decoder_stacks(model, "WhisperEncoder", "WhisperDecoder")


class WhisperRunner(HuggingFaceEncoderDecoderRunner):
    """Runs Whisper on log-mel ``(batch, frames, mel)`` padded with silence to its 30 s window."""

    family = FAMILY
    generation_class = "WhisperForConditionalGeneration"
    locate = staticmethod(whisper_stacks)
    window_margin_frames: int | None = None
    """``None``: the model reads its full window (30 s); else the longest utterance of a batch
    plus this many mel frames of silence (see :meth:`fitted_window`)."""
    fit_decoder_only: bool = False
    """With a margin: the encoder still reads 30 s, and only the decoder reads the fitted window
    of its output."""

    def default_prompt_ids(self) -> list[int]:
        """``<|startoftranscript|>``, then ``<|notimestamps|>`` where the checkpoint has one."""
        prompt = [self.generation_setting("decoder_start_token_id")]
        no_timestamps = self.generation_setting("no_timestamps_token_id")
        if no_timestamps is not None and no_timestamps < self.model.config.vocab_size:
            prompt.append(no_timestamps)
        return prompt

    def encoder_inputs(self, batch: SpeechBatch) -> dict[str, torch.Tensor]:
        encoder = self._encoder()
        frames = (encoder.config.max_source_positions * encoder.conv1.stride[0]
                  * encoder.conv2.stride[0])
        mel = encoder.config.num_mel_bins
        features = batch.inputs
        require_rank(features, 3, "log-mel (batch, frames, mel)", self.family,
                     "extract log-mel features with WhisperFeatureExtractor and transpose them "
                     "to (batch, frames, mel)")
        if features.shape[-1] != mel:
            fix = ("WhisperFeatureExtractor gives (batch, mel, frames): pass "
                   "input_features.transpose(1, 2)" if features.shape[1] == mel else
                   "extract the features with the checkpoint's WhisperFeatureExtractor")
            raise InputError(f"this Whisper model takes {mel} mel bins on the last axis of "
                             f"batch.inputs, got shape {tuple(features.shape)}; {fix}")
        if features.shape[1] > frames:
            raise InputError(f"this Whisper encoder takes at most {frames} frames at a time (30 s "
                             f"for the released checkpoints), got {features.shape[1]}; split the "
                             f"audio into windows that fit")
        if int(batch.input_lengths.min()) < 1:
            raise InputError("an utterance has input_lengths 0: Whisper's silence level comes "
                             "from the valid frames; drop empty utterances")
        features = with_silence(model_input(self.model, features), batch.input_lengths,
                                self.window_frames(batch))
        return {"input_features": features.transpose(1, 2)}

    def window_frames(self, batch: SpeechBatch) -> int:
        """Mel frames the encoder reads for ``batch``: its full window, or with
        :attr:`window_margin_frames` the longest utterance plus the margin, rounded up to an even
        number (the second convolution halves it) and at most the full window."""
        encoder = self._encoder()
        full = (encoder.config.max_source_positions * encoder.conv1.stride[0]
                * encoder.conv2.stride[0])
        if self.window_margin_frames is None or self.fit_decoder_only:
            return full
        step = encoder.conv1.stride[0] * encoder.conv2.stride[0]
        wanted = int(batch.input_lengths.max()) + self.window_margin_frames
        return min(full, -(-wanted // step) * step)

    @contextlib.contextmanager
    def fitted_window(self, margin_seconds: float | None, decoder_only: bool = False
                      ) -> Iterator[None]:
        """Inside: the model runs on the longest utterance plus ``margin_seconds`` of silence
        instead of 30 s (``None``: 30 s); with ``decoder_only`` the encoder still reads 30 s and
        the decoder only the fitted part of its output. The cost of gradient alignment falls
        with the window the decoder reads; Whisper was trained on 30 s windows only, so measure
        the accuracy before relying on it (``benchmarks/alignment_timit.py``)."""
        before = self.window_margin_frames, self.fit_decoder_only
        self.window_margin_frames = (None if margin_seconds is None
                                     else round(margin_seconds / self.frame_shift_seconds))
        self.fit_decoder_only = decoder_only
        try:
            yield
        finally:
            self.window_margin_frames, self.fit_decoder_only = before

    def decoder_frames(self, batch: SpeechBatch) -> int | None:
        """Encoder frames the decoder reads when only the decoder's window is fitted."""
        if self.window_margin_frames is None or not self.fit_decoder_only:
            return None
        encoder = self._encoder()
        step = encoder.conv1.stride[0] * encoder.conv2.stride[0]
        wanted = int(batch.input_lengths.max()) + self.window_margin_frames
        return min(encoder.config.max_source_positions, -(-wanted // step))

    @contextlib.contextmanager
    def encoder_window(self, batch: SpeechBatch) -> Iterator[None]:
        """While the model reads a window shorter than 30 s: the positional embedding is its
        first rows and the length check expects that window. The model's own tensors and config
        are put back on exit; nothing else changes."""
        encoder = self._encoder()
        decoder_frames = self.decoder_frames(batch)
        if decoder_frames is not None:
            def fitted_output(_module: nn.Module, _args: tuple, output: Any) -> Any:
                output.last_hidden_state = output.last_hidden_state[:, :decoder_frames]
                return output

            handle = encoder.register_forward_hook(fitted_output)
            try:
                yield
            finally:
                handle.remove()
            return
        frames = self.window_frames(batch) // (encoder.conv1.stride[0] * encoder.conv2.stride[0])
        positions = encoder.embed_positions
        if frames == positions.num_embeddings:
            yield
            return
        weight, count = positions.weight, positions.num_embeddings
        config_positions = encoder.config.max_source_positions
        positions.weight = nn.Parameter(weight[:frames], requires_grad=False)
        positions.num_embeddings = frames
        encoder.config.max_source_positions = frames
        try:
            yield
        finally:
            positions.weight = weight
            positions.num_embeddings = count
            encoder.config.max_source_positions = config_positions

    @contextlib.contextmanager
    def encoder_output_gradients_only(self, frames: torch.Tensor) -> Iterator[None]:
        """Inside: the decoder's cross-attention keys and values of encoder frames past
        ``frames`` (the silence padding) are computed without autograd, so the backward skips
        their projections, most of its work on short audio. Exact for gradients at the encoder
        output, which reaches the decoder only through its own frame's keys and values."""
        stacks = self.stacks()
        if stacks.decoder is None:
            yield
            return
        valid = int(frames.max())

        def first_rows_only(module: nn.Module, args: tuple, output: torch.Tensor) -> Any:
            states = args[0] if args else None
            if not isinstance(states, torch.Tensor) or states.shape[1] <= valid:
                return None
            head = nn.functional.linear(states[:, :valid], module.weight, module.bias)
            return torch.cat([head, output[:, valid:].detach()], dim=1)

        handles = []
        try:
            for layer in stacks.decoder.layers:
                for projection in (layer.encoder_attn.k_proj, layer.encoder_attn.v_proj):
                    handles.append(projection.register_forward_hook(first_rows_only))
            yield
        finally:
            for handle in handles:
                handle.remove()

    @property
    def subsampling(self) -> int:
        """Mel frames per encoder frame: the strides of the two convolutions (1 and 2)."""
        encoder = self._encoder()
        return encoder.conv1.stride[0] * encoder.conv2.stride[0]

    @property
    def frame_shift_seconds(self) -> float:
        """Hop of WhisperFeatureExtractor's defaults: 160 samples at 16 kHz, 10 ms."""
        return (feature_extractor_default("WhisperFeatureExtractor", "hop_length")
                / feature_extractor_default("WhisperFeatureExtractor", "sampling_rate"))

    def _encoder(self) -> nn.Module:
        stacks = self.stacks()
        if stacks.encoder is None:
            raise CapabilityError(f"{type(self.model).__name__} is a decoder without an encoder; "
                                  f"load {self.generation_class} to feed it speech")
        return stacks.encoder


@register_builtin
class WhisperSites(HuggingFaceSiteMap):
    family = FAMILY
    description = ("Hugging Face Whisper (WhisperForConditionalGeneration, WhisperModel, "
                   "WhisperEncoder)")
    family_modules = ("transformers.models.whisper.modeling_whisper",)
    runner_class = WhisperRunner

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.notes.append("Whisper's encoder has no padding mask: it always sees 3000 mel frames "
                          "(1500 encoder frames), all of them valid, silence padding included")

    @classmethod
    def locate(cls, model: nn.Module) -> EncoderDecoderStacks | None:
        return whisper_stacks(model)

    def bindings(self) -> list[SiteBinding]:
        stacks = self.locate(self.model)
        assert stacks is not None
        found: list[SiteBinding] = []
        if stacks.encoder is not None:
            found.append(self.frontend_binding(stacks.encoder.conv1, stacks.encoder.layers[0],
                                               lambda features: features.transpose(1, 2)))
            found += self.stack_bindings("encoder", stacks.encoder.layers, MBART_ENCODER_BRANCHES)
        if stacks.decoder is not None:
            found += self.stack_bindings("decoder", stacks.decoder.layers, MBART_DECODER_BRANCHES)
        return found

    def lengths_for_inputs(self, input_lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        """The mel frames that carry audio, and the encoder frames computed from them: what the
        probes look at, whatever the padded window the encoder ran on."""
        stacks = self.locate(self.model)
        assert stacks is not None
        if stacks.encoder is None:
            return {}
        return {"features": input_lengths,
                "encoder": stacks.encoder._get_feat_extract_output_lengths(input_lengths).long()}

    def length_entries(self) -> list[LengthEntry]:
        stacks = self.locate(self.model)
        assert stacks is not None
        entries = []
        if stacks.encoder is not None:
            encoder = stacks.encoder

            def encoder_lengths(args: tuple, kwargs: Mapping[str, Any]) -> dict[str, torch.Tensor]:
                features = argument(args, kwargs, 0, "input_features")
                if not isinstance(features, torch.Tensor):
                    return {}
                frames = torch.full((features.shape[0],), features.shape[-1], dtype=torch.long)
                return {"features": frames,
                        "encoder": encoder._get_feat_extract_output_lengths(frames)}

            entries.append(LengthEntry(encoder, encoder_lengths))
        if stacks.decoder is not None:
            def lengths_seen_by_decoder(args: tuple, kwargs: Mapping[str, Any]
                                        ) -> dict[str, torch.Tensor]:
                found = {}
                decoder = decoder_lengths(args, kwargs, mask_position=1, cache_position=3)
                if decoder is not None:
                    found["decoder"] = decoder
                encoded = argument(args, kwargs, 2, "encoder_hidden_states")
                if isinstance(encoded, torch.Tensor):
                    found["encoder"] = torch.full((encoded.shape[0],), encoded.shape[1],
                                                  dtype=torch.long)
                return found

            entries.append(LengthEntry(stacks.decoder, lengths_seen_by_decoder))
        return entries


def with_silence(features: torch.Tensor, lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """``(batch, frames_in, mel)`` -> ``(batch, frames, mel)``: log-mel silence from each length on.

    The silence level follows the utterance's valid frames but is held constant for autograd, so
    the padding passes no gradient back to them.
    """
    lengths = lengths.to(features.device)
    valid = valid_mask(lengths, features.shape[1])[..., None]
    loudest = features.detach().masked_fill(~valid, float("-inf")).amax(dim=(1, 2))
    silence = (loudest - SILENCE_BELOW_LOUDEST)[:, None, None]
    padded = nn.functional.pad(features, (0, 0, 0, frames - features.shape[1]))
    return torch.where(valid_mask(lengths, frames)[..., None], padded, silence)
