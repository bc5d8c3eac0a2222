"""``attnprobe report --checkpoints RUN_DIR``: every checkpoint of a training run through the
reversal report on one fixed probe set, and the reversal score of every encoder block against the
training step (the figure of the reproduction, ``docs/reproduction.md``, for anyone's run).

Checkpoints found in ``RUN_DIR`` (:func:`find_checkpoints`):

- attnprobe Conformer runs: ``step-XXXXXX.pt`` files in ``RUN_DIR/checkpoints/`` (the
  reproduction's run folders) or in ``RUN_DIR`` itself (``checkpoints/induced-reversal-seed0``);
- Hugging Face ``Trainer`` output: ``checkpoint-<step>/`` folders holding a model.

It is a job like any corpus (:func:`attnprobe.jobs.run_job`): one folder per checkpoint with its
``report.json``, sharded over ``torchrun``'s ranks (every checkpoint costs about the same), resumable;
the summary adds ``reversal_vs_step.png`` and ``report.html``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attnprobe.audio import check_audio_file
from attnprobe.errors import InputError
from attnprobe.jobs.engine import Inspection, ItemOutput, Job
from attnprobe.jobs.ids import unique_ids
from attnprobe.jobs.items import InputItem
from attnprobe.jobs.state import JobFolder
from attnprobe.jobs.summary import summary_document, summary_json
from attnprobe.jobs.validation import load_model_or_explain, model_window_seconds
from attnprobe.plotting import panels
from attnprobe.plotting.figure import new_figure, png_bytes
from attnprobe.probes.verdict import REVERSAL_THRESHOLD, reversal_verdict

from .html import PageFigure, PageTable, Section, render_page
from .utterance import ReportOptions, analyse

STEP_FILE = re.compile(r"step-(\d+)\.pt")
HUGGING_FACE_FOLDER = re.compile(r"checkpoint-(\d+)")
FIGURE = "reversal_vs_step.png"


@dataclass(frozen=True)
class CheckpointItem:
    """One checkpoint of a run: a file or a folder that ``--model`` would load.

    Attributes:
        id: a safe file name for its outputs (``step-001200``, ``checkpoint-500``).
        path: what :func:`attnprobe.loading.load_model` loads.
        step: the training step it was saved at.
    """

    id: str
    path: Path
    step: int

    @property
    def source(self) -> Path:
        return self.path


def find_checkpoints(run: Path) -> list[CheckpointItem]:
    """The checkpoints of the training run in ``run``, by step.

    Raises:
        InputError: ``run`` is not a folder, or holds no checkpoint attnprobe recognises.
    """
    if not run.is_dir():
        raise InputError(f"--checkpoints {run} is not a folder; pass the run folder that holds "
                         f"the checkpoints")
    found: list[tuple[int, Path]] = []
    for folder in (run / "checkpoints", run):
        if folder.is_dir():
            found += [(int(match.group(1)), path) for path in folder.iterdir()
                      if (match := STEP_FILE.fullmatch(path.name)) and path.is_file()]
    found += [(int(match.group(1)), path) for path in run.iterdir()
              if (match := HUGGING_FACE_FOLDER.fullmatch(path.name)) and path.is_dir()]
    if not found:
        raise InputError(f"{run} holds no checkpoints: expected step-XXXXXX.pt files (in it or in "
                         f"its checkpoints/ folder) or Hugging Face checkpoint-<step>/ folders")
    found.sort()
    ids = unique_ids(path.stem if path.is_file() else path.name for _, path in found)
    return [CheckpointItem(item_id, path, step)
            for item_id, (step, path) in zip(ids, found, strict=True)]


class CheckpointScanJob(Job):
    """The reversal report of every checkpoint on the same probe utterances.

    Args:
        run: the run folder (for the fingerprint and messages).
        probes: the probe utterances (``--audio``), each with its transcript or none.
        options: how thoroughly to probe (the alignment is off: only the verdict matters here).
    """

    command = "report --checkpoints"
    folder_per_item = True

    def __init__(self, run: Path, probes: Sequence[InputItem], options: ReportOptions) -> None:
        self.run = run
        self.probes = list(probes)
        self.options = options
        for probe in self.probes:
            if probe.problem is not None:
                raise InputError(probe.problem)
            check_audio_file(probe.audio)

    def fingerprint(self) -> dict[str, Any]:
        return {"command": self.command, "run": str(self.run),
                "probes": [f"{probe.id}={probe.audio}" for probe in self.probes],
                "options": repr(self.options)}

    def output_name(self, item_id: str) -> str:
        return item_id

    def summary_names(self) -> list[str]:
        return ["summary.json", "report.html", FIGURE]

    def inspect(self, item: CheckpointItem) -> Inspection:
        if not item.path.exists():
            raise InputError(f"checkpoint {item.path} disappeared; rerun the scan")
        window = model_window_seconds(str(item.path))
        for probe in self.probes:
            duration = check_audio_file(probe.audio).duration
            if window is not None and duration > window:
                raise InputError(f"probe {probe.audio} lasts {duration:.1f} s but this model "
                                 f"reads at most {window:g} s; choose shorter probe audio")
        return Inspection(1.0)

    def process(self, item: CheckpointItem) -> ItemOutput:
        loaded = load_model_or_explain(str(item.path))
        probes, scores, warnings = [], [], []
        for probe in self.probes:
            usable = probe if loaded.tokenizer is not None else InputItem(probe.id, probe.audio)
            result = analyse(loaded, usable, self.options)
            warnings += [f"{probe.id}: {warning}" for warning in result.warnings]
            report = result.report
            block_scores = None if report is None else [float(value) for value in
                                                        report.frame_mapping.scores]
            probes.append({"id": probe.id, "verdict": result.verdict,
                           "reversed_at": None if report is None else report.reversed_at,
                           "reversal_scores": block_scores,
                           "report_skipped": result.report_skipped})
            if block_scores is not None:
                scores.append(block_scores)
        if not scores:
            raise InputError(f"no probe gave {item.id} a reversal report "
                             f"({probes[0]['report_skipped']}); raise --memory-limit")
        mean = np.mean(np.asarray(scores, dtype=np.float64), axis=0)
        reversed_at = reversal_verdict(mean, range(len(mean)), REVERSAL_THRESHOLD)
        verdict = "not reversed" if reversed_at is None else f"reversed at block {reversed_at}"
        document = {"checkpoint": str(item.path), "step": item.step, "model": loaded.name,
                    "family": loaded.family, "verdict": verdict, "reversed_at": reversed_at,
                    "reversal_scores": [float(value) for value in mean], "probes": probes,
                    "warnings": warnings}
        facts = {"step": item.step, "verdict": verdict, "reversed_at": reversed_at,
                 "reversal_scores": document["reversal_scores"]}
        return ItemOutput({"report.json": (json.dumps(document, indent=1) + "\n").encode()},
                          verdict, facts, warnings)

    def merge(self, folder: JobFolder, items: Sequence[CheckpointItem],
              records: Sequence[dict[str, Any] | None]) -> dict[str, bytes]:
        document = summary_document(self.command, self.fingerprint(), items, records,
                                    source_key="checkpoint")
        files = {"summary.json": summary_json(document)}
        scored = [entry for entry in document["results"] if entry.get("reversal_scores")]
        blocks = max((len(entry["reversal_scores"]) for entry in scored), default=0)
        scored = [entry for entry in scored if len(entry["reversal_scores"]) == blocks]
        figures = []
        if scored:
            png = png_bytes(scores_figure(scored, str(self.run)))
            files[FIGURE] = png
            figures.append(PageFigure("Reversal score per block over training",
                                      "Frame-mapping reversal score of each encoder block at every "
                                      "checkpoint, averaged over the probe utterances: +1 keeps "
                                      "time order, -1 is reversed.", png))
        rows = [[entry["id"], str(entry.get("step", "")),
                 entry.get("verdict") or (entry["error"] or "not finished"),
                 " ".join(f"{value:+.2f}" for value in entry.get("reversal_scores") or [])]
                for entry in document["results"]]
        section = Section(f"{self.run}", _headline(scored), "unknown", figures=figures,
                          tables=[PageTable(["checkpoint", "step", "verdict", "scores per block"],
                                            rows, "Every checkpoint")])
        files["report.html"] = render_page(
            f"attnprobe checkpoint scan: {self.run.name}",
            [f"{document['files']} checkpoints of {self.run} on {len(self.probes)} probe "
             f"utterances: {document['succeeded']} scanned, {document['failed']} failed, "
             f"{document['unfinished']} not finished."], [section]).encode("utf-8")
        return files


def scores_figure(entries: Sequence[dict[str, Any]], title: str) -> Any:
    """Reversal score per block against the step, from the summary's results."""
    figure, (axes,) = new_figure(8.0, 4.0)
    panels.scores_over_training(axes, [int(entry["step"]) for entry in entries],
                                np.asarray([entry["reversal_scores"] for entry in entries]),
                                REVERSAL_THRESHOLD, title)
    return figure


def _headline(entries: Sequence[dict[str, Any]]) -> str:
    flips = [entry for entry in entries if entry.get("reversed_at") is not None]
    if not entries:
        return "No checkpoint scanned yet"
    if not flips:
        return f"No checkpoint reversed (steps {entries[0]['step']}-{entries[-1]['step']})"
    first = flips[0]
    return (f"First reversed at step {first['step']} (block {first['reversed_at']}); "
            f"{len(flips)} of {len(entries)} checkpoints reversed")
