"""One result as a section of the HTML report, with its figures and numbers queued as files."""

from __future__ import annotations

import json

from attnprobe.jobs.files import PendingFiles
from attnprobe.plotting.figure import png_bytes

from .figures import figures_of
from .html import PageFigure, PageTable, Section
from .text import word_table
from .utterance import UtteranceResult


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
    notes = [f"Warning: {warning}" for warning in result.warnings] + list(result.notes)
    if not result.model.trained:
        notes.insert(0, "This model is an untrained stand-in: its verdict and word times show "
                        "what the report looks like, not a finding.")
    evidence = result.evidence_lines()
    tables = []
    if result.alignment is not None:
        header, rows = word_table(result)
        tables.append(PageTable(header, rows, "Word times (gradient alignment)"))
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
    return its HTML section. Nothing written holds a wall-clock time (the terminal text does), so
    the same input always gives the same files."""
    page_figures = []
    for named in figures_of(result):
        png = png_bytes(named.figure)
        if pending is not None:
            pending.add(f"{prefix}{named.name}.png", png)
        page_figures.append(PageFigure(named.title, named.caption, png))
    if pending is not None:
        pending.add(f"{prefix}report.json",
                    json.dumps(result.to_dict(include_seconds=False), indent=1) + "\n")
    return section_of(result, page_figures)
