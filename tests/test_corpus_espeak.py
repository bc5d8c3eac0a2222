"""The espeak-ng corpus: vocabulary, word timing, features, and the cached training set."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnprobe.audio import resample
from attnprobe.features import MEL_BINS, frame_count, log_mel
from attnprobe.labels import CHARACTER_LABELS
from attnprobe.models import (
    BLANK_INDEX,
    END_OF_SENTENCE_INDEX,
    FIRST_REAL_LABEL,
    ConformerAED,
    ConformerAEDConfig,
)
from benchmarks.corpus.espeak import (
    ESPEAK_SAMPLE_RATE,
    OUTPUT_SAMPLE_RATE,
    EspeakEvent,
    WordTimingError,
    espeak_available,
    synthesize,
    word_spans,
)
from benchmarks.corpus.training_set import build_training_set, load_training_set
from benchmarks.corpus.vocabulary import closed_vocabulary, generate_sentences

needs_espeak = pytest.mark.skipif(
    not espeak_available(),
    reason="libespeak-ng.so.1 is not installed (apt-get install -y espeak-ng)",
)
VOICES = ("en-us", "en+m3", "en-us+f3", "en+klatt2")
SENTENCES = (
    "the old dog found a red box near the river",
    "sarah sat in the garden with the cat",
    "they walked quickly",
)


# Vocabulary and labels.


def test_same_seed_gives_same_sentences_and_other_seed_other_ones() -> None:
    assert generate_sentences(50, seed=3) == generate_sentences(50, seed=3)
    assert generate_sentences(50, seed=3) != generate_sentences(50, seed=4)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), min_words=st.integers(2, 8), extra=st.integers(0, 4))
def test_sentences_stay_inside_the_closed_vocabulary_and_length_range(
    seed: int, min_words: int, extra: int
) -> None:
    vocabulary = set(closed_vocabulary())
    assert 250 <= len(vocabulary) <= 500
    for sentence in generate_sentences(20, seed, min_words=min_words, max_words=min_words + extra):
        words = sentence.split(" ")
        assert min_words <= len(words) <= min_words + extra
        assert set(words) <= vocabulary


@pytest.mark.parametrize("min_words, max_words", [(1, 5), (6, 5), (16, 20)])
def test_impossible_sentence_lengths_are_refused(min_words: int, max_words: int) -> None:
    with pytest.raises(ValueError, match="leave no sentence"):
        generate_sentences(1, seed=0, min_words=min_words, max_words=max_words)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_labels_round_trip_and_avoid_blank_and_end(seed: int) -> None:
    sentence = generate_sentences(1, seed)[0]
    labels = CHARACTER_LABELS.encode(sentence)
    assert CHARACTER_LABELS.decode(labels + [CHARACTER_LABELS.end_of_sentence_index, 5]) == sentence
    assert min(labels) >= 2 and max(labels) < CHARACTER_LABELS.vocab_size == 30


def test_labels_follow_the_model_convention() -> None:
    assert CHARACTER_LABELS.blank_index == BLANK_INDEX
    assert CHARACTER_LABELS.end_of_sentence_index == END_OF_SENTENCE_INDEX
    assert min(CHARACTER_LABELS.encode(" 'abcdefghijklmnopqrstuvwxyz")) == FIRST_REAL_LABEL


def test_labels_reject_characters_outside_the_set() -> None:
    with pytest.raises(ValueError, match="lowercase"):
        CHARACTER_LABELS.encode("The dog.")


# Word spans from events (no library needed).


@st.composite
def spoken_words(draw):
    """Words with phoneme durations; some words share the WORD event of the word before."""
    count = draw(st.integers(1, 7))
    words = [f"w{index}" + "x" * draw(st.integers(0, 3)) for index in range(count)]
    phonemes = [draw(st.lists(st.integers(20, 400), min_size=1, max_size=4)) for _ in words]
    joined = [False] + [draw(st.booleans()) for _ in words[1:]]
    return words, phonemes, joined


@settings(max_examples=25, deadline=None)
@given(spoken=spoken_words(), closing_pause=st.integers(0, 300))
def test_word_spans_recover_the_boundaries_the_events_encode(spoken, closing_pause: int) -> None:
    words, phoneme_durations, joined = spoken
    text = " ".join(words)
    names = {
        word: [f"{word}p{i}" for i in range(len(durations))]
        for word, durations in zip(words, phoneme_durations)
    }
    events, expected, sample, position = [], [], 100, 1
    for word, durations, is_joined in zip(words, phoneme_durations, joined):
        if not is_joined:
            events.append(EspeakEvent(1, position, len(word), sample, ""))
        start = sample
        for name, duration in zip(names[word], durations):
            events.append(EspeakEvent(7, position, 0, sample, name))
            sample += duration
        expected.append((word, start, sample))
        position += len(word) + 1
    events.append(EspeakEvent(7, position, 0, sample, "_:"))
    events.append(EspeakEvent(1, 0, 0, sample + closing_pause, ""))  # the spurious empty WORD
    # The first word starts at its WORD event, which the library places before the first phoneme.
    assert word_spans(text, events, sample, names.__getitem__) == expected


def test_word_spans_refuse_a_joint_word_whose_phonemes_do_not_match() -> None:
    events = [
        EspeakEvent(1, 1, 2, 0, ""),
        EspeakEvent(7, 1, 0, 0, "I"),
        EspeakEvent(7, 1, 0, 50, "n"),
        EspeakEvent(7, 1, 0, 100, "D"),
    ]
    with pytest.raises(WordTimingError, match="joint word"):
        word_spans("in the", events, 150, lambda word: ["0", "n"])


# Resampling and features.


@pytest.mark.parametrize(
    "from_rate, to_rate", [(ESPEAK_SAMPLE_RATE, OUTPUT_SAMPLE_RATE), (8000, 16000), (16000, 16000)]
)
def test_resampling_keeps_a_tone_and_the_duration(from_rate: int, to_rate: int) -> None:
    tone = np.sin(2 * np.pi * 440 * np.arange(from_rate) / from_rate)
    resampled = resample(tone, from_rate, to_rate)
    assert len(resampled) == to_rate
    expected = np.sin(2 * np.pi * 440 * np.arange(to_rate) / to_rate)
    assert np.abs(resampled - expected)[500:-500].max() < 1e-3
    for length in (1, 441, 442, 1000):
        assert len(resample(np.ones(length), from_rate, to_rate)) == math.ceil(
            length * to_rate / from_rate
        )


@pytest.mark.parametrize("samples", [400, 559, 560, 16000])
def test_log_mel_has_80_bins_and_one_frame_per_10_ms(samples: int) -> None:
    audio = np.random.default_rng(0).standard_normal(samples).astype(np.float32) * 0.1
    features = log_mel(audio)
    assert features.shape == (frame_count(samples), MEL_BINS)
    normalised = log_mel(audio, normalise=True)
    assert normalised.mean(dim=0).abs().max() < 1e-4


# The library.


@needs_espeak
@pytest.mark.parametrize("voice", VOICES)
def test_word_times_are_ordered_non_overlapping_and_inside_the_audio(voice: str) -> None:
    for rate, text in zip((130, 175, 240), SENTENCES):
        samples, words = synthesize(text, voice, rate)
        duration = len(samples) / OUTPUT_SAMPLE_RATE
        assert samples.dtype == np.float32 and np.abs(samples).max() <= 1.0
        assert [word.word for word in words] == text.split(" ")
        previous_end = 0.0
        for word in words:
            assert previous_end <= word.start < word.end <= duration
            assert word.end - word.start >= 0.03, f"{word} is implausibly short"
            previous_end = word.end


@needs_espeak
@pytest.mark.parametrize("voice", VOICES[:3])
def test_speech_energy_lies_inside_the_word_spans(voice: str) -> None:
    samples, words = synthesize(SENTENCES[0], voice, 175, leading_silence_s=0.3)
    noisy = samples + 1e-3 * np.random.default_rng(0).standard_normal(len(samples))
    leading = noisy[: round(0.25 * OUTPUT_SAMPLE_RATE)]  # inside the 0.3 s of silence
    inside = np.zeros(len(samples), dtype=bool)
    for word in words:
        span = noisy[round(word.start * OUTPUT_SAMPLE_RATE) : round(word.end * OUTPUT_SAMPLE_RATE)]
        assert np.sqrt(np.mean(span**2)) > 10 * np.sqrt(np.mean(leading**2)), word
        inside[round(word.start * OUTPUT_SAMPLE_RATE) : round(word.end * OUTPUT_SAMPLE_RATE)] = True
    assert np.sum(samples[inside] ** 2) > 0.995 * np.sum(samples**2)


@needs_espeak
def test_faster_rate_gives_shorter_speech() -> None:
    slow = synthesize(SENTENCES[0], "en+m3", 120, 0.0, 0.0)
    fast = synthesize(SENTENCES[0], "en+m3", 300, 0.0, 0.0)
    assert len(fast.samples) < 0.6 * len(slow.samples)


@needs_espeak
@pytest.mark.parametrize("voice", ["en+nosuchvariant", "xx-nosuchvoice"])
def test_unknown_voices_are_refused(voice: str) -> None:
    with pytest.raises(ValueError, match="espeak-ng has no voice"):
        synthesize("hello", voice)


# The training set.


@needs_espeak
def test_training_set_builds_caches_loads_and_batches(tmp_path) -> None:
    arguments = dict(n_train=7, n_dev=3, voices=VOICES, rates=(150, 200), seed=5, shard_size=4)
    path = build_training_set(tmp_path, **arguments)
    index_written = (path / "index.json").stat().st_mtime_ns
    assert build_training_set(tmp_path, **arguments) == path
    assert (path / "index.json").stat().st_mtime_ns == index_written
    assert build_training_set(tmp_path, **{**arguments, "seed": 6}) != path

    train, dev = load_training_set(path, "train"), load_training_set(path, "dev")
    assert (len(train), len(dev)) == (7, 3)
    assert not set(train.texts) & set(dev.texts)
    seen = []
    for batch in train.batches(batch_size=3, seed=0):
        batch_size, frames, bins = batch.features.shape
        assert bins == MEL_BINS and frames == batch.feature_lengths.max()
        assert batch.labels.shape == (batch_size, batch.label_lengths.max())
        for row in range(batch_size):
            frame_length, label_length = batch.feature_lengths[row], batch.label_lengths[row]
            assert torch.all(batch.features[row, frame_length:] == 0)
            assert torch.all(batch.labels[row, label_length:] == BLANK_INDEX)
            assert batch.labels[row, :label_length].min() >= FIRST_REAL_LABEL
            text = CHARACTER_LABELS.decode(batch.labels[row].tolist())
            assert [word.word for word in batch.word_times[row]] == text.split(" ")
            assert batch.word_times[row][-1].end <= frame_length * 0.01 + 0.025
            seen.append(text)
    assert sorted(seen) == sorted(train.texts)
    torch.manual_seed(0)
    config = ConformerAEDConfig.tiny(vocab_size=CHARACTER_LABELS.vocab_size, blocks=2)
    loss, _ = ConformerAED(config).loss(
        batch.features, batch.feature_lengths, batch.labels, batch.label_lengths
    )
    assert torch.isfinite(loss)
    order = [batch.labels.tolist() for batch in train.batches(batch_size=3, seed=0)]
    assert order == [batch.labels.tolist() for batch in train.batches(batch_size=3, seed=0)]


@needs_espeak
def test_training_set_refuses_an_unknown_voice_before_building(tmp_path) -> None:
    with pytest.raises(ValueError, match="no voice variant"):
        build_training_set(tmp_path, 2, 0, voices=("en-us", "en+nosuchvariant"))
    assert list(tmp_path.iterdir()) == []


@needs_espeak
def test_training_set_content_does_not_depend_on_the_number_of_workers(tmp_path) -> None:
    arguments = dict(n_train=4, n_dev=0, voices=VOICES, rates=(175,), seed=1, shard_size=2)
    one = build_training_set(tmp_path / "one", workers=1, **arguments)
    two = build_training_set(tmp_path / "two", workers=2, **arguments)
    for shard in ("train-00000.pt", "train-00001.pt"):
        first, second = torch.load(one / shard), torch.load(two / shard)
        assert all(torch.equal(first[key], second[key]) for key in first)
