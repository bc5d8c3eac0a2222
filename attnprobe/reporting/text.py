"""The terminal text of a report: tables padded to their cells, word tables, one utterance's
verdict, evidence and words."""

from __future__ import annotations

from .utterance import UtteranceResult


def word_table(result: UtteranceResult) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the aligned words, with the reference and the error where known."""
    assert result.alignment is not None
    words = result.alignment.words
    reference = result.item.reference if result.errors is not None else None
    header = ["word", "start (s)", "end (s)"]
    if reference is not None:
        header += ["reference start", "reference end", "error (ms)"]
    rows = []
    for index, word in enumerate(words):
        row = [word.text, f"{word.start_s:.3f}", f"{word.end_s:.3f}"]
        if reference is not None and result.errors is not None:
            _, start, end = reference[index]
            row += [f"{start:.3f}", f"{end:.3f}",
                    f"{float(result.errors.boundary_errors_ms[index]):.0f}"]
        rows.append(row)
    return header, rows


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell, numbers right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(cell.ljust(width) if index == 0 else cell.rjust(width)
                         for index, (cell, width) in enumerate(zip(cells, widths, strict=True)))

    return "\n".join([line(header), *(line(row) for row in rows)])


def describe(result: UtteranceResult) -> str:
    """The terminal text for one utterance: verdict, evidence, words and their errors."""
    lines = [f"{result.item.id}: {result.model.name} ({result.model.family}) on "
             f"{result.audio.duration:.2f} s of audio"]
    if not result.model.trained:
        lines.append("  (untrained stand-in model: its verdict and word times mean nothing)")
    if result.transcript is not None:
        lines.append(f"  text ({result.transcript_source}): {result.transcript.text}")
    if result.report is not None:
        lines += ["", result.report.summary()]
    else:
        lines.append(f"  reversal report skipped: {result.report_skipped}")
        lines += ["", *(probe.summary() for probe in
                        (result.cross_attention, result.diagonality, result.dominance)
                        if probe is not None)]
    if result.alignment is not None:
        header, rows = word_table(result)
        lines += ["", "gradient alignment (word times in seconds):", format_table(header, rows)]
    if result.errors is not None:
        lines.append(result.errors.summary())
    lines += [f"  note: {note}" for note in result.notes]
    lines += [f"  warning: {warning}" for warning in result.warnings]
    timing = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in result.seconds.items())
    if timing:
        lines.append(f"  time: {timing}")
    return "\n".join(lines)
