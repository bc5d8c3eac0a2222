"""``attnprobe align``: word and label times of a transcript in its audio, by one of three methods
(:mod:`attnprobe.reporting.alignments`), in one of four formats.

One audio file: its alignment to ``--out FILE`` or the terminal. A folder, list or manifest: one
file per utterance in ``--out FOLDER``, written as each finishes, resumable, shardable over
``torchrun`` (:class:`attnprobe.reporting.corpus.AlignJob`); without ``--out`` to the terminal.
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
    check_output_place,
    check_writable,
    collect_inputs,
    names_collection,
    read_text_argument,
    run_job,
    run_to_terminal,
    write_file_atomically,
)
from attnprobe.reporting.corpus import AlignJob


def run_align(arguments: argparse.Namespace) -> int:
    """The ``align`` command; returns the exit code."""
    items = collect_inputs(arguments.audio, read_text_argument(arguments.text))
    out = None if arguments.out is None else Path(arguments.out).expanduser()
    changes: dict[str, object] = {}
    if arguments.blank is not None:
        changes["blank"] = arguments.blank
    if arguments.close_gaps is not None:
        changes["max_gap_s"] = arguments.close_gaps / 1000
    job = AlignJob(arguments.model, arguments.method, output_format=arguments.format,
                   settings_changes=changes, language=arguments.language, task=arguments.task)
    inputs = InputPaths.of_run(arguments.audio, items, arguments.text, arguments.model)
    group = JobGroup.from_environment(arguments.timeout)
    if names_collection(arguments.audio) or group.distributed:
        if out is None:
            if group.distributed:
                raise InputError("under torchrun every rank writes its own files: pass "
                                 "--out FOLDER")
            if arguments.format == "textgrid":
                raise InputError("several TextGrids cannot share the terminal; pass --out FOLDER")
            return _to_terminal(job, items)
        check_writable(out, "folder")
        check_output_place(out, "folder", inputs,
                           [job.output_name(item.id) for item in items] + job.summary_names())
        return run_job(job, items, out, overwrite=arguments.overwrite, group=group).exit_code
    (item,) = items
    job.inspect(item)
    if out is not None:
        check_writable(out, "file")
        check_output_place(out, "file", inputs)
        if out.exists() and not arguments.overwrite:
            raise OutputError(f"--out {out} exists; pass --overwrite to replace it, or choose "
                              f"another file")
    text, output = job.align(item)
    for warning in output.warnings:
        print(f"attnprobe: warning: {item.id}: {warning}", file=sys.stderr)
    if out is None:
        sys.stdout.write(text)
    else:
        write_file_atomically(out, text)
    return 0


def _to_terminal(job: AlignJob, items: list[InputItem]) -> int:
    def show(item: InputItem) -> str:
        text, output = job.align(item)
        sys.stdout.write(text)
        sys.stdout.flush()
        for warning in output.warnings:
            print(f"attnprobe: warning: {item.id}: {warning}", file=sys.stderr)
        return output.detail

    return run_to_terminal(job, items, show)
