"""Ctrl-C during a batch: the finished files stay complete, the summary is written, and the same
command run again skips what is done (and says so) and ends with the files an uninterrupted run
writes, byte for byte."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cli_fixtures import files_of, run_cli, tiny_checkpoint, write_manifest

REPO = Path(__file__).resolve().parents[1]
SECONDS = {"align": [2.9, 0.8, 1.5, 2.4, 1.2, 2.0, 2.6, 1.0],
           "report": [0.8, 1.2, 1.0, 0.9]}  # a report (figures, HTML) costs more per file


def command(kind: str, folder: Path, out: Path) -> list[object]:
    options = ["--format", "json"] if kind == "align" else \
        ["--projections", "1", "--max-frames", "4"]
    return [kind, "--model", folder / "tiny", "--audio", folder / "manifest.jsonl", *options,
            "--out", out]


def one_thread(capsys: pytest.CaptureFixture[str], *arguments: object):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_cli(capsys, *arguments)
    finally:
        torch.set_num_threads(threads)


def interrupted_run(arguments: list[object], out: Path, after: int) -> subprocess.CompletedProcess:
    """The command in a process of its own, sent SIGINT once ``after`` files are finished."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-m", "attnprobe", *map(str, arguments)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=environment, cwd=REPO)
    outcomes = out / ".attnprobe" / "outcomes"
    # Generous: on a loaded machine, starting Python, torch and the model alone can take a minute.
    deadline = time.monotonic() + 300
    sent = False
    while time.monotonic() < deadline and process.poll() is None:
        if len(list(outcomes.glob("*.json"))) >= after:
            process.send_signal(signal.SIGINT)
            sent = True
            break
        time.sleep(0.02)
    stdout, stderr = process.communicate(timeout=300)
    assert sent, (f"the run ended (code {process.returncode}) or ran out of time before {after} "
                  f"files were finished, so it was never interrupted:\n{stderr}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.mark.parametrize("kind", ["align", "report"])
def test_an_interrupted_batch_keeps_whole_files_and_a_rerun_finishes_it(
        kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiny_checkpoint(tmp_path / "tiny")
    seconds = SECONDS[kind]
    write_manifest(tmp_path, seconds)
    reference = tmp_path / "uninterrupted"
    assert one_thread(capsys, *command(kind, tmp_path, reference)).code == 0
    whole = files_of(reference)

    out = tmp_path / "interrupted"
    result = interrupted_run(command(kind, tmp_path, out), out, after=2)
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("attnprobe: interrupted")
    partial = files_of(out)
    finished = {name.split("/")[0].removesuffix(".json") for name in partial
                if name.startswith("utt")}
    assert 2 <= len(finished) < len(seconds), "interrupted part-way"
    assert all(partial[name] == whole[name] for name in partial if name.startswith("utt")), \
        "every file left is complete"
    for item in finished:  # a finished item has all of its files, not some
        assert sorted(name for name in partial if name.split("/")[0].startswith(item)) == \
            sorted(name for name in whole if name.split("/")[0].startswith(item))
    summary = json.loads(partial["summary.json"])
    assert summary["unfinished"] == len(seconds) - len(finished)

    rerun = one_thread(capsys, *command(kind, tmp_path, out))
    assert rerun.code == 0, rerun.err
    assert f"{len(finished)} finished earlier, skipped" in rerun.err
    assert files_of(out) == whole
