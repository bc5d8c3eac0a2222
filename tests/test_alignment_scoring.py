"""Gradient score matrices: the batched backward equals a backward per label, padding and chunking
change nothing, the CTC per-label term decomposes the CTC gradient exactly, the smoothed variants
keep their defining properties, and every misuse fails with an error that says what to do."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from attnprobe.alignment import AlignmentSettings, BlankScore, gradient_alignment
from attnprobe.alignment.scoring import (
    IntegratedGradients,
    SmoothGrad,
    ctc_label_log_probs,
    ctc_occupancy,
    function_forward,
    gradient_scores,
    model_forward,
    score_matrix,
    score_matrix_loop,
)
from attnprobe.alignment.scoring.label_batches import largest_chunk
from attnprobe.batch import SpeechBatch
from attnprobe.errors import CapabilityError, GradientUnavailableError, InputError
from attnprobe.models import ConformerAED, ConformerAEDConfig

PAPER_ENCODER_INPUT = AlignmentSettings.paper(gradient_input="encoder_input")

VOCAB = 20


@pytest.fixture(scope="module")
def conformer() -> ConformerAED:
    torch.manual_seed(0)
    return ConformerAED(ConformerAEDConfig.tiny(vocab_size=VOCAB, blocks=2, d_model=32, heads=2,
                                                ff_dim=64, conv_kernel=5, lstm_dim=32,
                                                attention_dim=32, readout_dim=32)).eval()


def speech_batch(frames: list[int], labels: list[int], seed: int = 0) -> SpeechBatch:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(len(frames), max(frames), 80, generator=generator)
    ids = torch.randint(2, VOCAB, (len(labels), max(labels)), generator=generator)
    return SpeechBatch(features, torch.tensor(frames), ids, torch.tensor(labels))


@settings(max_examples=12, deadline=None)
@given(chunk=st.integers(1, 6), p=st.sampled_from([1.0, 2.0, math.inf]),
       scored_input=st.sampled_from(["features", "encoder_input"]), seed=st.integers(0, 99))
def test_batched_scores_equal_one_backward_per_label(
    conformer: ConformerAED, chunk: int, p: float, scored_input: str, seed: int
) -> None:
    batch = speech_batch([54, 36], [5, 3], seed)
    result = model_forward(conformer, batch, gradient_input=scored_input)()
    lengths = {"label_lengths": result.label_lengths, "frame_lengths": result.frame_lengths}
    loop = score_matrix_loop(result.label_log_probs, result.target, p=p, **lengths)
    batched = score_matrix(result.label_log_probs, result.target, p=p, chunk_size=chunk,
                           **lengths)
    torch.testing.assert_close(batched, loop, rtol=1e-4, atol=1e-6 * float(loop.max()))
    padded_frames = loop[1, :, int(result.frame_lengths[1]):]
    assert bool((loop[1, 3:] == 0).all()) and bool((padded_frames == 0).all())


@pytest.mark.parametrize("scored_input", ["features", "encoder_input"])
def test_each_utterance_of_a_padded_batch_scores_as_it_does_alone(
    conformer: ConformerAED, scored_input: str
) -> None:
    batch = speech_batch([60, 42, 25], [4, 6, 2], seed=3)
    together = gradient_scores(model_forward(conformer, batch, gradient_input=scored_input))
    for index in range(batch.batch_size):
        alone = gradient_scores(model_forward(conformer, batch.item(index), gradient_input=scored_input))
        torch.testing.assert_close(together.item(index), alone.item(0), rtol=1e-4, atol=1e-7)


def test_chunk_search_and_memory_budget_never_change_the_result(conformer: ConformerAED) -> None:
    batch = speech_batch([48], [6])
    forward = model_forward(conformer, batch)
    fixed = gradient_scores(forward, chunk_size=6, memory_budget=None)
    for options in ({"memory_budget": None}, {"memory_budget": 1},
                    {"memory_budget": 3 * forward().saved_bytes}):
        searched = gradient_scores(forward, **options)
        torch.testing.assert_close(searched.scores, fixed.scores, rtol=1e-4, atol=1e-8)


def test_the_memory_budget_caps_labels_per_backward_pass(conformer: ConformerAED) -> None:
    result = model_forward(conformer, speech_batch([48], [6]))()
    per_label = result.saved_bytes + result.target.numel() * result.target.element_size()
    assert largest_chunk(result.saved_bytes, result.target, 6, None) == 6
    assert largest_chunk(result.saved_bytes, result.target, 6, 1) == 1
    assert largest_chunk(result.saved_bytes, result.target, 6, 3 * per_label) == 3
    assert largest_chunk(result.saved_bytes, result.target, 6, 100 * per_label) == 6


def test_scoring_restores_training_mode_and_parameter_flags(conformer: ConformerAED) -> None:
    conformer.train()
    conformer.decoder.embedding.weight.requires_grad_(False)
    try:
        alignments = gradient_alignment(conformer, speech_batch([48], [3]),
                                        settings=PAPER_ENCODER_INPUT)
        assert conformer.training and conformer.encoder.blocks[0].training
        flags = {name: parameter.requires_grad for name, parameter in conformer.named_parameters()}
        assert not flags.pop("decoder.embedding.weight") and all(flags.values())
        assert alignments[0].subsampling == 6 and alignments[0].num_frames == 8
    finally:
        conformer.decoder.embedding.weight.requires_grad_(True)
        conformer.eval()


# ----------------------------------------------------------------------------- clear errors
def test_more_labels_than_encoder_frames_is_refused_before_the_backward(
    conformer: ConformerAED,
) -> None:
    with pytest.raises(InputError, match="labels longer than frames: item 1 has 9 labels but 7"):
        gradient_alignment(conformer, speech_batch([48, 42], [3, 9]),
                           settings=PAPER_ENCODER_INPUT)


def test_an_empty_transcription_is_refused() -> None:
    with pytest.raises(InputError, match="empty transcription"):
        speech_batch([40, 40], [3, 0])
    forward = function_forward(lambda x: x.sum(-1)[:, :3], torch.randn(2, 5, 4),
                               label_lengths=torch.tensor([3, 0]))
    with pytest.raises(InputError, match="empty transcription"):
        gradient_scores(forward)


def test_gradients_under_inference_mode_are_refused(conformer: ConformerAED) -> None:
    with torch.inference_mode(), pytest.raises(GradientUnavailableError, match="inference_mode"):
        gradient_alignment(conformer, speech_batch([40], [2]), settings=AlignmentSettings.paper())


def test_features_made_under_inference_mode_can_be_scored(conformer: ConformerAED) -> None:
    with torch.inference_mode():
        batch = speech_batch([40, 30], [2, 3])
    for scored_input in ("features", "encoder_input"):
        settings = AlignmentSettings.paper(gradient_input=scored_input)
        assert len(gradient_alignment(conformer, batch, settings=settings)) == 2
    with torch.inference_mode():
        features = torch.randn(1, 5, 3)
    scores = gradient_scores(function_forward(lambda x: x.sum(-1), features))
    assert scores.scores.shape == (1, 5, 5)


def test_integer_inputs_are_refused_with_the_alternative() -> None:
    tokens = torch.randint(0, 5, (1, 8))
    with pytest.raises(InputError, match="cannot require gradients.*encoder_input"):
        function_forward(lambda x: x.float()[:, :3], tokens)


def test_inputs_the_labels_do_not_depend_on_are_refused() -> None:
    forward = function_forward(lambda x: torch.zeros(x.shape[0], 3), torch.randn(1, 6, 2))
    with pytest.raises(GradientUnavailableError, match="do not depend on the scored input"):
        gradient_scores(forward)


def test_nan_gradients_are_refused_with_their_position() -> None:
    features = torch.randn(1, 6, 3)
    features[0, 4] = 0.0  # sqrt has no derivative at 0: the gradient there is NaN
    with pytest.raises(GradientUnavailableError, match=r"NaN at item 0, label \d, frame 4"):
        gradient_scores(function_forward(lambda x: -x.pow(2).sum(-1).sqrt(), features))
    with pytest.raises(GradientUnavailableError, match="log p of label 1 in item 0 is -inf"):
        gradient_scores(function_forward(
            lambda x: torch.stack([x.sum((1, 2)), x.sum((1, 2)) - math.inf], 1), features))


def test_a_norm_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="not a norm"):
        gradient_scores(function_forward(lambda x: x.sum(-1), torch.randn(1, 4, 2)), p=0.5)


# ----------------------------------------------------------------------------- CTC
@st.composite
def ctc_problems(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random logits and transcripts (repeats likely: vocabulary of 3 labels) that fit."""
    batch = draw(st.integers(1, 3))
    label_lengths = [draw(st.integers(1, 4)) for _ in range(batch)]
    labels = torch.tensor([[draw(st.integers(1, 3)) for _ in range(4)] for _ in range(batch)])
    frame_lengths = []
    for item, count in enumerate(label_lengths):
        repeats = int((labels[item, 1:count] == labels[item, : count - 1]).sum())
        frame_lengths.append(draw(st.integers(count + repeats, 10)))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 999)))
    logits = torch.randn(batch, max(frame_lengths), 4, generator=generator, dtype=torch.float64)
    return logits, labels, torch.tensor(frame_lengths), torch.tensor(label_lengths)


@settings(max_examples=25, deadline=None)
@given(problem=ctc_problems())
def test_ctc_label_terms_decompose_the_ctc_log_likelihood_gradient(
    problem: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
) -> None:
    logits, labels, frame_lengths, label_lengths = problem
    logits.requires_grad_(True)
    log_probs = logits.log_softmax(-1)
    occupancy = ctc_occupancy(log_probs, labels, frame_lengths, label_lengths)
    reference = -F.ctc_loss(log_probs.transpose(0, 1), labels, frame_lengths, label_lengths,
                            reduction="none")
    torch.testing.assert_close(occupancy.log_likelihood, reference.detach())
    valid = torch.arange(logits.shape[1]) < frame_lengths[:, None]
    per_frame = occupancy.labels.sum(1) + occupancy.blank
    torch.testing.assert_close(per_frame, valid.double())
    # Every path spends at least one frame on every label position, repeated tokens included.
    for item, count in enumerate(label_lengths.tolist()):
        assert bool((occupancy.labels[item, :count].sum(-1) >= 1 - 1e-9).all())
    terms = ctc_label_log_probs(log_probs, labels, frame_lengths, label_lengths)
    blank_term = (occupancy.blank * log_probs[..., 0].masked_fill(~valid, 0.0)).sum()
    (decomposed,) = torch.autograd.grad(terms.sum() + blank_term, logits, retain_graph=True)
    (expected,) = torch.autograd.grad(reference.sum(), logits)
    torch.testing.assert_close(decomposed, expected)


def test_a_ctc_transcript_that_no_path_can_emit_is_refused() -> None:
    log_probs = torch.randn(1, 4, 5).log_softmax(-1)
    with pytest.raises(InputError, match="labels longer than frames allow.*needs at least 5"):
        ctc_occupancy(log_probs, torch.tensor([[2, 2, 3, 4]]), torch.tensor([4]),
                      torch.tensor([4]))


def test_a_ctc_only_model_aligns_through_its_ctc_head() -> None:
    pytest.importorskip("transformers")
    from hf_models import FAMILIES

    import attnprobe.adapters.hf_wav2vec2  # noqa: F401  (registers the adapter)

    model = FAMILIES["wav2vec2"].build("eager")
    waveform = torch.randn(2, 400, generator=torch.Generator().manual_seed(0))
    batch = SpeechBatch(waveform, torch.tensor([400, 320]), torch.tensor([[3, 4, 4], [5, 6, 0]]),
                        torch.tensor([3, 2]))
    forward = model_forward(model, batch, gradient_input="encoder_input", ctc_blank=0)
    result = forward()
    loop = score_matrix_loop(result.label_log_probs, result.target,
                             label_lengths=result.label_lengths, frame_lengths=result.frame_lengths)
    batched = gradient_scores(forward).scores
    torch.testing.assert_close(batched, loop, rtol=1e-4, atol=1e-6 * float(loop.max()))
    alignments = gradient_alignment(model, batch, settings=PAPER_ENCODER_INPUT, ctc_blank=0)
    # The test model's convolutions have strides 5 and 2: 10 samples per encoder frame.
    assert [alignment.subsampling for alignment in alignments] == [10, 10]
    assert alignments[1].num_frames == 31 and len(alignments[1].labels) == 2
    with pytest.raises(CapabilityError, match="pass ctc_blank"):
        gradient_alignment(model, batch, settings=PAPER_ENCODER_INPUT)


# ----------------------------------------------------------------------------- smoothing
def smooth_function(x: torch.Tensor) -> torch.Tensor:
    """Three labels, each a smooth non-linear function of every frame."""
    weights = torch.linspace(-1.0, 1.0, 3 * x.shape[-1]).view(x.shape[-1], 3)
    return torch.log_softmax(torch.tanh(x @ weights).sum(1), dim=-1)


def test_smoothgrad_without_noise_is_the_plain_gradient() -> None:
    forward = function_forward(smooth_function, torch.randn(2, 7, 4))
    plain = gradient_scores(forward).scores
    smoothed = SmoothGrad(samples=2, noise_level=0.0).scores(forward).scores
    torch.testing.assert_close(smoothed, plain)


@pytest.mark.parametrize("baseline", ["zeros", "minimum", 0.5])
def test_integrated_gradients_are_complete(baseline: str | float) -> None:
    inputs = torch.randn(2, 7, 4, generator=torch.Generator().manual_seed(1))
    method = IntegratedGradients(steps=64, baseline=baseline)
    attributions = method.attributions(function_forward(smooth_function, inputs))
    start = method.baseline_for(inputs, torch.tensor([7, 7]))
    expected = smooth_function(inputs) - smooth_function(start)
    torch.testing.assert_close(attributions.values.sum((2, 3)), expected, atol=2e-3, rtol=1e-3)


def test_whisper_scores_batched_and_aligns_at_both_inputs() -> None:
    pytest.importorskip("transformers")
    from hf_models import FAMILIES, MEL, WHISPER_SOURCE_POSITIONS

    import attnprobe.adapters.hf_whisper  # noqa: F401  (registers the adapter)

    model = FAMILIES["whisper"].build("eager")
    frames = 2 * WHISPER_SOURCE_POSITIONS
    batch = SpeechBatch(torch.randn(2, frames, MEL), torch.tensor([frames, 18]),
                        torch.tensor([[5, 6, 7], [8, 9, 3]]), torch.tensor([3, 2]))
    for scored_input, subsampling in (("features", 1), ("encoder_input", 2)):
        result = model_forward(model, batch, gradient_input=scored_input)()
        lengths = {"label_lengths": result.label_lengths, "frame_lengths": result.frame_lengths}
        loop = score_matrix_loop(result.label_log_probs, result.target, **lengths)
        batched = score_matrix(result.label_log_probs, result.target, **lengths)
        torch.testing.assert_close(batched, loop, rtol=1e-4, atol=1e-6 * float(loop.max()))
        settings = AlignmentSettings.paper(scored_input).replace(blank=BlankScore("constant", -4.0))
        alignments = gradient_alignment(model, batch, settings=settings)
        assert alignments[1].subsampling == subsampling and len(alignments[1].labels) == 2
    with pytest.raises(CapabilityError, match="observes the encoder input"):
        SmoothGrad(samples=1).scores(model_forward(model, batch, gradient_input="encoder_input"))
