"""The job machinery on its own: shards, ids, where outputs may go, the job folder's claim, the
``--text`` argument, the merged summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnprobe.errors import InputError, JobError, OutputError
from attnprobe.jobs import (
    InputItem,
    InputPaths,
    JobFolder,
    balanced_shards,
    check_output_place,
    read_text_argument,
    safe_id,
    unique_ids,
)
from attnprobe.jobs.ids import RESERVED_IDS
from attnprobe.jobs.summary import summary_document

WEIGHTS = st.lists(st.floats(0.0, 1000.0, allow_nan=False), max_size=60)


@settings(max_examples=60, deadline=None)
@given(weights=WEIGHTS, ranks=st.integers(1, 9))
def test_shards_cover_every_item_once_and_are_balanced(weights: list[float], ranks: int) -> None:
    shards = balanced_shards(weights, ranks)
    assert len(shards) == ranks
    assert sorted(index for shard in shards for index in shard) == list(range(len(weights)))
    assert all(shard == sorted(shard) for shard in shards)
    loads = [sum(weights[index] for index in shard) for shard in shards]
    # Greedy largest-first: no shard exceeds the lightest by more than its own last item.
    assert max(loads) - min(loads) <= max(weights, default=0.0) + 1e-9
    assert shards == balanced_shards(list(weights), ranks), "the same list, the same shards"


@settings(max_examples=200, deadline=None)
@given(text=st.text())
def test_a_safe_id_is_one_visible_file_name(text: str) -> None:
    name = safe_id(text)
    assert name and "/" not in name and "\\" not in name and "\x00" not in name
    assert not name.startswith(".") and name not in (".", "..")
    assert len(name.encode("utf-8")) <= 120
    assert Path(name).name == name


@settings(max_examples=100, deadline=None)
@given(ids=st.lists(st.one_of(st.text(max_size=12), st.sampled_from(
    ["summary", "Summary", "report.html", "a", "A", "a-2", "../a"])), max_size=12))
def test_unique_ids_differ_ignoring_case_and_avoid_the_jobs_own_names(ids: list[str]) -> None:
    unique = unique_ids(ids)
    assert len(unique) == len(ids)
    folded = [name.casefold() for name in unique]
    assert len(set(folded)) == len(folded)
    assert not set(folded) & {name.casefold() for name in RESERVED_IDS}
    assert unique == unique_ids(list(ids))


def test_outputs_never_land_on_inputs(tmp_path: Path) -> None:
    folder = tmp_path / "corpus"
    folder.mkdir()
    audio = folder / "a.wav"
    audio.write_bytes(b"")
    inputs = InputPaths([audio], [folder])
    for out, kind in ((audio, "file"), (folder, "folder"), (tmp_path / "corpus" / ".." / "corpus",
                                                           "folder")):
        with pytest.raises(OutputError):
            check_output_place(out, kind, inputs)
    # A folder above the inputs may hold outputs, but no output may replace the inputs' folder.
    check_output_place(tmp_path, "folder", inputs, ["b.json"])
    with pytest.raises(OutputError, match="corpus"):
        check_output_place(tmp_path, "folder", inputs, ["corpus"])
    (folder / "inner").mkdir()
    (folder / "inner" / "b.wav").write_bytes(b"")
    nested = InputPaths([folder / "inner" / "b.wav"])
    with pytest.raises(OutputError, match="holds inputs"):
        check_output_place(tmp_path, "folder", nested, ["corpus"])
    link = tmp_path / "link.wav"
    link.symlink_to(audio)
    with pytest.raises(OutputError):
        check_output_place(link, "file", inputs)


def test_a_job_folder_belongs_to_one_job(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert JobFolder(out).claim({"command": "align", "model": "a"}, overwrite=False) is False
    assert JobFolder(out).claim({"command": "align", "model": "a"}, overwrite=False) is True
    with pytest.raises(JobError, match="model 'a' -> 'b'"):
        JobFolder(out).claim({"command": "align", "model": "b"}, overwrite=False)
    assert JobFolder(out).claim({"command": "align", "model": "b"}, overwrite=True) is False
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(JobError, match="notes.txt"):
        JobFolder(foreign).claim({"command": "align"}, overwrite=False)


def test_text_that_looks_like_a_path_must_be_one(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "words.lab").write_text("my brother\n")
    assert read_text_argument("words.lab") == "my brother"
    assert read_text_argument("my brother") == "my brother"
    assert read_text_argument("hello") == "hello"
    for mistyped in ("transcrpt.txt", "notes/words", "./a.lab"):
        with pytest.raises(InputError, match="no such file"):
            read_text_argument(mistyped)
    with pytest.raises(InputError, match="UTF-8"):
        read_text_argument("caf\udce9")


def test_the_summary_pools_word_offsets_and_counts_verdicts() -> None:
    items = [InputItem(f"u{index}", Path(f"u{index}.wav")) for index in range(4)]
    records = [
        {"ok": True, "detail": "2 words", "error": None, "warnings": [],
         "facts": {"verdict": "not reversed", "offsets_ms": {"start": [10.0, -10.0],
                                                             "end": [0.0, 20.0]}}},
        {"ok": True, "detail": "1 word", "error": None, "warnings": ["no speech"],
         "facts": {"verdict": "not reversed", "offsets_ms": {"start": [30.0], "end": [30.0]}}},
        {"ok": False, "detail": None, "error": "cannot read", "warnings": [], "facts": {}},
        None,
    ]
    document = summary_document("align", {}, items, records)
    assert (document["succeeded"], document["failed"], document["unfinished"]) == (2, 1, 1)
    assert document["verdicts"] == {"not reversed": 2}
    assert document["timestamp_errors"]["num_words"] == 3
    # Word boundary errors 5, 15 and 30 ms pooled over words, not averaged per utterance.
    assert document["timestamp_errors"]["tse_boundaries_ms"] == pytest.approx(50 / 3)
    assert document["failures"] == [{"id": "u2", "audio": "u2.wav", "error": "cannot read"}]
    assert json.dumps(document)
