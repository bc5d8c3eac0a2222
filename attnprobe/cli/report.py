"""``attnprobe report``: the reversal report of any supported model on audio, as a table in the
terminal and, with ``--out``, figures (PNG), numbers (JSON) and one HTML page."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from attnprobe.audio import check_audio_file
from attnprobe.jobs.files import PendingFiles, check_writable
from attnprobe.jobs.items import InputItem, collect_inputs, read_text_argument
from attnprobe.jobs.progress import run_items
from attnprobe.loading import load_model
from attnprobe.reporting.html import PageTable, Section, render_page
from attnprobe.reporting.sections import queue_result
from attnprobe.reporting.text import describe
from attnprobe.reporting.utterance import GIB, ReportOptions, UtteranceResult, analyse


def options_from(arguments: argparse.Namespace, align: bool = True) -> ReportOptions:
    return ReportOptions(projections=arguments.projections or None,
                         chunk_size=arguments.chunk_size, max_frames=arguments.max_frames or None,
                         memory_limit_bytes=int(arguments.memory_limit * GIB), align=align)


def run_report(arguments: argparse.Namespace) -> int:
    """The ``report`` command; returns the exit code."""
    items = collect_inputs(arguments.audio, read_text_argument(arguments.text))
    many = len(items) > 1
    out = None if arguments.out is None else Path(arguments.out).expanduser()
    if out is not None:
        check_writable(out, "folder")
    if not many:
        check_audio_file(items[0].audio)
    options = options_from(arguments)
    loaded = load_model(arguments.model, language=arguments.language, task=arguments.task)
    sections: list[Section] = []
    results: list[UtteranceResult] = []
    single_output = PendingFiles(out) if out is not None and not many else None

    def process(item: InputItem) -> str:
        result = analyse(loaded, item, options)
        print(describe(result), end="\n\n", flush=True)
        if out is not None:
            pending = single_output or PendingFiles(out / item.id)
            sections.append(queue_result(result, pending))
            if many:
                pending.commit()
        results.append(result)
        return result.verdict

    summary = run_items(items, process)
    if out is not None and sections:
        final = single_output or PendingFiles(out)
        overview = None
        if many:
            overview = PageTable(["file", "verdict", "TSE boundaries (ms)"],
                                 [[result.item.id, result.verdict,
                                   "" if result.errors is None
                                   else f"{result.errors.tse_boundaries_ms:.0f}"]
                                  for result in results], "All files")
            final.add("summary.json", json.dumps(summary.to_dict(), indent=1) + "\n")
        final.add("report.html", render_page(
            f"attnprobe reversal report: {loaded.name}",
            [f"{len(results)} of {len(items)} files probed with {loaded.name} "
             f"({loaded.family})."], sections, overview))
        final.commit()
        print(f"report written to {out / 'report.html'}")
    return summary.finish(out)
