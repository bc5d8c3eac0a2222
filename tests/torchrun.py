"""Launching ``torchrun --nproc-per-node N`` (as ``python -m torch.distributed.run``) from a test,
on CPU with gloo, with a deadline that fails the test if any rank hangs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEADLINE_S = 90


def torchrun(*arguments: object, ranks: int = 2, deadline_s: float = DEADLINE_S,
             cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """Run ``torchrun --standalone --nproc-per-node ranks <arguments>``; fail the test when it is
    not done within ``deadline_s`` (the process tree is killed)."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1",
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                               os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", str(ranks), *map(str, arguments)]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=deadline_s,
                              cwd=cwd, env=environment)
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"torchrun did not finish within {deadline_s} s (a rank hangs):\n"
                    f"{(expired.stderr or b'')[-3000:]!r}")
