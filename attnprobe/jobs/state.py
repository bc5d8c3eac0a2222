"""What a job keeps in its output folder so that it can be resumed: ``<out>/.attnprobe/``.

- ``job.json``: the job's fingerprint (command, model, options). A rerun into the same folder must
  be the same job; it then skips every item whose outputs are complete.
- ``outcomes/<id>.json``: one record per processed item, written after the item's outputs: whether
  it succeeded, its one-line error, warnings, the small facts the summary merges (verdict, word-time
  offsets) and its wall-clock seconds. The merged summary is built from these records alone, so it
  can be written at any time: at the end, on interrupt, after a rerun.
- ``ranks/rank-<k>.json``: which process (host, pid) ran rank ``k`` of the latest run and how many
  items it was given, to tell ranks apart when one hangs or dies;
- ``scratch/``: temporary files and folders on their way into place (see
  :func:`attnprobe.jobs.files.replace_folder`); whatever a killed process left there is removed
  when the next run starts.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any

from attnprobe.errors import JobError, OutputError

from .files import replace_file

STATE_FOLDER = ".attnprobe"


class JobFolder:
    """The output folder of one job and its state (see the module docstring).

    Args:
        out: the ``--out`` folder.
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self.state = out / STATE_FOLDER
        self.scratch = self.state / "scratch"
        self.outcomes = self.state / "outcomes"
        self.ranks = self.state / "ranks"

    def claim(self, fingerprint: dict[str, Any], overwrite: bool) -> bool:
        """Make ``out`` this job's folder; returns whether earlier outcomes stay valid.

        Raises:
            JobError: the folder holds another job, or files no job wrote, and not ``overwrite``.
            OutputError: the folder cannot be created or written.
        """
        record = self.state / "job.json"
        wanted = json.dumps(fingerprint, indent=1, sort_keys=True) + "\n"
        if record.is_file():
            try:
                existing = _read_json(record)
            except (OSError, ValueError):
                existing = {}
            if not isinstance(existing, dict):
                existing = {}
            if existing == json.loads(wanted) and not overwrite:
                self._start_clean()
                return True
            if not overwrite:
                differences = ", ".join(
                    f"{key} {existing.get(key)!r} -> {value!r}" for key, value in
                    sorted(fingerprint.items()) if existing.get(key) != value) or "its format"
                raise JobError(f"--out {self.out} holds the results of another job ({differences}); "
                               f"choose another --out, or pass --overwrite to redo every file "
                               f"there")
        elif self.out.is_dir() and any(self.out.iterdir()) and not overwrite:
            example = sorted(path.name for path in self.out.iterdir())[0]
            raise JobError(f"--out {self.out} already holds files that no attnprobe job wrote "
                           f"(e.g. {example}); choose a new or empty folder, or pass --overwrite "
                           f"to write into it (files of the same names are replaced)")
        try:
            self.state.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(self.outcomes, ignore_errors=True)
            self._start_clean()
            replace_file(record, wanted.encode("utf-8"), self.scratch)
        except OSError as error:
            raise OutputError(f"cannot create {self.state} ({error.strerror or error}); choose "
                              f"another --out") from error
        return False

    def _start_clean(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)
        self.outcomes.mkdir(parents=True, exist_ok=True)
        self.scratch.mkdir(parents=True, exist_ok=True)

    def outcome_path(self, item_id: str) -> Path:
        return self.outcomes / f"{item_id}.json"

    def read_outcome(self, item_id: str) -> dict[str, Any] | None:
        """The item's outcome record, or ``None`` (none yet, or unreadable)."""
        path = self.outcome_path(item_id)
        if not path.is_file():
            return None
        try:
            record = _read_json(path)
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def write_outcome(self, record: dict[str, Any]) -> None:
        """Write one item's outcome record (atomically)."""
        text = json.dumps(record, indent=1, sort_keys=True) + "\n"
        replace_file(self.outcome_path(record["id"]), text.encode("utf-8"), self.scratch)

    def write_rank(self, rank: int, items: int) -> None:
        """Note which process runs ``rank`` and how many items it has."""
        document = {"rank": rank, "host": socket.gethostname(), "pid": os.getpid(),
                    "items": items}
        self.ranks.mkdir(parents=True, exist_ok=True)
        replace_file(self.ranks / f"rank-{rank}.json",
                     (json.dumps(document) + "\n").encode("utf-8"), self.scratch)

    def forget(self, item_id: str) -> None:
        """Drop an item's outcome before its outputs are replaced."""
        self.outcome_path(item_id).unlink(missing_ok=True)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))
