"""Audio is judged by its header before any sample is read, resampled without memory that grows
with the rates, and checked for speech at all."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnprobe.audio import SHIPPED_UTTERANCE, read_audio, resample
from attnprobe.speech_presence import speech_presence


@settings(max_examples=25, deadline=None)
@given(from_rate=st.integers(4000, 96_000), to_rate=st.sampled_from([8000, 16000, 22050]),
       frequency=st.floats(100.0, 1500.0))
def test_any_rate_keeps_the_length_and_a_tone(from_rate: int, to_rate: int,
                                              frequency: float) -> None:
    times = np.arange(from_rate // 2) / from_rate
    tone = np.sin(2 * np.pi * frequency * times) * np.hanning(len(times))
    resampled = resample(tone, from_rate, to_rate)
    assert len(resampled) == math.ceil(len(tone) * to_rate / from_rate)
    target_times = np.arange(len(resampled)) / to_rate
    expected = np.sin(2 * np.pi * frequency * target_times) * np.interp(
        target_times, times, np.hanning(len(times)))
    assert np.max(np.abs(resampled - expected)) < 0.02


def test_coprime_rates_are_resampled_in_the_frequency_domain(monkeypatch) -> None:
    import attnprobe.audio as audio

    def no_kernel(*arguments: object) -> None:
        raise AssertionError("the windowed-sinc kernel would grow with the rates")

    monkeypatch.setattr("torchaudio.functional.resample", no_kernel)
    samples = np.random.default_rng(0).standard_normal(16_001 * 3).astype(np.float32)
    assert len(audio.resample(samples, 16_001, 16_000)) == 48_000


def test_the_shipped_utterance_is_speech_and_silence_and_noise_are_not() -> None:
    speech = read_audio(SHIPPED_UTTERANCE)
    assert speech_presence(speech.samples, speech.sample_rate).verdict is None
    generator = np.random.default_rng(0)
    white = generator.uniform(-1, 1, 48_000)
    spectrum = np.fft.rfft(generator.standard_normal(48_000))
    brown = np.fft.irfft(spectrum / np.maximum(np.fft.rfftfreq(48_000, 1 / 16_000), 1), 48_000)
    assert "silence" in speech_presence(np.zeros(48_000), 16_000).verdict
    assert "silence" in speech_presence(generator.normal(0, 1e-5, 48_000), 16_000).verdict
    for noise in (white, brown / np.abs(brown).max()):
        assert "noise" in speech_presence(noise, 16_000).verdict


TIMIT = Path(__file__).resolve().parents[2] / "shared" / "timit"  # read at run time, never copied


@pytest.mark.skipif(not TIMIT.is_dir(), reason="the TIMIT sample (../shared/timit) is not present")
def test_every_timit_recording_is_speech() -> None:
    import soundfile

    for path in sorted(TIMIT.glob("*/*.wav")):
        samples, rate = soundfile.read(str(path))
        assert speech_presence(samples, rate).verdict is None, path
