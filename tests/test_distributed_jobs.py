"""Corpus jobs over ``torchrun --nproc-per-node 2`` (CPU, gloo): the sharded outputs are the bytes
a single process writes for the same manifest; a corrupt or missing file fails alone and is in the
merged summary; a rank killed part-way loses only its unfinished utterances, and a rerun completes
the corpus with the same outputs. Every launch has a deadline that fails the test if a rank hangs.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from cli_fixtures import files_of, run_cli, tiny_checkpoint, write_manifest
from torchrun import torchrun

SECONDS = [2.9, 0.8, 1.5, 2.4, 1.2, 2.0, 2.6, 1.0]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    tiny_checkpoint(folder / "tiny")
    (folder / "broken.wav").write_bytes(b"RIFF, but no audio follows")
    write_manifest(folder, SECONDS, extra=[{"id": "broken", "audio": "broken.wav", "text": "my"},
                                           {"id": "gone", "audio": "missing.wav", "text": "my"}])
    return folder


def single_process(capsys: pytest.CaptureFixture[str], *arguments: object) -> int:
    """The same command in this process, on one thread as torchrun's workers run."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_cli(capsys, *arguments).code
    finally:
        torch.set_num_threads(threads)


def align_arguments(corpus: Path, out: Path) -> list[object]:
    return ["align", "--model", corpus / "tiny", "--audio", corpus / "manifest.jsonl",
            "--format", "json", "--out", out]


def outcome_ranks(out: Path) -> list[int]:
    return sorted({json.loads(path.read_text())["rank"]
                   for path in (out / ".attnprobe" / "outcomes").glob("*.json")})


def test_sharded_alignments_are_the_single_process_bytes_and_failures_stand_alone(
        corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert single_process(capsys, *align_arguments(corpus, tmp_path / "one")) == 1
    result = torchrun("-m", "attnprobe", *align_arguments(corpus, tmp_path / "two"))
    assert result.returncode != 0, "two files of the manifest fail"
    assert "2 of 10 files failed" in result.stderr, result.stderr[-3000:]
    assert outcome_ranks(tmp_path / "two") == [0, 1], "both ranks aligned utterances"
    one, two = files_of(tmp_path / "one"), files_of(tmp_path / "two")
    assert sorted(one) == sorted(two) == sorted(
        [f"utt{index}.json" for index in range(len(SECONDS))] + ["summary.json"])
    assert one == two
    summary = json.loads(two["summary.json"])
    failures = {failure["id"]: failure["error"] for failure in summary["failures"]}
    assert sorted(failures) == ["broken", "gone"]
    assert "cannot read" in failures["broken"] and "does not exist" in failures["gone"]
    assert summary["timestamp_errors"]["num_words"] == sum(
        len(json.loads(two[f"utt{index}.json"])["words"]) for index in range(len(SECONDS)))


def test_a_rank_killed_part_way_loses_only_its_unfinished_utterances(
        corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert single_process(capsys, *align_arguments(corpus, tmp_path / "whole")) == 1
    out = tmp_path / "killed"
    outcomes, ranks = out / ".attnprobe" / "outcomes", out / ".attnprobe" / "ranks"

    def kill_rank_1_after_its_first_utterance() -> None:
        deadline = time.monotonic() + 80
        while time.monotonic() < deadline:
            mine = [path for path in outcomes.glob("*.json")
                    if json.loads(path.read_text() or "{}").get("rank") == 1]
            if mine and (ranks / "rank-1.json").is_file():
                os.kill(json.loads((ranks / "rank-1.json").read_text())["pid"], signal.SIGKILL)
                return
            time.sleep(0.02)

    import threading

    killer = threading.Thread(target=kill_rank_1_after_its_first_utterance)
    killer.start()
    result = torchrun("-m", "attnprobe", *align_arguments(corpus, out))
    killer.join()
    assert result.returncode != 0
    partial = files_of(out)
    whole = files_of(tmp_path / "whole")
    aligned = [name for name in partial if name.startswith("utt")]
    assert 1 <= len(aligned) < len(SECONDS), "the run stopped part-way"
    assert all(partial[name] == whole[name] for name in aligned), "only complete files remain"
    assert single_process(capsys, *align_arguments(corpus, out)) == 1
    assert files_of(out) == whole


@pytest.mark.parametrize("scan", [False, True])
def test_sharded_reports_and_checkpoint_scans_are_the_single_process_bytes(
        scan: bool, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    probes = write_manifest(tmp_path / "probes", [1.5, 2.4])
    options = ["--projections", "1", "--max-frames", "8"]
    if scan:
        run = tmp_path / "run"
        for step in (100, 200, 300):
            checkpoint = tiny_checkpoint(tmp_path / f"seed{step}", seed=step)
            (run / "checkpoints").mkdir(parents=True, exist_ok=True)
            checkpoint.rename(run / "checkpoints" / f"step-{step:06d}.pt")
        command = ["report", "--checkpoints", run, "--audio", probes, *options]
    else:
        command = ["report", "--model", corpus / "tiny", "--audio", probes, *options]
    assert single_process(capsys, *command, "--out", tmp_path / "one") == 0
    result = torchrun("-m", "attnprobe", *command, "--out", tmp_path / "two")
    assert result.returncode == 0, result.stderr[-3000:]
    assert outcome_ranks(tmp_path / "two") == [0, 1]
    one, two = files_of(tmp_path / "one"), files_of(tmp_path / "two")
    assert one == two
    if scan:
        assert {"reversal_vs_step.png", "summary.json", "report.html",
                "step-000300/report.json"} <= set(two)
    else:
        assert {"utt0/report.html", "utt1/block_scores.png", "summary.json"} <= set(two)
