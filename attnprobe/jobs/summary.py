"""The merged summary of a job, built from the outcome records of every item (so rank 0 can write
it at the end of a distributed run, on interrupt, or after a rerun finished the rest).

``summary.json`` holds no wall-clock times: the same corpus gives the same file whether it ran in
one process or on many ranks. It has the counts, the failures with their one-line reasons, the
warnings, the verdict counts (reports) and the time-stamp error over the whole corpus where
reference word times exist: every word of every utterance pooled
(:func:`attnprobe.alignment.aggregate_timestamp_errors`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from attnprobe.alignment import TimestampErrors, aggregate_timestamp_errors

OFFSETS = "offsets_ms"
"""The fact holding an item's per-word ``{"start": [...], "end": [...]}`` offsets in ms."""


def offsets_fact(errors: TimestampErrors) -> dict[str, list[float]]:
    """An utterance's word-time offsets as a fact for :func:`summary_document`."""
    return {"start": [float(value) for value in errors.start_offsets_ms],
            "end": [float(value) for value in errors.end_offsets_ms]}


def summary_document(command: str, fingerprint: dict[str, Any], items: Sequence[Any],
                     records: Sequence[dict[str, Any] | None], source_key: str = "audio"
                     ) -> dict[str, Any]:
    """The summary of a job: ``records[i]`` is item ``i``'s outcome record or ``None``."""
    results = []
    verdicts: Counter[str] = Counter()
    pooled: list[TimestampErrors] = []
    for item, record in zip(items, records, strict=True):
        entry: dict[str, Any] = {"id": item.id, source_key: str(item.source)}
        if record is None:
            entry.update(ok=None, detail=None, error="not finished", warnings=[])
        else:
            facts = dict(record.get("facts") or {})
            offsets = facts.pop(OFFSETS, None)
            if offsets is not None:
                pooled.append(TimestampErrors(np.asarray(offsets["start"], dtype=np.float64),
                                              np.asarray(offsets["end"], dtype=np.float64)))
            if "verdict" in facts:
                verdicts[str(facts["verdict"])] += 1
            entry.update(ok=record["ok"], detail=record["detail"], error=record["error"],
                         warnings=record.get("warnings", []), **facts)
        results.append(entry)
    failed = [entry for entry in results if entry["ok"] is False]
    corpus_errors = aggregate_timestamp_errors(pooled).to_dict() if pooled else None
    return {
        "command": command,
        "job": fingerprint,
        "files": len(results),
        "succeeded": sum(entry["ok"] is True for entry in results),
        "failed": len(failed),
        "unfinished": sum(entry["ok"] is None for entry in results),
        "with_warnings": sum(bool(entry["warnings"]) for entry in results),
        "timestamp_errors": corpus_errors,
        "timestamp_errors_over": len(pooled),
        "verdicts": dict(sorted(verdicts.items())) if verdicts else None,
        "failures": [{"id": entry["id"], source_key: entry[source_key], "error": entry["error"]}
                     for entry in failed],
        "results": results,
    }


def summary_json(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=1) + "\n").encode("utf-8")
