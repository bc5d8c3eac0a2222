"""Writing the command line's outputs so that an error never leaves a partial file behind.

Results are collected in memory (:class:`PendingFiles`), checked, and only then written: every
file goes to a hidden temporary name in its folder first, and once all of them are on disk they
are renamed into place. If any write fails, the temporary files and any folder created for them
are removed again. :func:`replace_folder` writes a whole folder under a temporary name and renames
it into place, so a folder of outputs (one report) appears complete or not at all, even when the
process is killed. :func:`check_writable` answers early, before a model is loaded, whether the
output place can be written at all.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from attnprobe.errors import OutputError


def check_writable(path: Path, kind: str = "folder") -> None:
    """Raise :class:`OutputError` unless ``path`` (a folder, or a file when ``kind="file"``) can be
    created or written. Creates nothing.

    Args:
        path: where outputs will go.
        kind: ``"folder"`` (``--out DIR``) or ``"file"`` (``--out PATH``).
    """
    if kind == "folder" and path.exists() and not path.is_dir():
        raise OutputError(f"--out {path} is a file, not a folder; pass a folder path")
    if kind == "file" and path.is_dir():
        raise OutputError(f"--out {path} is a folder; pass a file path for one utterance's "
                          f"alignment")
    existing = path if kind == "folder" and path.is_dir() else path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"cannot create {path}: {existing} is a file, not a folder; choose "
                          f"another --out")
    try:
        probe = tempfile.TemporaryFile(dir=existing)
    except OSError as error:
        raise OutputError(f"cannot write to {existing} ({error.strerror or error}); choose "
                          f"another --out or fix the folder's permissions") from error
    probe.close()


class PendingFiles:
    """Files waiting to be written together: ``name -> bytes`` under one folder.

    Usage::

        pending = PendingFiles(Path("report"))
        pending.add("report.json", text)
        pending.add("figures/scores.png", png_bytes)
        pending.commit()          # all of them, or none
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.files: dict[str, bytes] = {}

    def add(self, name: str, content: bytes | str) -> None:
        """Queue ``content`` (text is written as UTF-8) as ``folder/name``."""
        if name in self.files:
            raise ValueError(f"{name} was queued twice; output names must be unique")
        self.files[name] = content.encode("utf-8") if isinstance(content, str) else content

    def commit(self) -> list[Path]:
        """Write every queued file; on failure remove what this call wrote and created.

        Returns:
            The written paths, in the order they were queued.

        Raises:
            OutputError: a folder could not be created or a file could not be written.
        """
        created = _missing_folders(self.folder, [self.folder / name for name in self.files])
        temporary: dict[Path, Path] = {}
        try:
            for folder in created:
                folder.mkdir()
            for name, content in self.files.items():
                target = self.folder / name
                handle, name_on_disk = tempfile.mkstemp(prefix=f".{target.name}.",
                                                        suffix=".partial", dir=target.parent)
                temporary[target] = Path(name_on_disk)
                with os.fdopen(handle, "wb") as stream:
                    stream.write(content)
                # mkstemp makes the file private; outputs get the permissions of any new file.
                os.chmod(name_on_disk, 0o666 & ~_umask())
            for target, written in temporary.items():
                os.replace(written, target)
        except OSError as error:
            for written in temporary.values():
                written.unlink(missing_ok=True)
            for folder in reversed(created):
                _remove_if_empty(folder)
            raise OutputError(f"cannot write {error.filename or self.folder} "
                              f"({error.strerror or error}); nothing was written, choose "
                              f"another --out") from error
        return list(temporary)


def write_file_atomically(path: Path, content: bytes | str) -> Path:
    """Write one file through :class:`PendingFiles`."""
    pending = PendingFiles(path.parent)
    pending.add(path.name, content)
    return pending.commit()[0]


def replace_folder(target: Path, files: dict[str, bytes], scratch: Path) -> Path:
    """Make ``target`` a folder holding exactly ``files`` (relative name -> content), atomically.

    The folder is written under ``scratch`` (which must be on the same file system, e.g. inside
    the output folder), then renamed to ``target``; an existing ``target`` is first renamed away
    into ``scratch`` and deleted after. At every moment ``target`` is either the old complete
    folder, absent, or the new complete folder.

    Raises:
        OutputError: a file could not be written (nothing is left at ``target`` but what was
            there before).
    """
    scratch.mkdir(parents=True, exist_ok=True)
    building = scratch / f"{target.name}.{uuid.uuid4().hex}.partial"
    try:
        for name, content in files.items():
            path = building / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        if target.exists() or target.is_symlink():
            retired = scratch / f"{target.name}.{uuid.uuid4().hex}.retired"
            os.replace(target, retired)
            os.replace(building, target)
            _remove(retired)
        else:
            os.replace(building, target)
    except OSError as error:
        _remove(building)
        raise OutputError(f"cannot write {error.filename or target} ({error.strerror or error}); "
                          f"choose another --out") from error
    return target


def replace_file(target: Path, content: bytes, scratch: Path) -> Path:
    """Write ``target`` through a temporary file in ``scratch`` (same file system) and a rename."""
    scratch.mkdir(parents=True, exist_ok=True)
    building = scratch / f"{target.name}.{uuid.uuid4().hex}.partial"
    try:
        building.write_bytes(content)
        os.chmod(building, 0o666 & ~_umask())
        os.replace(building, target)
    except OSError as error:
        building.unlink(missing_ok=True)
        raise OutputError(f"cannot write {error.filename or target} ({error.strerror or error}); "
                          f"choose another --out") from error
    return target


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def _missing_folders(root: Path, targets: list[Path]) -> list[Path]:
    """Folders to create, parents before children, for ``targets`` and ``root``."""
    missing: list[Path] = []
    for folder in [root, *(target.parent for target in targets)]:
        chain = []
        while not folder.exists() and folder not in missing:
            chain.append(folder)
            folder = folder.parent
        missing += reversed(chain)
    return missing


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):
        folder.rmdir()


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
