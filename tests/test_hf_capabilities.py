"""What probes ask of the Hugging Face adapters, on tiny random models, batch 2 with padding:
``run``, teacher-forced ``label_log_probs``, ``ctc_log_probs``, ``subsampling``,
``frame_shift_seconds``, and errors that name the fix.

Padding in these batches holds noise, not zeros: whatever lies past ``input_lengths`` must not
change a valid result.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import attnprobe
import attnprobe.adapters.hf_parakeet
import attnprobe.adapters.hf_speech2text
import attnprobe.adapters.hf_wav2vec2
import attnprobe.adapters.hf_whisper  # importing an adapter module registers its adapters
from attnprobe.adapters import Runner, find_site_map, resolve_adapter
from attnprobe.adapters.hf_whisper import SILENCE_BELOW_LOUDEST
from attnprobe.batch import SpeechBatch
from attnprobe.errors import CapabilityError, InputError
from tests.hf_models import FAMILIES, MEL, VOCAB, WHISPER_SOURCE_POSITIONS, main_output

ENCODER_DECODER = ("whisper", "speech2text")
CTC = ("wav2vec2", "hubert", "conformer-relative", "parakeet")
WAVEFORM = ("wav2vec2", "hubert", "conformer-relative", "conformer-rotary")
WHISPER_FRAMES = 2 * WHISPER_SOURCE_POSITIONS
INPUT_RANGE = {"whisper": (2, WHISPER_FRAMES), "speech2text": (5, 40), "parakeet": (4, 40),
               **{family: (40, 220) for family in WAVEFORM}}
"""Shortest and longest valid input per family (frames, or samples for waveforms)."""
LABEL_PADDING = -100  # Hugging Face's "ignore" label: the adapters must not feed it to the model

_built: dict[str, nn.Module] = {}


def runner_of(model: torch.nn.Module) -> Runner:
    """The runner attnprobe pairs with ``model``."""
    return resolve_adapter(model).runner


def built(family: str) -> nn.Module:
    """One eager model per family for the whole file (no test changes it)."""
    if family not in _built:
        _built[family] = FAMILIES[family].build("eager")
    return _built[family]


def speech_batch(family: str, lengths: list[int], label_lengths: list[int] | None = None,
                 seed: int = 0, padding: str = "noise") -> SpeechBatch:
    """Random inputs ``(batch, frames, mel)`` or ``(batch, samples)``; padding holds ``noise`` or
    ``zeros``; labels padded with -100."""
    generator = torch.Generator().manual_seed(seed)
    shape = (len(lengths), max(lengths)) + (() if family in WAVEFORM else (MEL,))
    inputs = torch.randn(shape, generator=generator)
    if padding == "zeros":
        valid = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
        inputs = inputs * valid.view(*valid.shape, *(1,) * (inputs.dim() - 2))
    if label_lengths is None:
        return SpeechBatch(inputs, torch.tensor(lengths))
    labels = torch.randint(3, VOCAB, (len(lengths), max(label_lengths)), generator=generator)
    padded = torch.arange(max(label_lengths))[None, :] >= torch.tensor(label_lengths)[:, None]
    return SpeechBatch(inputs, torch.tensor(lengths), labels.masked_fill(padded, LABEL_PADDING),
                       torch.tensor(label_lengths))


def direct_inputs(family: str, batch: SpeechBatch, prompt: list[int] | None = None
                  ) -> dict[str, torch.Tensor]:
    """Keyword arguments of a plain model call on ``batch`` (zero padding, full Whisper frames)."""
    mask = (torch.arange(batch.inputs.shape[1])[None, :] < batch.input_lengths[:, None]).long()
    if family == "whisper":
        inputs: dict[str, torch.Tensor] = {"input_features": batch.inputs.transpose(1, 2)}
    elif family in WAVEFORM:
        inputs = {"input_values": batch.inputs, "attention_mask": mask}
    else:
        inputs = {"input_features": batch.inputs, "attention_mask": mask}
    if prompt is not None:
        labels, valid = decoder_labels(family, batch)
        count = batch.batch_size
        inputs["decoder_input_ids"] = torch.cat([torch.tensor([prompt] * count), labels], 1)
        inputs["decoder_attention_mask"] = torch.cat(
            [torch.ones(count, len(prompt), dtype=torch.long), valid.long()], 1)
    return inputs


def decoder_labels(family: str, batch: SpeechBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels with padding set to the model's pad token, and ``(batch, labels)`` validity."""
    if batch.labels is None or batch.label_lengths is None:
        return torch.zeros(batch.batch_size, 0, dtype=torch.long), torch.zeros(
            batch.batch_size, 0, dtype=torch.bool)
    valid = torch.arange(batch.labels.shape[1])[None, :] < batch.label_lengths[:, None]
    return batch.labels.masked_fill(~valid, built(family).config.pad_token_id), valid


def output_lengths(family: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's own map from valid input frames (or samples) to valid encoder frames."""
    model = built(family)
    if family == "parakeet":
        return model.encoder._get_subsampling_output_length
    if family in ENCODER_DECODER:
        return model.model.encoder._get_feat_extract_output_lengths
    return model._get_feat_extract_output_lengths


def score(family: str, batch: SpeechBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """What a probe differentiates: per-label log-probabilities, or CTC log-posteriors; with the
    ``(batch, positions)`` validity of its second axis."""
    adapter = runner_of(built(family))
    if family in ENCODER_DECODER:
        assert batch.labels is not None and batch.label_lengths is not None
        scores = adapter.label_log_probs(batch)
        return scores, torch.arange(scores.shape[1])[None, :] < batch.label_lengths[:, None]
    log_probs, lengths = adapter.ctc_log_probs(batch)
    return log_probs, torch.arange(log_probs.shape[1])[None, :] < lengths[:, None]


# ----------------------------------------------------------------------------- teacher forcing
@pytest.mark.parametrize("family", ENCODER_DECODER)
@pytest.mark.parametrize("prompt", [None, [1, 5, 4]], ids=["default prompt", "user prompt"])
def test_label_log_probs_are_the_logits_of_a_plain_call_at_the_labels(
        family: str, prompt: list[int] | None) -> None:
    model = built(family)
    adapter = runner_of(model)
    if prompt is not None:
        adapter.prompt_ids = prompt
    lengths = [WHISPER_FRAMES] * 2 if family == "whisper" else [40, 23]
    batch = speech_batch(family, lengths, [5, 2], padding="zeros")
    used_prompt = adapter.prompt_ids
    log_probs = adapter.label_log_probs(batch)
    logits = model(**direct_inputs(family, batch, used_prompt)).logits.log_softmax(-1)
    labels, valid = decoder_labels(family, batch)
    start = len(used_prompt) - 1  # the last prompt token predicts the first label
    expected = logits[:, start : start + labels.shape[1]].gather(-1, labels[..., None])[..., 0]
    assert log_probs.shape == (2, 5)
    assert torch.allclose(log_probs[valid], expected[valid], atol=1e-5)
    assert torch.all(log_probs[~valid] == 0)
    assert torch.all(log_probs[valid] < 0)


@pytest.mark.parametrize("family", ENCODER_DECODER)
def test_label_log_probs_give_the_models_own_training_loss(family: str) -> None:
    # Hugging Face's labels= path shifts the labels right behind decoder_start_token_id itself:
    # an independent account of which logit predicts which label.
    model = built(family)
    adapter = runner_of(model)
    assert adapter.prompt_ids == [model.config.decoder_start_token_id]
    lengths = [WHISPER_FRAMES] * 2 if family == "whisper" else [40, 31]
    batch = speech_batch(family, lengths, [6, 3], seed=3, padding="zeros")
    assert batch.labels is not None and batch.label_lengths is not None
    inputs = direct_inputs(family, batch)
    loss = model(**inputs, labels=batch.labels).loss
    log_probs = adapter.label_log_probs(batch)
    assert torch.allclose(-log_probs.sum() / batch.label_lengths.sum(), loss, atol=1e-5)


def test_whisper_prompt_follows_the_generation_config() -> None:
    model = copy.deepcopy(built("whisper"))
    assert runner_of(model).prompt_ids == [model.config.decoder_start_token_id]
    model.generation_config.no_timestamps_token_id = 7
    assert runner_of(model).prompt_ids == [model.config.decoder_start_token_id, 7]
    model.generation_config.no_timestamps_token_id = VOCAB + 10  # not in this vocabulary
    assert runner_of(model).prompt_ids == [model.config.decoder_start_token_id]


# ----------------------------------------------------------------------------- padding
PER_ITEM_FAMILIES = ("whisper", "speech2text", "wav2vec2", "hubert", "parakeet")


@pytest.mark.parametrize("family", PER_ITEM_FAMILIES)
@settings(max_examples=5, deadline=None)
@given(data=st.data())
def test_a_padded_batch_scores_each_utterance_as_it_scores_alone(
        family: str, data: st.DataObject) -> None:
    low, high = INPUT_RANGE[family]
    lengths = data.draw(st.lists(st.integers(low, high), min_size=2, max_size=2, unique=True))
    label_lengths = data.draw(st.lists(st.integers(1, 6), min_size=2, max_size=2))
    batch = speech_batch(family, lengths, label_lengths, seed=sum(lengths))
    together, valid = score(family, batch)
    for index in range(2):
        alone, alone_valid = score(family, batch.item(index))
        count = int(alone_valid.sum())
        assert int(valid[index].sum()) == count
        assert torch.allclose(together[index, :count], alone[0, :count], atol=1e-5)


def test_wav2vec2_conformer_says_its_padded_batches_differ_from_single_utterances() -> None:
    model = built("conformer-relative")
    adapter = runner_of(model)
    assert any("do not mask padding" in note for note in find_site_map(model).notes)
    batch = speech_batch("conformer-relative", [220, 120])
    together, lengths = adapter.ctc_log_probs(batch)
    alone, _ = adapter.ctc_log_probs(batch.item(1))
    assert not torch.allclose(together[1, : int(lengths[1])], alone[0], atol=1e-3)


@pytest.mark.parametrize("family", (*ENCODER_DECODER, *CTC))
def test_gradients_reach_the_valid_input_frames_and_no_padded_one(family: str) -> None:
    # Whisper has no padding mask and its encoder attends to silence frames; its adapter writes
    # log-mel silence over everything past input_lengths, so the caller's padding gets no gradient
    # there either, while the silence itself still shapes the output.
    low, high = INPUT_RANGE[family]
    batch = speech_batch(family, [high, (low + high) // 2], [4, 2], seed=1)
    inputs = batch.inputs.clone().requires_grad_(True)
    scores, valid = score(family, batch.with_inputs(inputs))
    scores[valid].sum().backward()
    assert inputs.grad is not None
    per_frame = inputs.grad.abs().sum(-1) if inputs.dim() == 3 else inputs.grad.abs()
    adapter = runner_of(built(family))
    for index, length in enumerate(batch.input_lengths.tolist()):
        if family in ENCODER_DECODER:
            covered = length
        else:  # waveform samples past the last full convolution window reach no frame
            covered = min(length, adapter.subsampling * int(valid[index].sum()))
        reached = per_frame[index, :covered] > 0
        # a ReLU frontend (Parakeet) may stop the gradient at a single frame, never wholesale
        assert reached.float().mean() > 0.75 and reached[-adapter.subsampling:].any()
        assert torch.all(per_frame[index, length:] == 0)


def test_whisper_pads_with_the_silence_of_its_feature_extractor() -> None:
    from transformers import WhisperFeatureExtractor

    extractor = WhisperFeatureExtractor()
    audio = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    features = extractor(audio, sampling_rate=16000, return_tensors="pt").input_features[0]
    silence = features[:, 200:]  # 1 s of audio is 100 frames; the rest is padded zeros
    assert torch.allclose(silence, features.max() - SILENCE_BELOW_LOUDEST)

    model = built("whisper")
    batch = speech_batch("whisper", [WHISPER_FRAMES - 4, 9])
    with attnprobe.trace(model, sites=["encoder.frontend"]) as traced:
        runner_of(model).run(batch)
    fed = traced["encoder.frontend"].input
    assert fed.shape == (2, WHISPER_FRAMES, MEL)
    for index, length in enumerate(batch.input_lengths.tolist()):
        assert torch.equal(fed[index, :length], batch.inputs[index, :length])
        loudest = batch.inputs[index, :length].max()
        assert torch.allclose(fed[index, length:], loudest - SILENCE_BELOW_LOUDEST)


# ----------------------------------------------------------------------------- CTC
@pytest.mark.parametrize("family", CTC)
def test_ctc_log_probs_are_the_models_posteriors_over_its_valid_frames(family: str) -> None:
    model = built(family)
    low, high = INPUT_RANGE[family]
    batch = speech_batch(family, [high, low + 7], padding="zeros")
    log_probs, lengths = runner_of(model).ctc_log_probs(batch)
    logits = main_output(model(**direct_inputs(family, batch)))
    assert log_probs.shape == logits.shape and log_probs.shape[-1] == VOCAB
    assert torch.allclose(log_probs, logits.log_softmax(-1), atol=1e-5)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(()), atol=1e-5)
    assert lengths.tolist() == output_lengths(family)(batch.input_lengths).tolist()
    assert int(lengths.max()) == log_probs.shape[1]


# ----------------------------------------------------------------------------- run
@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("with_labels", [True, False], ids=["labels", "no labels"])
def test_run_is_one_plain_forward_call_and_the_trace_sees_its_lengths(
        family: str, with_labels: bool) -> None:
    model = built(family)
    adapter = runner_of(model)
    low, high = INPUT_RANGE[family]
    lengths = [WHISPER_FRAMES] * 2 if family == "whisper" else [high, low + 3]
    batch = speech_batch(family, lengths, [3, 1] if with_labels else None, padding="zeros")
    prompt = adapter.prompt_ids if family in ENCODER_DECODER else None
    expected = main_output(model(**direct_inputs(family, batch, prompt)))
    with attnprobe.trace(model, kind="block") as traced:
        output = main_output(adapter.run(batch))
    assert torch.allclose(output, expected, atol=1e-5)
    encoder_lengths = FAMILIES[family].batch(lengths, None, 0).encoder_lengths
    assert traced["encoder.0"].lengths.tolist() == encoder_lengths
    if prompt is not None:  # decoder positions: the prompt, then the valid labels
        label_lengths = [3, 1] if with_labels else [0, 0]
        assert traced["decoder.0"].lengths.tolist() == [len(prompt) + count
                                                        for count in label_lengths]


# ----------------------------------------------------------------------------- time axis
def _wav2vec2_with_released_strides() -> nn.Module:
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    return Wav2Vec2Model(Wav2Vec2Config(hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                        intermediate_size=8, conv_dim=(4,) * 7,
                                        num_conv_pos_embeddings=4,
                                        num_conv_pos_embedding_groups=2))


def _speech2text_with_three_convolutions() -> nn.Module:
    from transformers import Speech2TextConfig, Speech2TextModel

    return Speech2TextModel(Speech2TextConfig(
        d_model=8, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=8, decoder_ffn_dim=8, conv_channels=4,
        input_feat_per_channel=MEL, num_conv_layers=3, conv_kernel_sizes=(3, 3, 3)))


@pytest.mark.parametrize(("build", "subsampling", "frame_shift"), [
    (lambda: built("whisper"), 2, 0.01),
    (lambda: built("speech2text"), 4, 0.01),
    (_speech2text_with_three_convolutions, 8, 0.01),
    (lambda: built("wav2vec2"), 10, 1 / 16000),  # tiny strides (5, 2)
    (_wav2vec2_with_released_strides, 320, 1 / 16000),
    (lambda: built("parakeet"), 4, 0.01),
], ids=["whisper", "speech2text", "speech2text-3-conv", "wav2vec2-tiny", "wav2vec2-released",
        "parakeet"])
def test_subsampling_and_frame_shift_describe_the_time_axis(
        build: Any, subsampling: int, frame_shift: float) -> None:
    adapter = runner_of(build())
    assert adapter.subsampling == subsampling
    assert adapter.frame_shift_seconds == pytest.approx(frame_shift)


def test_has_decoder_tells_attention_decoders_from_encoders() -> None:
    whisper = built("whisper")
    assert find_site_map(whisper).has_decoder and find_site_map(built("speech2text")).has_decoder
    assert not find_site_map(whisper.model.encoder).has_decoder
    assert not any(find_site_map(built(family)).has_decoder for family in CTC)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_encoder_frames_are_subsampling_input_frames_apart(family: str) -> None:
    adapter = runner_of(built(family))
    low, high = INPUT_RANGE[family]
    lengths = torch.arange(low, high + 1)
    frames = output_lengths(family)(lengths)
    # frontends without padding drop up to one receptive field at the end
    assert torch.all((frames * adapter.subsampling - lengths).abs() < 2 * adapter.subsampling)


# ----------------------------------------------------------------------------- errors
def _whisper_batch(**changes: Any) -> SpeechBatch:
    batch = speech_batch("whisper", [WHISPER_FRAMES, 10], [3, 2])
    return SpeechBatch(**{**vars(batch), **changes})


ERRORS = {
    "CTC model asked for teacher forcing": (
        "wav2vec2", lambda adapter: adapter.label_log_probs(speech_batch("wav2vec2", [99], [2])),
        CapabilityError, "ctc_log_probs"),
    "Parakeet asked for teacher forcing": (
        "parakeet", lambda adapter: adapter.label_log_probs(speech_batch("parakeet", [9], [2])),
        CapabilityError, "ctc_log_probs"),
    "bare encoder asked for CTC": (
        "conformer-rotary",
        lambda adapter: adapter.ctc_log_probs(speech_batch("conformer-rotary", [99])),
        CapabilityError, "load Wav2Vec2ConformerForCTC"),
    "attention decoder asked for CTC": (
        "whisper", lambda adapter: adapter.ctc_log_probs(_whisper_batch()), CapabilityError,
        "label_log_probs"),
    "no labels": (
        "speech2text", lambda adapter: adapter.label_log_probs(speech_batch("speech2text", [9])),
        InputError, "labels=..."),
    "labels past max_target_positions": (
        "whisper", lambda adapter: adapter.label_log_probs(_whisper_batch(
            labels=torch.full((2, 16), 5), label_lengths=torch.tensor([16, 3]))),
        InputError, "max_target_positions=16; split"),
    "label outside the vocabulary": (
        "speech2text", lambda adapter: adapter.label_log_probs(SpeechBatch(
            torch.randn(1, 9, MEL), torch.tensor([9]), torch.tensor([[4, VOCAB]]),
            torch.tensor([2]))),
        InputError, "tokenizer"),
    "waveform with a channel axis": (
        "hubert", lambda adapter: adapter.run(SpeechBatch(torch.randn(1, 99, 1),
                                                          torch.tensor([99]))),
        InputError, "squeeze"),
    "Whisper features as the extractor lays them out": (
        "whisper", lambda adapter: adapter.run(SpeechBatch(torch.randn(1, MEL, 20),
                                                           torch.tensor([MEL]))),
        InputError, "transpose(1, 2)"),
    "Whisper features without a batch axis": (
        "whisper", lambda adapter: adapter.run(SpeechBatch(torch.randn(20, MEL),
                                                           torch.ones(20, dtype=torch.long))),
        InputError, "(batch, frames, mel)"),
    "more frames than Whisper encodes": (
        "whisper", lambda adapter: adapter.run(SpeechBatch(torch.randn(1, WHISPER_FRAMES + 1, MEL),
                                                           torch.tensor([WHISPER_FRAMES]))),
        InputError, "split the audio"),
    "wrong filter-bank size": (
        "speech2text", lambda adapter: adapter.run(SpeechBatch(torch.randn(1, 9, MEL + 1),
                                                               torch.tensor([9]))),
        InputError, "feature extractor"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_name_the_fix(case: str) -> None:
    family, call, error, fix = ERRORS[case]
    with pytest.raises(error, match=re.escape(fix)):
        call(runner_of(built(family)))


def test_a_decoderless_whisper_says_which_class_scores_labels() -> None:
    batch = _whisper_batch()
    for part in (built("whisper").model, built("whisper").model.encoder):
        with pytest.raises(CapabilityError, match="load WhisperForConditionalGeneration"):
            runner_of(part).label_log_probs(batch)
