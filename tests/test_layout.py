"""The import graph of the library, read from the code: no file imports in a circle, and imports
only point down the layers (cli -> reporting / jobs -> probes / alignment -> trace -> adapters ->
core -> models). Function-level imports count; ``if TYPE_CHECKING`` imports do not."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Rank of each top-level part of the package: a module may import its own rank or lower ones.
RANKS = {
    "errors": 0, "lengths": 0, "taps": 0,
    "models": 1,
    "sites": 2, "records": 2, "capture": 2, "reducers": 2, "batch": 2,
    "model_state": 2, "vjp": 2, "audio": 2, "features": 2, "labels": 2, "speech_presence": 2,
    "trace_guard": 2,
    "adapters": 3,
    "trace": 4,
    "probes": 5, "alignment": 5, "plotting": 5, "loading": 5, "testing": 5,
    "monitor": 6, "integrations": 6, "jobs": 6,
    "reporting": 7,
    "cli": 8, "__main__": 8,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[0] == "adapters":
        parts = ["attnprobe", *parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def library_files() -> dict[str, Path]:
    files = {}
    for folder in ("attnprobe", "adapters"):
        for path in (REPO / folder).rglob("*.py"):
            files[module_name(path)] = path
    return files


def imported_modules(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Modules of the library ``name`` imports anywhere in its file."""
    tree = ast.parse(path.read_text())
    type_only = {id(node) for branch in ast.walk(tree) if isinstance(branch, ast.If)
                 and "TYPE_CHECKING" in ast.unparse(branch.test) for node in ast.walk(branch)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only or not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join(package + ([node.module] if node.module else []))
            # ``from package import module`` depends on that module; ``from module import name``
            # on the module.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        for target in targets:
            while target and target not in known and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in known and target != name:
                found.add(target)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    files = library_files()
    return {name: imported_modules(name, path, files) for name, path in files.items()}


def part(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_no_file_imports_in_a_circle(graph: dict[str, set[str]]) -> None:
    # A package's __init__ re-exports its modules; those modules importing a sibling through the
    # package would be a circle too, so __init__ files take part like any other.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycle = stack[stack.index(target):] + [target]
                pytest.fail(f"import circle: {' -> '.join(cycle)}")
            if target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_imports_point_down_the_layers(graph: dict[str, set[str]]) -> None:
    unranked = sorted({part(name) for name in graph} - set(RANKS) - {"__init__"})
    assert not unranked, f"give these parts of attnprobe a layer in RANKS: {unranked}"
    upward = [f"{name} -> {target}" for name, targets in graph.items() for target in targets
              if part(name) != "__init__" and part(target) != "__init__"
              and RANKS[part(target)] > RANKS[part(name)]]
    assert not upward, "imports against the layers:\n" + "\n".join(sorted(upward))


def test_the_library_never_imports_benchmarks_or_tests() -> None:
    for path in library_files().values():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith(("benchmarks", "tests")), path
            if isinstance(node, ast.Import):
                assert not any(alias.name.startswith(("benchmarks", "tests"))
                               for alias in node.names), path
