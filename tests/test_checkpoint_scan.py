"""``attnprobe report --checkpoints RUN_DIR``: the checkpoints of a run are found in each layout,
each is reported on the same probe audio, and the summary draws the reversal score per block
against the step; a damaged checkpoint fails alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_fixtures import CLIP_TEXT, run_cli, tiny_wav2vec2_ctc_folder, write_clip

from attnprobe.audio import SHIPPED_UTTERANCE
from attnprobe.errors import InputError
from attnprobe.reporting.checkpoint_scan import find_checkpoints

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
QUICK = ["--projections", "1", "--max-frames", "8"]


def test_checkpoints_are_found_in_every_layout_by_step(tmp_path: Path) -> None:
    ours = tmp_path / "ours"
    (ours / "checkpoints").mkdir(parents=True)
    for step in (300, 20, 1000):
        (ours / "checkpoints" / f"step-{step:06d}.pt").write_bytes(b"")
    assert [(item.id, item.step) for item in find_checkpoints(ours)] == [
        ("step-000020", 20), ("step-000300", 300), ("step-001000", 1000)]
    shipped = find_checkpoints(REPO / "checkpoints" / "induced-reversal-seed0")
    assert [(item.id, item.step) for item in shipped] == [("step-001200", 1200)]
    hugging_face = tmp_path / "trainer-output"
    for step in (500, 1500, 1000):
        (hugging_face / f"checkpoint-{step}").mkdir(parents=True)
    (hugging_face / "runs").mkdir()
    assert [item.step for item in find_checkpoints(hugging_face)] == [500, 1000, 1500]
    with pytest.raises(InputError, match="holds no checkpoints"):
        find_checkpoints(hugging_face / "runs")


def test_a_hugging_face_trainer_run_is_scanned_and_a_damaged_checkpoint_fails_alone(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("transformers")
    run = tmp_path / "trainer-output"
    for step in (10, 20):
        tiny_wav2vec2_ctc_folder(run / f"checkpoint-{step}", seed=step)
    damaged = run / "checkpoint-30"
    damaged.mkdir()
    (damaged / "config.json").write_text(json.dumps({"model_type": "wav2vec2"}))
    probe = write_clip(tmp_path / "probe" / "clip.wav", sidecar_text=CLIP_TEXT)
    out = tmp_path / "scan"
    result = run_cli(capsys, "report", "--checkpoints", run, "--audio", probe.parent, *QUICK,
                     "--out", out)
    assert result.code == 1, result.err
    assert "1 of 3 files failed" in result.err and "no weights" in result.err
    summary = json.loads((out / "summary.json").read_text())
    scanned = [entry for entry in summary["results"] if entry["ok"]]
    assert [entry["step"] for entry in scanned] == [10, 20]
    assert all(len(entry["reversal_scores"]) == 2 for entry in scanned)
    assert (out / "reversal_vs_step.png").read_bytes().startswith(PNG_MAGIC)
    page = (out / "report.html").read_text()
    assert "Reversal score per block over training" in page and "checkpoint-30" in page


def test_the_shipped_induced_reversal_run_is_found_reversed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "scan"
    result = run_cli(capsys, "report", "--checkpoints", REPO / "checkpoints" /
                     "induced-reversal-seed0", "--audio", SHIPPED_UTTERANCE, *QUICK, "--out", out)
    assert result.code == 0, result.err
    (entry,) = json.loads((out / "summary.json").read_text())["results"]
    assert entry["step"] == 1200 and entry["reversed_at"] is not None
    assert entry["reversal_scores"][-1] < -0.5
