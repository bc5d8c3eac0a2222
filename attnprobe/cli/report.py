"""``attnprobe report``: the reversal report of any supported model on audio, as a table in the
terminal and, with ``--out``, figures (PNG), numbers (JSON) and one HTML page."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from attnprobe.adapters.loading import load_model

from .analysis import GIB, ReportOptions, UtteranceResult, analyse, describe, word_table
from .audio import check_audio_file
from .batch import run_items
from .figures import figures_of, png_bytes
from .html import PageFigure, PageTable, Section, render_page
from .inputs import InputItem, collect_inputs, read_text_argument
from .output import PendingFiles, check_writable


def verdict_line(result: UtteranceResult) -> tuple[str, str]:
    """The headline and its kind (``"reversed"``, ``"kept"`` or ``"unknown"``)."""
    report = result.report
    if report is None:
        return f"No verdict: {result.report_skipped}", "unknown"
    if report.reversed_at is not None:
        return (f"REVERSED: the encoder reverses time from block {report.reversed_at} on "
                f"(encoder.{report.reversed_at})", "reversed")
    return "Not reversed: the encoder keeps time order in every block", "kept"


def section_of(result: UtteranceResult, figures: list[PageFigure]) -> Section:
    """The HTML section of one result: verdict, facts, word table, figures, full summaries."""
    verdict, kind = verdict_line(result)
    lines = [f"Model: {result.model.name} ({result.model.family}). Audio: {result.item.audio} "
             f"({result.audio.duration:.2f} s)."]
    if result.transcript is not None:
        lines.append(f"Text ({result.transcript_source}): {result.transcript.text}")
    if result.errors is not None:
        lines.append(f"Gradient alignment against the reference word times: "
                     f"{result.errors.summary()}")
    notes = list(result.notes)
    if not result.model.trained:
        notes.insert(0, "This model is an untrained stand-in: its verdict and word times show "
                        "what the report looks like, not a finding.")
    evidence = result.evidence_lines()
    tables = []
    if result.alignment is not None:
        header, rows = word_table(result)
        tables.append(PageTable(header, rows, "Word times (gradient alignment)"))
    timing = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in result.seconds.items())
    if timing:
        lines.append(f"Time taken: {timing}.")
    return Section(f"{result.model.name} on {result.item.id}", verdict, kind, lines, evidence,
                   notes, figures, tables, details_of(result))


def details_of(result: UtteranceResult) -> str:
    """The full text summaries of every probe that ran."""
    if result.report is not None:
        return result.report.summary()
    return "\n\n".join(probe.summary() for probe in
                       (result.cross_attention, result.diagonality, result.dominance)
                       if probe is not None)


def queue_result(result: UtteranceResult, pending: PendingFiles | None, prefix: str = ""
                 ) -> Section:
    """Render the result's figures, queue them and its JSON under ``prefix`` (when writing), and
    return its HTML section."""
    page_figures = []
    for named in figures_of(result):
        png = png_bytes(named.figure)
        if pending is not None:
            pending.add(f"{prefix}{named.name}.png", png)
        page_figures.append(PageFigure(named.title, named.caption, png))
    if pending is not None:
        pending.add(f"{prefix}report.json", json.dumps(result.to_dict(), indent=1) + "\n")
    return section_of(result, page_figures)


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
    loaded = load_model(arguments.model)
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
