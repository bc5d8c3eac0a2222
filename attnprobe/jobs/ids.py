"""Item ids that are safe file names: whatever a manifest or a file name says, an item's outputs
land inside ``--out`` under a name of its own.

- :func:`safe_id`: characters other than letters, digits, ``.``, ``-`` and ``_`` become ``_``;
  leading dots go (no hidden files, no ``..``); at most :data:`LONGEST_ID_BYTES` bytes of UTF-8.
- :func:`unique_ids`: ids that end up equal (ignoring case, for case-insensitive file systems) or
  equal to a name the job writes itself (``summary``, ``report``, ...) get ``-2``, ``-3``, ...
"""

from __future__ import annotations

import re
from collections.abc import Iterable

LONGEST_ID_BYTES = 120
"""File names allow 255 bytes; this leaves room for a suffix and a temporary prefix."""
RESERVED_IDS = ("summary", "report", "alignments", "summary.json", "report.html",
                "alignments.ctm", "figures", "checkpoints")
"""Names of a job's own outputs (and their stems): no item may be called that."""
_UNSAFE = re.compile(r"[^\w.-]+")


def safe_id(text: str) -> str:
    """``text`` as a file name with no path in it (never empty, never starting with a dot)."""
    cleaned = _UNSAFE.sub("_", text).lstrip(".")
    encoded = cleaned.encode("utf-8")[:LONGEST_ID_BYTES]
    cleaned = encoded.decode("utf-8", errors="ignore").rstrip(".")
    return cleaned or "item"


def unique_ids(ids: Iterable[str], reserved: Iterable[str] = RESERVED_IDS) -> list[str]:
    """Safe ids, unique among themselves and against ``reserved``, in the order given.

    Deterministic: the same ids in the same order always give the same result, so every rank of a
    distributed job names every item alike.
    """
    taken = {name.casefold() for name in reserved}
    unique = []
    for raw in ids:
        base = safe_id(raw)
        candidate, count = base, 1
        while candidate.casefold() in taken:
            count += 1
            candidate = f"{base}-{count}"
        taken.add(candidate.casefold())
        unique.append(candidate)
    return unique
