"""What ``--audio`` names: one file, a folder of audio files, a list file, or a manifest.

- an audio file: its transcript from ``--text``, else from a sidecar ``<name>.json`` (the corpus
  format: ``{"text": ..., "words": [{"word", "start", "end"}, ...]}``, whose word times become the
  reference) or ``<name>.txt``;
- a folder: every audio file in it (sorted), each with its sidecars;
- a list file (``.txt``, ``.lst``, ``.list``, ``.scp``): one audio path per line, optionally a tab
  and its transcript; lines starting with ``#`` are comments;
- a manifest: ``.json`` (a list of entries, or ``{"utterances": [...]}`` as
  :mod:`benchmarks.corpus` writes it), ``.jsonl`` (one entry per line) or ``.tsv`` (a header row);
  an entry names its audio as ``audio``, ``wav``, ``path`` or ``audio_filepath`` and may give
  ``text`` (or ``transcript``), ``id`` and reference ``words``.

Relative paths are relative to the list or manifest file. A missing audio file is not an error
here: it fails on its own when processed, and the other files go on.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attnprobe.errors import InputError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au")
LIST_SUFFIXES = (".txt", ".lst", ".list", ".scp")
MANIFEST_SUFFIXES = (".json", ".jsonl", ".tsv")
AUDIO_KEYS = ("audio", "wav", "path", "audio_filepath")
TEXT_KEYS = ("text", "transcript")

ReferenceWords = tuple[tuple[str, float, float], ...]


@dataclass(frozen=True)
class InputItem:
    """One utterance to process.

    Attributes:
        id: a name unique within the run (file stem, or the manifest's id).
        audio: path of the audio file.
        text: its transcript, or ``None``.
        reference: reference word times ``(word, start_s, end_s)``, or ``None``.
    """

    id: str
    audio: Path
    text: str | None = None
    reference: ReferenceWords | None = None


def collect_inputs(audio: str, text: str | None = None) -> list[InputItem]:
    """The utterances ``--audio`` names, with ``--text`` applied to a single one.

    Raises:
        InputError: the path does not exist, names nothing usable, or ``--text`` was given for
            several files.
    """
    path = Path(audio).expanduser()
    if not path.exists():
        raise InputError(f"--audio {path} does not exist; pass an audio file, a folder, a list "
                         f"file or a manifest")
    suffix = path.suffix.lower()
    if path.is_dir():
        items = _folder(path)
    elif suffix in MANIFEST_SUFFIXES:
        items = _manifest(path)
    elif suffix in LIST_SUFFIXES:
        items = _list_file(path)
    else:
        items = [_with_sidecars(path.stem, path)]
    if text is not None:
        if len(items) != 1:
            raise InputError(f"--text gives one transcript but --audio {path} names {len(items)} "
                             f"files; put each file's text in a manifest or a <name>.txt sidecar")
        (item,) = items
        reference = item.reference if item.text is not None and _same_words(item.text, text) \
            else None
        items = [InputItem(item.id, item.audio, text, reference)]
    return _unique_ids(items)


def read_text_argument(value: str | None) -> str | None:
    """``--text``: the transcript itself, or the path of a ``.txt`` file holding it."""
    if value is None:
        return None
    candidate = Path(value).expanduser()
    if value.endswith(".txt") and candidate.is_file():
        return candidate.read_text(encoding="utf-8")
    return value


def _folder(folder: Path) -> list[InputItem]:
    files = sorted(path for path in folder.iterdir()
                   if path.is_file() and path.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise InputError(f"the folder {folder} holds no audio files ({', '.join(AUDIO_SUFFIXES)})")
    return [_with_sidecars(path.stem, path) for path in files]


def _with_sidecars(item_id: str, audio: Path) -> InputItem:
    described = audio.with_suffix(".json")
    if described.is_file():
        try:
            entry = json.loads(described.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise InputError(f"sidecar {described} is not valid JSON (line {error.lineno}); fix "
                             f"or remove it") from error
        if isinstance(entry, dict):
            return InputItem(item_id, audio, _text_of(entry), _reference_of(entry, described))
    written = audio.with_suffix(".txt")
    if written.is_file():
        return InputItem(item_id, audio, written.read_text(encoding="utf-8").strip())
    return InputItem(item_id, audio)


def _list_file(path: Path) -> list[InputItem]:
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        audio_text, _, transcript = line.partition("\t")
        audio = _resolve(path, audio_text.strip())
        if audio.suffix.lower() not in AUDIO_SUFFIXES:
            raise InputError(f"line {number} of {path} names {audio_text.strip()!r}, not an audio "
                             f"file; a list file holds one audio path per line (tab, then text)")
        item = _with_sidecars(audio.stem, audio)
        if transcript.strip():
            item = InputItem(item.id, audio, transcript.strip(), item.reference)
        items.append(item)
    if not items:
        raise InputError(f"the list file {path} names no audio files; write one path per line")
    return items


def _manifest(path: Path) -> list[InputItem]:
    entries = _manifest_entries(path)
    if not entries:
        raise InputError(f"the manifest {path} has no entries")
    items = []
    for number, entry in enumerate(entries, start=1):
        audio_value = next((entry[key] for key in AUDIO_KEYS if entry.get(key)), None)
        if audio_value is None:
            raise InputError(f"entry {number} of {path} names no audio file; give it one of the "
                             f"fields {', '.join(AUDIO_KEYS)}")
        audio = _resolve(path, str(audio_value))
        items.append(InputItem(str(entry.get("id") or audio.stem), audio, _text_of(entry),
                               _reference_of(entry, path)))
    return items


def _manifest_entries(path: Path) -> list[dict[str, Any]]:
    content = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix == ".tsv":
            return [dict(row) for row in csv.DictReader(content.splitlines(), delimiter="\t")]
        if suffix == ".jsonl":
            entries = [json.loads(line) for line in content.splitlines() if line.strip()]
        else:
            document = json.loads(content)
            entries = document.get("utterances", []) if isinstance(document, dict) else document
    except json.JSONDecodeError as error:
        raise InputError(f"the manifest {path} is not valid JSON (line {error.lineno}: "
                         f"{error.msg}); fix it or pass the audio folder instead") from error
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise InputError(f"the manifest {path} must hold a list of objects (one per utterance) "
                         f"or {{\"utterances\": [...]}}")
    return entries


def _text_of(entry: dict[str, Any]) -> str | None:
    text = next((entry[key] for key in TEXT_KEYS if key in entry), None)
    return None if text is None else str(text)


def _reference_of(entry: dict[str, Any], source: Path) -> ReferenceWords | None:
    words = entry.get("words")
    if not words:
        return None
    try:
        return tuple((str(word["word"]), float(word["start"]), float(word["end"]))
                     for word in words)
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(f"the reference words in {source} must be objects with word, start and "
                         f"end (seconds); found {words[0]!r}") from error


def _resolve(listing: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else listing.parent / path


def _same_words(first: str, second: str) -> bool:
    return first.lower().split() == second.lower().split()


def _unique_ids(items: list[InputItem]) -> list[InputItem]:
    seen: dict[str, int] = {}
    unique = []
    for item in items:
        count = seen.get(item.id, 0)
        seen[item.id] = count + 1
        unique.append(item if count == 0 else
                      InputItem(f"{item.id}-{count + 1}", item.audio, item.text, item.reference))
    return unique
