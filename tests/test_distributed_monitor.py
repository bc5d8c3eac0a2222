"""FlipMonitor under DDP: ``torchrun --nproc-per-node 2`` on CPU (gloo) trains the tiny Conformer
AED in a plain loop, a Hugging Face ``Trainer`` and a Lightning ``Trainer``. A reversal is planted
on rank 0's probes only: every rank must report rank 0's verdict (the probe is shared), the log and
``on_flip`` must happen once (rank 0), and no rank may hang (each launch has a deadline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from torchrun import torchrun

from tests.distributed_monitor import PLANT_BLOCK, STEPS


def monitored_run(loop: str, out: Path) -> list[dict]:
    result = torchrun("-m", "tests.distributed_monitor", loop, out)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads((out / f"rank-{rank}.json").read_text()) for rank in (0, 1)]


@pytest.mark.parametrize("loop", ["plain", "trainer", "lightning"])
def test_every_rank_gets_rank_0s_verdict_and_it_is_logged_once(loop: str, tmp_path: Path) -> None:
    if loop == "trainer":
        pytest.importorskip("transformers")
        pytest.importorskip("accelerate", reason="the Hugging Face Trainer needs accelerate")
    if loop == "lightning":
        pytest.importorskip("lightning")
    first, second = monitored_run(loop, tmp_path)
    probed = list(range(2, STEPS + 1, 2))
    assert first["steps"] == second["steps"] == probed
    # Only rank 0's probes see the planted reversal; rank 1 knows of it because it was shared.
    assert first["flip"] == second["flip"] == [4, PLANT_BLOCK]
    assert (first["on_flip_calls"], second["on_flip_calls"]) == (1, 0)
    logged = (tmp_path / "monitor.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in logged] == probed


def test_a_rank_waiting_for_a_probe_that_never_comes_gives_up(tmp_path: Path) -> None:
    result = torchrun("-m", "tests.distributed_monitor", "rank-0-never-probes", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    error = (tmp_path / "rank-1-error.txt").read_text()
    assert "waited in vain for rank 0's probe" in error and "every rank" in error
