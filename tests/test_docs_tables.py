"""Tables pasted into the README and docs equal what their command or results file says today.

A pasted table is fenced by HTML comments that name its source::

    <!-- table from: benchmarks/results/monitor_overhead.md -->      (a results file's table)
    <!-- table from command: python -m benchmarks.reproduction.table --runs-dir ... -->
    | ... |
    <!-- end table -->

so a figure in the docs cannot drift from the measurement it cites.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"<!-- table from(?P<kind> command)?: (?P<source>.+?) -->\n(?P<body>.*?)\n"
                   r"<!-- end table -->", re.DOTALL)


def fenced_tables() -> list[tuple[str, str, str, str]]:
    """``(document, kind, source, body)`` of every fenced table."""
    found = []
    for document in DOCUMENTS:
        for match in FENCE.finditer(document.read_text()):
            kind = "command" if match["kind"] else "file"
            found.append((str(document.relative_to(ROOT)), kind, match["source"].strip(),
                          match["body"]))
    return found


def markdown_tables(text: str) -> list[str]:
    """Each run of consecutive ``|`` lines, joined."""
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append("\n".join(current))
            current = []
    return tables


def reproduction_table(arguments: list[str]) -> str:
    from benchmarks.reproduction.table import load_runs, tables

    folders = [ROOT / value for flag, value in zip(arguments, arguments[1:])
               if flag == "--runs-dir"]
    return tables(load_runs(folders))


COMMANDS = {"benchmarks.reproduction.table": reproduction_table}


def test_the_docs_fence_their_pasted_tables() -> None:
    sources = {source for _, _, source, _ in fenced_tables()}
    assert "benchmarks/results/monitor_overhead.md" in sources
    assert any("benchmarks.reproduction.table" in source for source in sources)


@pytest.mark.parametrize("document, kind, source, body", fenced_tables(),
                         ids=lambda value: value.split("\n")[0][:50])
def test_a_pasted_table_equals_its_source(document: str, kind: str, source: str,
                                          body: str) -> None:
    if kind == "file":
        assert (ROOT / source).is_file(), f"{document} cites {source}, which does not exist"
        pasted = markdown_tables(body)
        assert pasted, f"{document}: the fence citing {source} holds no table"
        available = markdown_tables((ROOT / source).read_text())
        for table in pasted:
            assert table in available, (
                f"{document} shows a table that {source} does not hold; paste it again from "
                f"the file (or rerun the benchmark that writes it)")
        return
    words = shlex.split(source)
    assert words[:2] == ["python", "-m"] and words[2] in COMMANDS, (
        f"{document}: no checker for the command {source!r}; add one to COMMANDS")
    expected = COMMANDS[words[2]](words[3:])
    assert body.strip() == expected.strip(), (
        f"{document}: the table differs from what `{source}` prints now; paste its output")
