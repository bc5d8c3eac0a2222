"""Checks that run before any model is loaded: where outputs may go, and what a model can read.

- :class:`InputPaths` and :func:`check_output_place`: an output is never an input file, never the
  folder the inputs live in, and never a folder that holds an input (replacing it would delete
  them); paths are compared after resolving links and ``..``.
- :func:`model_window_seconds`: the longest audio a model reads in one piece, from the model
  specification alone (Whisper: 30 s), so that a too-long file is refused in milliseconds rather
  than after the model loaded;
- :func:`load_model_or_explain`: loading with one clear line for every failure.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from attnprobe.errors import AttnprobeError, ModelLoadError, OutputError
from attnprobe.loading import DEFAULT_MODEL, LoadedModel, load_model
from attnprobe.loading.load import PACKAGED_WHISPER, WHISPER_SECONDS

from .items import InputItem, sidecars


def _resolved(path: Path) -> Path:
    return Path(os.path.realpath(path.expanduser()))


class InputPaths:
    """Every file a run reads, and the folders that hold them.

    Args:
        files: input files (audio, sidecars, manifests, transcript files, model files).
        folders: input folders (``--audio DIR``, a model folder).
    """

    def __init__(self, files: Iterable[Path], folders: Iterable[Path] = ()) -> None:
        self.files = {_resolved(path) for path in files}
        self.folders = {_resolved(path) for path in folders}
        self.holding = {path.parent for path in self.files} | self.folders
        self.above = {parent for path in self.files | self.folders for parent in path.parents}

    @classmethod
    def of_run(cls, audio: str, items: Iterable[InputItem], text: str | None = None,
               model: str | None = None) -> InputPaths:
        """The inputs of an ``align`` or ``report`` run: ``--audio`` (file, folder, list or
        manifest), every item's audio and existing sidecars, a ``--text`` file, a local model."""
        files: list[Path] = []
        folders: list[Path] = []
        for argument in (audio, text, model):
            if argument is None:
                continue
            path = Path(argument).expanduser()
            if path.is_dir():
                folders.append(path)
            elif path.exists():
                files.append(path)
        for item in items:
            files.append(item.audio)
            files += [sidecar for sidecar in sidecars(item.audio) if sidecar.is_file()]
        return cls(files, folders)

    def conflict(self, output: Path, kind: str) -> str | None:
        """Why writing ``output`` (a ``"file"``, a ``"folder"`` written into, or a ``"replaced"``
        folder) would touch an input, or ``None``."""
        target = _resolved(output)
        if target in self.files:
            return f"{output} is one of the inputs and would be overwritten"
        if target in self.folders or (kind != "file" and target in self.holding):
            return (f"{output} is the folder the inputs are in; outputs there would replace or "
                    f"mix with them")
        if kind != "folder" and target in self.above:
            return f"{output} holds inputs, which writing it would replace"
        return None


def check_output_place(out: Path, kind: str, inputs: InputPaths,
                       names: Iterable[str] = ()) -> None:
    """Raise :class:`OutputError` when ``out`` (``kind`` ``"file"`` or ``"folder"``), or any of
    ``names`` inside the folder ``out`` (each a file or a folder that is replaced whole), would
    write over an input."""
    reason = inputs.conflict(out, kind)
    if reason is None and kind == "folder":
        reason = next((found for name in names
                       if (found := inputs.conflict(out / name, "replaced")) is not None), None)
    if reason is not None:
        raise OutputError(f"--out {reason}; choose another --out "
                          f"(e.g. a new folder next to the inputs)")


def model_window_seconds(spec: str | None) -> float | None:
    """The longest audio, in seconds, the model ``spec`` names reads in one piece (``None``: no
    limit known), found without loading it."""
    text = DEFAULT_MODEL if spec is None else str(spec).strip()
    if text == DEFAULT_MODEL or text in PACKAGED_WHISPER:
        return WHISPER_SECONDS
    path = Path(text).expanduser()
    if not path.is_dir():
        return None
    if (path / "model.bin").is_file():
        return WHISPER_SECONDS
    config = path / "config.json"
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return WHISPER_SECONDS if model_type == "whisper" else None


def load_model_or_explain(spec: str | None, language: str | None = None,
                          task: str | None = None) -> LoadedModel:
    """:func:`attnprobe.loading.load_model`, with every failure as one :class:`ModelLoadError`
    line: a damaged weights file (a truncated safetensors, say) raises whatever its reader raises,
    and the user needs to hear which files to replace, not that reader's traceback."""
    try:
        return load_model(spec, language=language, task=task)
    except (AttnprobeError, ImportError, KeyboardInterrupt, MemoryError):
        raise
    except Exception as error:  # noqa: BLE001 - readers of damaged files raise anything
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ModelLoadError(f"cannot load the model {spec or DEFAULT_MODEL} "
                             f"({type(error).__name__}: {reason[:200]}); its files are damaged or "
                             f"incomplete: download or save it again") from error
