"""Running a job over many inputs: a progress bar on stderr (tqdm, from the ``cli`` extra), one
error per failed file that does not stop the others, and a summary at the end.

A single input runs without any of that: its error, if any, reaches the caller unchanged, so the
command line can print it as the one-line error it is.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .items import InputItem


@dataclass(frozen=True)
class Outcome:
    """What happened to one input.

    Attributes:
        item: the input.
        seconds: wall-clock time spent on it.
        detail: a short success note (e.g. ``"9 words"``), or ``None`` when it failed.
        error: the one-line error, or ``None`` when it succeeded.
    """

    item: InputItem
    seconds: float
    detail: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class BatchSummary:
    """Outcomes of a run, in input order."""

    outcomes: list[Outcome] = field(default_factory=list)
    stream: TextIO = field(default=sys.stderr, repr=False)

    @property
    def failed(self) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if not outcome.ok]

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": len(self.outcomes),
            "succeeded": len(self.outcomes) - len(self.failed),
            "failed": len(self.failed),
            "seconds": sum(outcome.seconds for outcome in self.outcomes),
            "results": [{"id": outcome.item.id, "audio": str(outcome.item.audio),
                         "ok": outcome.ok, "detail": outcome.detail, "error": outcome.error,
                         "seconds": round(outcome.seconds, 3)} for outcome in self.outcomes],
        }

    def finish(self, out: Path | None) -> int:
        """Print the summary of a run over several inputs; the exit code (1 if any failed)."""
        if not self.outcomes:
            return 0
        total = sum(outcome.seconds for outcome in self.outcomes)
        done = len(self.outcomes) - len(self.failed)
        print(f"done: {done} of {len(self.outcomes)} files in {total:.1f} s"
              + (f"; outputs in {out}" if out is not None else ""), file=self.stream)
        if not self.failed:
            return 0
        print(f"{len(self.failed)} of {len(self.outcomes)} files failed:", file=self.stream)
        for outcome in self.failed:
            print(f"  {outcome.item.audio}: {outcome.error}", file=self.stream)
        return 1


class Progress:
    """One bar for the whole run on a terminal (tqdm), failures printed above it; one line per
    file otherwise (logs, CI), or where tqdm is not installed."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.stream = stream
        self.bar: Any = None
        self.shown = 0
        if bool(getattr(stream, "isatty", lambda: False)()):
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=total, file=stream, unit="file", dynamic_ncols=True)

    def advance_to(self, done: int) -> None:
        """Show ``done`` files finished (by any rank)."""
        if self.bar is None:
            if done > self.shown:
                print(f"[{done}/{self.total}] finished on all ranks", file=self.stream,
                      flush=True)
                self.shown = done
        elif done > self.bar.n:
            self.bar.update(done - self.bar.n)

    def show(self, done: int, item_id: str, ok: bool, detail: str | None, error: str | None,
             seconds: float) -> None:
        """One file finished; ``done`` counts every finished file so far."""
        status = f"ok ({detail})" if ok else f"FAILED: {error}"
        if self.bar is None:
            print(f"[{done}/{self.total}] {item_id}: {status} ({seconds:.1f} s)",
                  file=self.stream, flush=True)
            self.shown = max(self.shown, done)
            return
        if not ok:
            self.bar.write(f"{item_id}: {status}", file=self.stream)
        self.bar.set_postfix_str(item_id, refresh=False)
        self.advance_to(done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_items(items: list[InputItem], process: Callable[[InputItem], str],
              stream: TextIO | None = None, force_batch: bool = False) -> BatchSummary:
    """Call ``process`` on every item; ``process`` returns a short success note.

    With one item (unless ``force_batch``), its exception propagates. Otherwise each failure is
    recorded as a one-line error and the run goes on (``KeyboardInterrupt`` still stops it).
    """
    stream = sys.stderr if stream is None else stream
    summary = BatchSummary(stream=stream)
    if len(items) == 1 and not force_batch:
        started = time.perf_counter()
        detail = process(items[0])
        summary.outcomes.append(Outcome(items[0], time.perf_counter() - started, detail))
        return summary
    progress = Progress(len(items), stream)
    try:
        for done, item in enumerate(items, start=1):
            started = time.perf_counter()
            detail: str | None = None
            failure: str | None = None
            try:
                detail = process(item)
            except Exception as error:  # noqa: BLE001 - one bad file must not stop the others
                failure = one_line(error)
            outcome = Outcome(item, time.perf_counter() - started, detail, failure)
            summary.outcomes.append(outcome)
            progress.show(done, item.id, outcome.ok, detail, failure, outcome.seconds)
    finally:
        progress.close()
    return summary


def one_line(error: BaseException) -> str:
    """The error as one line: its message's first line, prefixed with the type for errors that
    are not attnprobe's own (those name the fix already)."""
    from attnprobe.errors import AttnprobeError

    text = str(error).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(error, AttnprobeError):
        return first or type(error).__name__
    return f"{type(error).__name__}: {first}" if first else type(error).__name__
