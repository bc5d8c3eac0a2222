"""One self-contained HTML page per run: no external files, figures embedded as base64 PNG.

A page is a title, a few lines about the run, then one :class:`Section` per model and utterance:
its verdict first, then tables, figures and the full text summary.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from html import escape

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.3em; margin-top: 2.2em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.05em; margin-bottom: 0.3em; }
.verdict { font-size: 1.25em; font-weight: 600; padding: 0.6em 0.9em; border-radius: 6px;
           margin: 0.8em 0; }
.verdict.reversed { background: #fde2e1; border-left: 6px solid #c0392b; }
.verdict.kept { background: #e3f4e5; border-left: 6px solid #2e8b57; }
.verdict.unknown { background: #f1f1f1; border-left: 6px solid #888; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f6f6f6; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.92em; }
pre { background: #f8f8f8; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
.note { color: #8a5300; }
"""


@dataclass(frozen=True)
class PageFigure:
    """A PNG with its heading and caption."""

    title: str
    caption: str
    png: bytes


@dataclass(frozen=True)
class PageTable:
    """A table: a header row and rows of cells (already formatted)."""

    header: list[str]
    rows: list[list[str]]
    title: str = ""


@dataclass
class Section:
    """One model on one utterance.

    Attributes:
        title: heading, e.g. ``"whisper-tiny.en on utterance"``.
        verdict: the one-line verdict shown first.
        verdict_kind: ``"reversed"``, ``"kept"`` or ``"unknown"`` (the verdict's colour).
        lines: short paragraphs under the verdict.
        evidence: what each probe says, as a list under the verdict.
        notes: caveats, shown highlighted.
        figures / tables: in display order (figures first).
        details: preformatted text (the probes' full summaries).
    """

    title: str
    verdict: str
    verdict_kind: str
    lines: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    figures: list[PageFigure] = field(default_factory=list)
    tables: list[PageTable] = field(default_factory=list)
    details: str = ""


def render_page(title: str, introduction: list[str], sections: list[Section],
                overview: PageTable | None = None) -> str:
    """The whole page as one string of HTML."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        *(f"<p>{escape(line)}</p>" for line in introduction),
    ]
    if overview is not None:
        parts.append(_table(overview))
    parts += [_section(section) for section in sections]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _section(section: Section) -> str:
    kind = section.verdict_kind if section.verdict_kind in ("reversed", "kept") else "unknown"
    parts = [f"<h2>{escape(section.title)}</h2>",
             f'<div class="verdict {kind}">{escape(section.verdict)}</div>']
    if section.evidence:
        parts.append("<ul>" + "".join(f"<li>{escape(line)}</li>" for line in section.evidence)
                     + "</ul>")
    parts += [f"<p>{escape(line)}</p>" for line in section.lines]
    parts += [f'<p class="note">{escape(note)}</p>' for note in section.notes]
    for figure in section.figures:
        encoded = base64.b64encode(figure.png).decode("ascii")
        parts.append(f"<figure><h3>{escape(figure.title)}</h3>"
                     f'<img alt="{escape(figure.title)}" src="data:image/png;base64,{encoded}">'
                     f"<figcaption>{escape(figure.caption)}</figcaption></figure>")
    parts += [_table(table) for table in section.tables]
    if section.details:
        parts.append(f"<details><summary>Full probe summaries</summary>"
                     f"<pre>{escape(section.details)}</pre></details>")
    return "\n".join(parts)


def _table(table: PageTable) -> str:
    head = "".join(f"<th>{escape(cell)}</th>" for cell in table.header)
    body = "".join("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>"
                   for row in table.rows)
    title = f"<h3>{escape(table.title)}</h3>" if table.title else ""
    return f"{title}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
