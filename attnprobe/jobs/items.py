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

Relative paths are relative to the list or manifest file. Ids are made safe file names and unique
(:mod:`.ids`). In a folder, list or manifest, a missing audio file or an unreadable sidecar is not
an error here: the item carries the problem and fails on its own when processed, and the others
go on. A single audio file's problems are errors at once.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from attnprobe.errors import InputError

from .ids import unique_ids

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au")
LIST_SUFFIXES = (".txt", ".lst", ".list", ".scp")
MANIFEST_SUFFIXES = (".json", ".jsonl", ".tsv")
TEXT_FILE_SUFFIXES = (".txt", ".lab", ".trn", ".text", ".wrd", ".transcript")
AUDIO_KEYS = ("audio", "wav", "path", "audio_filepath")
TEXT_KEYS = ("text", "transcript")

ReferenceWords = tuple[tuple[str, float, float], ...]


@dataclass(frozen=True)
class InputItem:
    """One utterance to process.

    Attributes:
        id: a name unique within the run and safe as a file name (file stem, or the manifest's id).
        audio: path of the audio file.
        text: its transcript, or ``None``.
        reference: reference word times ``(word, start_s, end_s)``, or ``None``.
        problem: why this item cannot be processed (an unreadable sidecar, say), or ``None``.
    """

    id: str
    audio: Path
    text: str | None = None
    reference: ReferenceWords | None = None
    problem: str | None = None

    @property
    def source(self) -> Path:
        """What the item comes from (its audio file), for messages and summaries."""
        return self.audio


def names_collection(audio: str) -> bool:
    """Whether ``--audio`` names several utterances' worth of input (a folder, a list file or a
    manifest), whose outputs go to a folder, one per item, even when it holds one utterance."""
    path = Path(audio).expanduser()
    return path.is_dir() or path.suffix.lower() in MANIFEST_SUFFIXES + LIST_SUFFIXES


def collect_inputs(audio: str, text: str | None = None) -> list[InputItem]:
    """The utterances ``--audio`` names, with ``--text`` applied to a single one.

    Raises:
        InputError: the path does not exist, names nothing usable, or ``--text`` was given for
            several files; for a single audio file also an unreadable sidecar.
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
        items = [_with_sidecars(path.stem, path, ignore_problems=text is not None)]
        if items[0].problem is not None:
            raise InputError(items[0].problem)
    if text is not None:
        if len(items) != 1:
            raise InputError(f"--text gives one transcript but --audio {path} names {len(items)} "
                             f"files; put each file's text in a manifest or a <name>.txt sidecar")
        (item,) = items
        reference = item.reference if item.text is not None and _same_words(item.text, text) \
            else None
        items = [InputItem(item.id, item.audio, text, reference)]
    ids = unique_ids(item.id for item in items)
    return [replace(item, id=item_id) for item, item_id in zip(items, ids, strict=True)]


def sidecars(audio: Path) -> list[Path]:
    """The files next to ``audio`` that :func:`collect_inputs` reads as its transcript."""
    return [audio.with_suffix(suffix) for suffix in (".json", ".txt")]


def read_text_argument(value: str | None) -> str | None:
    """``--text``: the transcript itself, or the path of a text file holding it.

    A value without whitespace that names a folder (``a/b``) or ends like a text file
    (``.txt``, ``.lab``, ...) is a path: it must exist and hold UTF-8 text.

    Raises:
        InputError: the value is not valid text, or looks like a path that does not exist.
    """
    if value is None:
        return None
    _check_encodable(value, "--text")
    if not _looks_like_a_path(value):
        return value
    candidate = Path(value).expanduser()
    if candidate.is_file():
        return read_text_file(candidate, "--text").strip()
    raise InputError(f"--text {value} looks like a file name, but there is no such file; check "
                     f"the path, or give the spoken words themselves (a transcript with spaces is "
                     f"never taken for a path)")


def read_text_file(path: Path, role: str) -> str:
    """The UTF-8 text of ``path`` (a byte-order mark is allowed).

    Raises:
        InputError: the file cannot be read or is not UTF-8; the message names ``role``.
    """
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InputError(f"cannot read {role} {path} ({error.strerror or error}); check the "
                         f"file's permissions") from error
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(f"{role} {path} is not UTF-8 text (byte 0x{data[error.start]:02x} at "
                         f"offset {error.start}); save it as UTF-8, e.g. `iconv -f latin1 -t "
                         f"utf-8`") from error


def _looks_like_a_path(value: str) -> bool:
    stripped = value.strip()
    if not stripped or any(character.isspace() for character in stripped):
        return False
    separators = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    return (any(separator in stripped for separator in separators)
            or Path(stripped).suffix.lower() in TEXT_FILE_SUFFIXES)


def _check_encodable(text: str, role: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InputError(f"{role} is not valid UTF-8 text (undecodable bytes at character "
                         f"{error.start}); type the transcript again or pass a UTF-8 file"
                         ) from error


def _folder(folder: Path) -> list[InputItem]:
    files = sorted(path for path in folder.iterdir()
                   if path.is_file() and path.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise InputError(f"the folder {folder} holds no audio files ({', '.join(AUDIO_SUFFIXES)})")
    return [_with_sidecars(path.stem, path) for path in files]


def _with_sidecars(item_id: str, audio: Path, ignore_problems: bool = False) -> InputItem:
    """The item with its transcript and reference from ``<name>.json`` or ``<name>.txt``; a
    sidecar that cannot be used becomes the item's ``problem`` (unless ``ignore_problems``: the
    transcript comes from elsewhere)."""
    described, written = sidecars(audio)
    try:
        if described.is_file():
            entry = _json_sidecar(described)
            if isinstance(entry, dict):
                return InputItem(item_id, audio, _text_of(entry, described),
                                 _reference_of(entry, described))
        if written.is_file():
            return InputItem(item_id, audio, read_text_file(written, "transcript").strip())
    except InputError as error:
        if not ignore_problems:
            return InputItem(item_id, audio, problem=str(error))
    return InputItem(item_id, audio)


def _json_sidecar(path: Path) -> Any:
    try:
        return json.loads(read_text_file(path, "sidecar"))
    except json.JSONDecodeError as error:
        raise InputError(f"sidecar {path} is not valid JSON (line {error.lineno}); fix or remove "
                         f"it") from error


def _list_file(path: Path) -> list[InputItem]:
    items = []
    for number, line in enumerate(read_text_file(path, "list file").splitlines(), start=1):
        line = line.rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        audio_text, _, transcript = line.partition("\t")
        audio = _resolve(path, audio_text.strip())
        if audio.suffix.lower() not in AUDIO_SUFFIXES:
            raise InputError(f"line {number} of {path} names {audio_text.strip()!r}, not an audio "
                             f"file; a list file holds one audio path per line (tab, then text)")
        item = _with_sidecars(audio.stem, audio, ignore_problems=bool(transcript.strip()))
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
        item_id = str(entry.get("id") or audio.stem)
        try:
            items.append(InputItem(item_id, audio, _text_of(entry, path),
                                   _reference_of(entry, path)))
        except InputError as error:
            items.append(InputItem(item_id, audio, problem=f"entry {number}: {error}"))
    return items


def _manifest_entries(path: Path) -> list[dict[str, Any]]:
    content = read_text_file(path, "manifest")
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


def _text_of(entry: dict[str, Any], source: Path) -> str | None:
    text = next((entry[key] for key in TEXT_KEYS if key in entry), None)
    if text is None:
        return None
    text = str(text)
    _check_encodable(text, f"the transcript in {source}")
    return text


def _reference_of(entry: dict[str, Any], source: Path) -> ReferenceWords | None:
    words = entry.get("words")
    if not words:
        return None
    try:
        return tuple((str(word["word"]), float(word["start"]), float(word["end"]))
                     for word in words)
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(f"the reference words in {source} must be objects with word, start and "
                         f"end (seconds); found {str(words)[:80]}") from error


def _resolve(listing: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else listing.parent / path


def _same_words(first: str, second: str) -> bool:
    return first.lower().split() == second.lower().split()
