"""The timed-speech corpus: phone-to-word mapping, timings that fit the audio, the manifest file.

Tests that synthesise need flite (``apt-get install flite``) and are skipped without it; the festival
test also needs ``festival festvox-kallpc16k``.
"""

from __future__ import annotations

import json
import re
import wave

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.corpus import SENTENCES, Manifest, build_corpus, festival, flite, plan_sentences
from benchmarks.corpus.manifest import (
    SAMPLE_RATE,
    WordTiming,
    check_word_timings,
    read_wav,
    resample,
    words_from_phones,
)

needs_flite = pytest.mark.skipif(not flite.is_available(),
                                 reason="flite is not installed: apt-get install flite")
needs_festival = pytest.mark.skipif(
    "kal_diphone" not in festival.available_voices(),
    reason="festival's kal_diphone voice is not installed: apt-get install festival festvox-kallpc16k")

VOICES = ("slt", "kal", "awb")  # kal speaks at 8 kHz, so the resampling path is exercised


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Manifest:
    if not flite.is_available():
        pytest.skip("flite is not installed: apt-get install flite")
    return build_corpus(tmp_path_factory.mktemp("timed"), n_utterances=3, voices=VOICES, seed=1)


def _rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


def test_sentences_are_many_distinct_plain_short_sentences():
    assert len(set(SENTENCES)) == len(SENTENCES) >= 150
    for sentence in SENTENCES:
        assert re.fullmatch(r"[a-z]+( [a-z]+)*", sentence), sentence
        assert 3 <= len(sentence.split()) <= 12, sentence


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 2 * len(SENTENCES)), st.integers(0, 1000))
def test_plan_is_seeded_and_repeats_only_after_using_every_sentence(count, seed):
    plan = plan_sentences(count, seed)
    assert plan == plan_sentences(count, seed) and len(plan) == count
    first_round = plan[: len(SENTENCES)]
    assert len(set(first_round)) == len(first_round)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 4), st.booleans()), min_size=1, max_size=8),
       st.booleans(), st.randoms(use_true_random=False))
def test_words_start_after_the_previous_phone_and_end_with_their_last(word_shapes, leading_pause,
                                                                      random):
    phones: list[tuple[str, float]] = []
    time = 0.0

    def add(phone: str) -> None:
        nonlocal time
        time += random.uniform(0.01, 0.2)
        phones.append((phone, time))

    if leading_pause:
        add("pau")
    expected = []
    for index, (count, pause_after) in enumerate(word_shapes):
        start = time
        for _ in range(count):
            add("aa")
        expected.append(WordTiming(f"w{index}", start, time))
        if pause_after:
            add("pau")
    words = [timing.word for timing in expected]
    timings = words_from_phones(words, [count for count, _ in word_shapes], phones)
    assert timings == tuple(expected)
    check_word_timings(timings, duration=time)


def test_phone_count_mismatch_is_an_error():
    with pytest.raises(ValueError, match="phones"):
        words_from_phones(["a", "b"], [1, 2], [("pau", 0.1), ("aa", 0.2), ("b", 0.3), ("pau", 0.4)])


@pytest.mark.parametrize("words", [
    [WordTiming("a", 0.1, 0.5), WordTiming("b", 0.4, 0.8)],   # overlapping
    [WordTiming("a", 0.5, 0.4)],                              # ends before it starts
    [WordTiming("a", 0.1, 1.2)],                              # past the end of the audio
])
def test_implausible_timings_are_rejected(words):
    with pytest.raises(ValueError, match="implausible"):
        check_word_timings(words, duration=1.0)


@settings(max_examples=15, deadline=None)
@given(st.sampled_from([8000, 22050, 32000, 48000]), st.floats(50.0, 3000.0))
def test_resampling_keeps_duration_and_a_tone(source_rate, frequency):
    times = np.arange(source_rate // 2) / source_rate
    tone = np.sin(2 * np.pi * frequency * times) * np.hanning(len(times))
    resampled = resample(tone, source_rate, SAMPLE_RATE)
    assert len(resampled) == round(len(tone) * SAMPLE_RATE / source_rate)
    target_times = np.arange(len(resampled)) / SAMPLE_RATE
    expected = np.sin(2 * np.pi * frequency * target_times) * np.interp(
        target_times, times, np.hanning(len(times)))
    assert np.max(np.abs(resampled - expected)) < 0.02


@needs_flite
def test_corpus_has_one_16khz_wav_per_utterance_and_several_voices(corpus):
    assert len(corpus) == 3
    assert {utterance.voice for utterance in corpus.utterances} == set(VOICES)
    for utterance in corpus.utterances:
        with wave.open(str(corpus.wav_path(utterance))) as reader:
            assert (reader.getframerate(), reader.getnchannels(), reader.getsampwidth()) == (
                SAMPLE_RATE, 1, 2)
            assert reader.getnframes() / SAMPLE_RATE == pytest.approx(utterance.duration)
        assert [timing.word for timing in utterance.words] == utterance.text.split()
    assert corpus.total_duration == pytest.approx(sum(u.duration for u in corpus.utterances))


@needs_flite
def test_word_times_are_ordered_disjoint_and_inside_the_audio(corpus):
    for utterance in corpus.utterances:
        previous_end = 0.0
        for timing in utterance.words:
            assert previous_end <= timing.start < timing.end <= utterance.duration
            previous_end = timing.end


@needs_flite
def test_every_word_is_louder_than_the_leading_pause(corpus):
    for utterance in corpus.utterances:
        samples, rate = read_wav(corpus.wav_path(utterance))
        first_start = utterance.words[0].start
        assert first_start > 0.05, "flite starts every utterance with a pause"
        silence = _rms(samples[: int(first_start * rate)])
        for timing in utterance.words:
            spoken = _rms(samples[int(timing.start * rate): int(timing.end * rate)])
            assert spoken > silence, (utterance.id, timing)


@needs_flite
def test_manifest_round_trips(corpus):
    assert Manifest.load(corpus.root) == corpus
    document = json.loads((corpus.root / "manifest.json").read_text())
    first = document["utterances"][0]
    assert set(first) >= {"id", "wav", "text", "voice", "duration", "words"}
    assert set(first["words"][0]) == {"word", "start", "end"}


@needs_flite
def test_rebuilding_reuses_the_files(corpus):
    wav_paths = [corpus.wav_path(utterance) for utterance in corpus.utterances]
    modified = [path.stat().st_mtime_ns for path in wav_paths]
    rebuilt = build_corpus(corpus.root, n_utterances=3, voices=VOICES, seed=1)
    assert rebuilt == corpus
    assert [path.stat().st_mtime_ns for path in wav_paths] == modified


@needs_flite
def test_unknown_voice_names_the_installed_ones(tmp_path):
    with pytest.raises(ValueError, match="slt"):
        build_corpus(tmp_path, n_utterances=1, voices=("no_such_voice",))


@needs_festival
def test_festival_words_are_timed_inside_the_audio():
    speech = festival.synthesize("the birch canoe slid on the smooth planks", "kal_diphone")
    assert [timing.word for timing in speech.words] == "the birch canoe slid on the smooth planks".split()
    check_word_timings(speech.words, speech.duration)
    silence = _rms(speech.samples[: int(speech.words[0].start * speech.sample_rate)])
    for timing in speech.words:
        span = speech.samples[int(timing.start * speech.sample_rate): int(timing.end * speech.sample_rate)]
        assert _rms(span) > silence, timing
