"""The reversal report on the two Conformer AED checkpoints shipped in ``checkpoints/``, trained
here (``docs/reproduction.md``): one whose encoder keeps time order, one whose encoder was made to
reverse time and stayed reversed after release."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import attnprobe
from attnprobe.audio import SHIPPED_UTTERANCE, read_audio
from attnprobe.loading import load_model

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"
TEXT = json.loads(SHIPPED_UTTERANCE.with_suffix(".json").read_text())["text"]


def report_on_the_shipped_utterance(name: str, max_frames: int) -> attnprobe.ReversalReport:
    loaded = load_model(CHECKPOINTS / name)
    audio = read_audio(SHIPPED_UTTERANCE).at_rate(loaded.sample_rate)
    batch = loaded.batch(audio.samples, loaded.transcript(TEXT))
    return attnprobe.reversal_report(loaded.model, batch, projections=1, max_frames=max_frames,
                                     adapter=loaded.adapter)


@pytest.mark.parametrize("max_frames", [16, 48])
def test_the_time_preserving_checkpoint_is_not_reversed(max_frames: int) -> None:
    report = report_on_the_shipped_utterance("aux-ctc-seed0", max_frames)
    assert report.verdict == "not reversed"
    assert all(score > 0.5 for score in report.frame_mapping.scores)
    assert report.cross_attention is not None and report.cross_attention.verdict == "monotone"


@pytest.mark.parametrize("max_frames", [16, 48])
def test_the_induced_reversal_is_reported(max_frames: int) -> None:
    report = report_on_the_shipped_utterance("induced-reversal-seed0", max_frames)
    assert report.reversed
    # Its decoder was pinned to the anti-diagonal in training: it reads the encoder backwards.
    assert report.cross_attention is not None and report.cross_attention.verdict == "reversed"
