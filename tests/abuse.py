"""The contract every command-line run keeps, whatever it is given (``test_cli_abuse``): an exit
code from the documented set, stderr without a traceback (one line when the run failed), every
input file byte-identical afterwards, and nothing written outside ``--out``."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cli_fixtures import Run, run_cli


def snapshot(root: Path) -> dict[Path, str]:
    """Every file under ``root`` with the SHA-256 of its bytes."""
    return {path: hashlib.sha256(path.read_bytes()).hexdigest()
            for path in root.rglob("*") if path.is_file() or path.is_symlink()}


def inside(path: Path, folder: Path | None) -> bool:
    return folder is not None and (path == folder or folder in path.parents)


def checked_run(capsys: pytest.CaptureFixture[str], root: Path, *arguments: object,
                out: Path | None = None, codes: tuple[int, ...] = (0, 2)) -> Run:
    """Run ``attnprobe <arguments>`` with everything it may touch under ``root`` and check the
    contract (see the module docstring); ``out`` is the only place it may write."""
    before = snapshot(root)
    run = run_cli(capsys, *arguments)
    after = snapshot(root)
    assert run.code in codes, (run.code, run.err)
    assert "Traceback" not in run.err and "Traceback" not in run.out, run.err
    lines = run.err.strip().splitlines()
    if run.code == 2:
        assert len(lines) == 1 and lines[0].startswith("attnprobe: error: "), run.err
    if run.code == 0:
        assert all(line.startswith("attnprobe: warning: ") for line in lines
                   if not _is_progress(line)), run.err
    changed = [path for path, digest in before.items()
               if not inside(path, out) and after.get(path) != digest]
    assert not changed, f"inputs changed or vanished: {changed}"
    outside = [path for path in after if path not in before and not inside(path, out)]
    assert not outside, f"written outside --out {out}: {outside}"
    return run


def _is_progress(line: str) -> bool:
    return line.startswith(("[", "done: ")) or " files" in line.split(";")[0]
