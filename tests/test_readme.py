"""Every ```python block of the README runs as written, top to bottom, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_has_examples() -> None:
    assert len(python_blocks()) >= 2


def test_readme_examples_run(monkeypatch, tmp_path) -> None:
    from attnprobe.adapters import registry

    monkeypatch.chdir(tmp_path)
    adapters_before = list(registry.adapters)
    namespace: dict[str, object] = {}
    torch.manual_seed(0)
    try:
        for index, block in enumerate(python_blocks()):
            exec(compile(block, f"README.md python block {index}", "exec"), namespace)
    finally:
        registry.adapters[:] = adapters_before
