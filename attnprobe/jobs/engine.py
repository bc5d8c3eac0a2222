"""Run a job over many items, in one process or on every rank ``torchrun`` started, resumably.

The steps, identical on every rank (:func:`run_job`):

1. rank 0 claims the output folder (:class:`~.state.JobFolder`): a new job, the same job resumed,
   or a refusal that every rank raises alike;
2. each rank inspects a slice of the items (audio headers, length against the model's window:
   :meth:`Job.inspect`; whether its outputs are already complete) and all ranks gather the
   results, so every rank knows every item's weight before any model is loaded;
3. items that are complete are skipped (unless ``overwrite``), items with a problem fail alone,
   the rest is cut into shards balanced by weight (:func:`~.sharding.balanced_shards`);
4. each rank processes its shard in input order, writing every item's outputs atomically (a file,
   or a whole folder, renamed into place) and then its outcome record;
5. rank 0 shows one progress bar for the whole job, waits for every rank to finish (or to stop
   making progress for ``timeout_s``), and merges the summary from the outcome records.

Ctrl-C (SIGINT), and SIGTERM as ``torchrun`` sends it to its workers, stop the run between two
writes: what finished stays, rank 0 still writes the summary, and a rerun of the same command
picks up the rest.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

from attnprobe.errors import AttnprobeError, JobError

from .distributed import JobGroup
from .files import replace_file, replace_folder
from .progress import Progress, one_line, run_items
from .sharding import balanced_shards
from .state import JobFolder

WARNINGS_SHOWN = 20


class JobItem(Protocol):
    """What a job processes: an id that is a safe file name, and the path it comes from."""

    id: str

    @property
    def source(self) -> Path: ...


@dataclass(frozen=True)
class Inspection:
    """What a cheap look at one item found: its work (e.g. audio seconds) and, when it cannot be
    processed, why (one line)."""

    weight: float
    problem: str | None = None


@dataclass
class ItemOutput:
    """What processing one item produced.

    Attributes:
        content: the output file's bytes (``Job.folder_per_item`` false), or ``{relative name:
            bytes}`` of the item's folder.
        detail: a short success note, e.g. ``"9 words"``.
        facts: small JSON values the summary merges (verdict, word-time offsets, ...).
        warnings: why the answer may mean nothing (no speech, an unlikely transcript).
    """

    content: bytes | dict[str, bytes]
    detail: str
    facts: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


class Job(ABC):
    """One kind of work over items: ``attnprobe align``, ``report`` or a checkpoint scan."""

    command: str = "job"
    folder_per_item: bool = False

    @abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """What a rerun must share with the run that wrote the folder (command, model, options)."""

    @abstractmethod
    def output_name(self, item_id: str) -> str:
        """The item's output under ``--out``: a file name, or a folder name."""

    @abstractmethod
    def inspect(self, item: Any) -> Inspection:
        """Cheap checks before any model is loaded."""

    def start(self) -> None:  # noqa: B027 - most jobs load their model here; some need nothing
        """Called once, before this rank's first item (load the model here)."""

    @abstractmethod
    def process(self, item: Any) -> ItemOutput:
        """The item's outputs; raise on failure (the item then fails alone)."""

    @abstractmethod
    def merge(self, folder: JobFolder, items: Sequence[Any],
              records: Sequence[dict[str, Any] | None]) -> dict[str, bytes]:
        """The summary files (name under ``--out`` -> bytes) from every item's outcome record
        (``None``: not finished)."""


@dataclass
class JobReport:
    """How a run went, as this rank saw it (rank 0 sees the whole job).

    Attributes:
        total: items in the job.
        skipped: complete before this run.
        processed: items this run finished (succeeded or failed), every rank together.
        failures: ``(id, source, error)`` of every failed item (rank 0: the whole job).
        unfinished: items without an outcome when the summary was written.
        seconds: wall-clock seconds of this run.
        exit_code: 0, or 1 when some items failed or did not finish.
    """

    total: int
    skipped: int = 0
    processed: int = 0
    failures: list[tuple[str, str, str]] = field(default_factory=list)
    unfinished: int = 0
    seconds: float = 0.0
    exit_code: int = 0


def run_job(job: Job, items: Sequence[Any], out: Path, *, overwrite: bool = False,
            group: JobGroup | None = None, stream: TextIO | None = None) -> JobReport:
    """Run ``job`` over ``items`` into the folder ``out`` (see the module docstring).

    Raises:
        JobError / OutputError: the folder belongs to another job or cannot be written.
        KeyboardInterrupt: interrupted (after rank 0 wrote the summary of what finished).
    """
    stream = sys.stderr if stream is None else stream
    group = group or JobGroup.from_environment()
    folder = JobFolder(out)
    started = time.perf_counter()
    report = JobReport(total=len(items))
    claimed = False
    try:
        with _interrupts_as_keyboard_interrupt():
            _agree_on_folder(group, folder, job, overwrite)
            claimed = True
            todo, problems, report.skipped = _plan(group, folder, job, items, overwrite)
            if group.is_leader:
                _announce(stream, len(items), report.skipped, len(problems), len(todo), group)
                for item, problem in problems:
                    folder.forget(item.id)
                    folder.write_outcome(_record(item, 0.0, group.rank, error=problem))
            if problems and group.is_leader:
                group.add("done", len(problems))
            weights = [weight for _, weight in todo]
            mine = [todo[index][0] for index in balanced_shards(weights, group.world_size)[
                group.rank]]
            folder.write_rank(group.rank, len(mine))
            progress = Progress(len(todo) + len(problems), stream) if group.is_leader else None
            if progress is not None:
                for done, (item, problem) in enumerate(problems, start=1):
                    progress.show(done, item.id, False, None, problem, 0.0)
            _process_shard(job, folder, group, mine, progress)
            group.finish()
            if group.is_leader:
                missing = group.wait_for_ranks(
                    None if progress is None else progress.advance_to)
                if progress is not None:
                    progress.close()
                _summarise(job, folder, items, report, stream, started, missing,
                           timeout_s=group.timeout_s)
    except KeyboardInterrupt:
        if group.is_leader and claimed:
            with contextlib.suppress(Exception):
                _summarise(job, folder, items, report, stream, started, [], interrupted=True)
        raise
    finally:
        group.close()
    report.seconds = time.perf_counter() - started
    return report


def run_to_terminal(job: Job, items: Sequence[Any], show: Callable[[Any], str],
                    stream: TextIO | None = None) -> int:
    """A batch without an output folder, in one process: every item is inspected first (the
    model loads only if some item can use it), then ``show(item)`` prints each item's result as
    soon as it is done and returns a short note; failures are listed at the end. Returns the exit
    code (1 when some item failed)."""
    problems: dict[str, AttnprobeError] = {}
    for item in items:
        try:
            job.inspect(item)
        except AttnprobeError as error:
            problems[item.id] = error
    if len(problems) < len(items):
        job.start()

    def process(item: Any) -> str:
        if item.id in problems:
            raise problems[item.id]
        return show(item)

    return run_items(list(items), process, stream, force_batch=True).finish(None)


def _agree_on_folder(group: JobGroup, folder: JobFolder, job: Job, overwrite: bool) -> None:
    """Rank 0 claims the folder; every rank raises the same error when it could not."""
    failure: tuple[str, str] | None = None
    if group.is_leader:
        try:
            folder.claim(job.fingerprint(), overwrite)
        except AttnprobeError as error:
            if not group.distributed:
                raise
            failure = (type(error).__name__, str(error))
    failures = [found for found in group.all_gather(failure) if found is not None]
    if failures:
        raise JobError(failures[0][1])


def _plan(group: JobGroup, folder: JobFolder, job: Job, items: Sequence[Any], overwrite: bool
          ) -> tuple[list[tuple[Any, float]], list[tuple[Any, str]], int]:
    """``(items to process with their weights, items that fail at once with why, items complete
    before this run)``, the same on every rank."""
    looked_at = []
    for index in range(group.rank, len(items), group.world_size):
        item = items[index]
        complete = not overwrite and _is_complete(folder, job, item)
        inspection = Inspection(0.0) if complete else _inspect(job, item)
        looked_at.append((index, complete, inspection.weight, inspection.problem))
    found = sorted(entry for part in group.all_gather(looked_at) for entry in part)
    todo = [(items[index], weight) for index, complete, weight, problem in found
            if not complete and problem is None]
    problems = [(items[index], problem) for index, complete, _, problem in found
                if not complete and problem is not None]
    return todo, problems, sum(1 for _, complete, _, _ in found if complete)


def _inspect(job: Job, item: Any) -> Inspection:
    try:
        return job.inspect(item)
    except AttnprobeError as error:
        return Inspection(0.0, one_line(error))


def _is_complete(folder: JobFolder, job: Job, item: Any) -> bool:
    record = folder.read_outcome(item.id)
    return bool(record and record.get("ok")) and (folder.out / job.output_name(item.id)).exists()


def _process_shard(job: Job, folder: JobFolder, group: JobGroup, items: list[Any],
                   progress: Progress | None) -> None:
    started_job = False
    for item in items:
        started = time.perf_counter()
        folder.forget(item.id)
        try:
            if not started_job:
                job.start()
                started_job = True
            output = job.process(item)
            target = folder.out / job.output_name(item.id)
            if isinstance(output.content, dict):
                replace_folder(target, output.content, folder.scratch)
            else:
                replace_file(target, output.content, folder.scratch)
            record = _record(item, time.perf_counter() - started, group.rank, output=output)
        except KeyboardInterrupt:
            raise
        except AttnprobeError as error:
            if not started_job:
                raise  # the model cannot be loaded: no item can run
            record = _record(item, time.perf_counter() - started, group.rank,
                             error=one_line(error))
        except Exception as error:  # noqa: BLE001 - one bad file must not stop the others
            if not started_job:
                raise
            record = _record(item, time.perf_counter() - started, group.rank,
                             error=one_line(error))
        folder.write_outcome(record)
        done = group.add("done")
        if progress is not None:
            progress.show(done, item.id, record["ok"], record["detail"], record["error"],
                          record["seconds"])


def _record(item: Any, seconds: float, rank: int, output: ItemOutput | None = None,
            error: str | None = None) -> dict[str, Any]:
    return {"id": item.id, "source": str(item.source), "ok": error is None,
            "detail": None if output is None else output.detail, "error": error,
            "warnings": [] if output is None else list(output.warnings),
            "facts": {} if output is None else output.facts,
            "seconds": round(seconds, 3), "rank": rank}


def _announce(stream: TextIO, total: int, skipped: int, problems: int, todo: int,
              group: JobGroup) -> None:
    parts = [f"{total} files"]
    if skipped:
        parts.append(f"{skipped} finished earlier, skipped (--overwrite redoes them)")
    if problems:
        parts.append(f"{problems} cannot be processed")
    parts.append(f"{todo} to process" + (f" on {group.world_size} ranks"
                                         if group.distributed else ""))
    print("; ".join(parts), file=stream, flush=True)


def _summarise(job: Job, folder: JobFolder, items: Sequence[Any], report: JobReport,
               stream: TextIO, started: float, missing_ranks: list[int],
               interrupted: bool = False, timeout_s: float = 0.0) -> None:
    records = [folder.read_outcome(item.id) for item in items]
    for name, content in job.merge(folder, items, records).items():
        replace_file(folder.out / name, content, folder.scratch)
    report.failures = [(record["id"], record["source"], record["error"]) for record in records
                       if record is not None and not record["ok"]]
    report.unfinished = sum(record is None for record in records)
    report.processed = sum(record is not None for record in records) - report.skipped
    finished = len(items) - report.unfinished
    seconds = time.perf_counter() - started
    print(f"{'interrupted' if interrupted else 'done'}: {finished - len(report.failures)} of "
          f"{len(items)} files succeeded in {seconds:.1f} s; outputs in {folder.out}",
          file=stream, flush=True)
    if report.failures:
        print(f"{len(report.failures)} of {len(items)} files failed:", file=stream)
        for _, source, error in report.failures:
            print(f"  {source}: {error}", file=stream)
    warned = [record for record in records if record is not None and record.get("warnings")]
    if warned:
        print(f"{len(warned)} of {len(items)} files carry warnings (see summary.json):",
              file=stream)
        for record in warned[:WARNINGS_SHOWN]:
            print(f"  {record['id']}: {'; '.join(record['warnings'])}", file=stream)
    if missing_ranks:
        print(f"rank{'s' if len(missing_ranks) > 1 else ''} "
              f"{', '.join(map(str, missing_ranks))} made no progress for {timeout_s:.0f} s; "
              f"rank 0 stopped waiting (--timeout sets how long)", file=stream)
    if report.unfinished:
        print(f"{report.unfinished} files unfinished: run the same command again to finish "
              f"them", file=stream, flush=True)
    report.exit_code = 1 if report.failures or report.unfinished else 0


@contextlib.contextmanager
def _interrupts_as_keyboard_interrupt() -> Iterator[None]:
    """SIGTERM (what torchrun sends its workers on Ctrl-C) raises KeyboardInterrupt, as SIGINT
    does, so the run stops between two writes and rank 0 writes the summary."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signal_number: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
