"""A model the frame mapping cannot run on (its runner cannot run the encoder alone) still gets a
report page and monitor records from the probes that did run, and says why the frame mapping is
missing, instead of failing on the figure or record that would have shown it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_fixtures import run_cli

import attnprobe
import attnprobe.probes.report as report_module
from attnprobe.audio import SHIPPED_UTTERANCE, read_audio
from attnprobe.errors import CapabilityError
from attnprobe.loading import load_model

SHIPPED_CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"
REASON = "this runner cannot run the encoder on its own"


@pytest.fixture
def no_frame_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise CapabilityError(REASON)

    monkeypatch.setattr(report_module, "frame_mapping", refuse)


def test_the_report_page_leaves_out_the_frame_mapping_and_says_why(
        no_frame_mapping: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    run = run_cli(capsys, "report", "--model", SHIPPED_CHECKPOINTS / "induced-reversal-seed0",
                  "--audio", SHIPPED_UTTERANCE, "--out", out, "--projections", "1",
                  "--max-frames", "16")
    assert run.code == 0, run.err
    assert not (out / "frame_mapping.png").exists()
    assert (out / "block_scores.png").exists() and (out / "gradient_alignment.png").exists()
    document = json.dumps(json.loads((out / "report.json").read_text()))
    assert REASON in document
    # The decoder's gradient maps still decide: the shipped induced reversal is still found.
    assert json.loads((out / "report.json").read_text())["verdict"].startswith("reversed at block")


def test_a_monitor_record_without_the_frame_mapping_keeps_the_other_probes(
        no_frame_mapping: None) -> None:
    loaded = load_model(str(SHIPPED_CHECKPOINTS / "induced-reversal-seed0"))
    samples = read_audio(SHIPPED_UTTERANCE).at_rate(loaded.sample_rate).samples
    batch = loaded.batch(samples,
                         loaded.transcript("my brother carried a heavy basket across the bridge"))
    record = attnprobe.FlipMonitor(loaded.model, batch, every=1, on_flip=lambda event: None,
                                   max_frames=16).probe(1)
    assert record.reversal_scores == []
    assert record.gradient_map_scores and record.reversed_at is not None
