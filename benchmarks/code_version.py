"""A hash of the library code that computes a cached result, for cache keys: a rerun after a change
to that code recomputes instead of silently reusing what the old code stored."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
SCORING_CODE = ("attnprobe/alignment", "attnprobe/loading", "attnprobe/vjp.py",
                "attnprobe/batch.py", "attnprobe/features.py", "attnprobe/labels.py",
                "attnprobe/trace.py", "adapters")
"""What gradient scores and the cross-attention baseline depend on (repository-relative)."""


@cache
def code_version(parts: tuple[str, ...] = SCORING_CODE) -> str:
    """Sixteen hex digits over the paths and bytes of every ``.py`` file under ``parts``."""
    digest = hashlib.sha1()
    for part in parts:
        path = REPOSITORY / part
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(file.relative_to(REPOSITORY).as_posix().encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]
