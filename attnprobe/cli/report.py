"""``attnprobe report``: the reversal report of any supported model on audio, as a table in the
terminal and, with ``--out``, figures (PNG), numbers (JSON) and one HTML page.

One audio file: one report. A folder, list or manifest: one report folder per utterance, written
as each finishes, resumable, shardable over ``torchrun``
(:class:`attnprobe.reporting.corpus.ReportJob`). ``--checkpoints RUN_DIR``: every checkpoint of a
training run on the ``--audio`` probe set (:mod:`attnprobe.reporting.checkpoint_scan`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from attnprobe.errors import InputError, OutputError
from attnprobe.jobs import (
    InputItem,
    InputPaths,
    JobGroup,
    PendingFiles,
    check_output_place,
    check_writable,
    collect_inputs,
    names_collection,
    read_text_argument,
    run_job,
    run_to_terminal,
)
from attnprobe.reporting.checkpoint_scan import CheckpointScanJob, find_checkpoints
from attnprobe.reporting.corpus import ReportJob
from attnprobe.reporting.html import render_page
from attnprobe.reporting.sections import queue_result
from attnprobe.reporting.text import describe
from attnprobe.reporting.utterance import GIB, ReportOptions, analyse

SINGLE_OUTPUTS = ("report.json", "report.html")


def options_from(arguments: argparse.Namespace, align: bool = True) -> ReportOptions:
    return ReportOptions(projections=arguments.projections or None,
                         chunk_size=arguments.chunk_size, max_frames=arguments.max_frames or None,
                         memory_limit_bytes=int(arguments.memory_limit * GIB), align=align)


def run_report(arguments: argparse.Namespace) -> int:
    """The ``report`` command; returns the exit code."""
    items = collect_inputs(arguments.audio, read_text_argument(arguments.text))
    out = None if arguments.out is None else Path(arguments.out).expanduser()
    inputs = InputPaths.of_run(arguments.audio, items, arguments.text, arguments.model)
    group = JobGroup.from_environment(arguments.timeout)
    if arguments.checkpoints is not None:
        return _scan(arguments, items, out, inputs, group)
    job = ReportJob(arguments.model, options_from(arguments),
                    echo=None if group.distributed else _echo, language=arguments.language,
                    task=arguments.task)
    if names_collection(arguments.audio) or group.distributed:
        if out is None:
            if group.distributed:
                raise InputError("under torchrun every rank writes its own files: pass "
                                 "--out FOLDER")
            return _to_terminal(job, items)
        check_writable(out, "folder")
        check_output_place(out, "folder", inputs,
                           [job.output_name(item.id) for item in items] + job.summary_names())
        return run_job(job, items, out, overwrite=arguments.overwrite, group=group).exit_code
    (item,) = items
    job.inspect(item)
    if out is not None:
        check_writable(out, "folder")
        check_output_place(out, "folder", inputs, SINGLE_OUTPUTS)
        existing = [name for name in SINGLE_OUTPUTS if (out / name).exists()]
        if existing and not arguments.overwrite:
            raise OutputError(f"--out {out} already holds {existing[0]}; pass --overwrite to "
                              f"replace that report, or choose another folder")
    result = analyse(job.loaded, item, job.options)
    _echo(describe(result))
    _warn(item, result.warnings)
    if out is not None:
        pending = PendingFiles(out)
        section = queue_result(result, pending)
        pending.add("report.html", render_page(
            f"attnprobe reversal report: {job.loaded.name}",
            [f"{item.audio} probed with {job.loaded.name} ({job.loaded.family})."], [section]))
        pending.commit()
        print(f"report written to {out / 'report.html'}")
    return 0


def _scan(arguments: argparse.Namespace, items: list[InputItem], out: Path | None,
          inputs: InputPaths, group: JobGroup) -> int:
    if out is None:
        raise InputError("--checkpoints writes a report per checkpoint and the figure over "
                         "training: pass --out FOLDER")
    run = Path(arguments.checkpoints).expanduser()
    checkpoints = find_checkpoints(run)
    job = CheckpointScanJob(run, items, options_from(arguments, align=False))
    scan_inputs = InputPaths(inputs.files, inputs.folders | {run})
    check_writable(out, "folder")
    check_output_place(out, "folder", scan_inputs,
                       [job.output_name(item.id) for item in checkpoints] + job.summary_names())
    return run_job(job, checkpoints, out, overwrite=arguments.overwrite, group=group).exit_code


def _to_terminal(job: ReportJob, items: list[InputItem]) -> int:
    def show(item: InputItem) -> str:
        result = analyse(job.loaded, item, job.options)
        _echo(describe(result))
        _warn(item, result.warnings)
        return result.verdict

    return run_to_terminal(job, items, show)


def _echo(text: str) -> None:
    print(text, end="\n\n", flush=True)


def _warn(item: InputItem, warnings: list[str]) -> None:
    for warning in warnings:
        print(f"attnprobe: warning: {item.id}: {warning}", file=sys.stderr)
