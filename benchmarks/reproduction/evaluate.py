"""Evaluate finished runs: ``python -m benchmarks.reproduction.evaluate [names...]``.

For every checkpoint of a run, :func:`attnprobe.reversal_report` on a fixed dev probe batch (the
verdict and block from the frame mapping, with gradient maps, cross-attention monotonicity,
self-attention diagonality and branch dominance as evidence). For the last checkpoint (every
checkpoint with ``--all-metrics``):

- the dev character error rate of greedy decoding;
- gradient-alignment TSE: :func:`attnprobe.gradient_alignment` on the 10 ms input
  features (the paper's blank -6), word times against the synthesiser's exact ones;
- cross-attention-alignment TSE: the decoder's attention weights through
  :func:`attnprobe.alignment.cross_attention_alignment` (DTW), against the same word times.

The paper's point, checked here: gradient alignment works on a flipped model (the gradient is
taken at the input), cross-attention alignment does not.

With ``--last-only`` only the last checkpoint is evaluated (about 6 of the 14 CPU minutes): the
run's ``monitor.jsonl`` already holds the reversal scores every 50 steps, and the table reads the
last checkpoint alone.

Results go to ``runs/<name>/evaluation.json``; checkpoints already evaluated are skipped, so the
command can be stopped and started again.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attnprobe.alignment import (
    AlignmentSettings,
    aggregate_timestamp_errors,
    cross_attention_alignment,
    gradient_alignment,
    timestamp_errors,
)
from attnprobe.models import ConformerAED
from attnprobe.probes import reversal_report

from .data import Example, collate, fixed_examples, load_split
from .experiments import Recipe
from .scoring import character_error_rate
from .train import SUMMARY_NAME, load_checkpoint

EVALUATION_NAME = "evaluation.json"
REPORT_EXAMPLES = 2
REPORT_PROJECTIONS = 2
ALIGNMENT_EXAMPLES = 50
ALIGNMENT_BATCH = 10


def report_summary(model: ConformerAED, probe: Sequence[Example]) -> dict[str, Any]:
    """The reversal report of ``model`` on ``probe``, reduced to the numbers the table plots."""
    report = reversal_report(model, collate(probe), projections=REPORT_PROJECTIONS)
    summary: dict[str, Any] = {
        "verdict": report.verdict,
        "reversed_at": report.reversed_at,
        "frame_mapping_scores": report.frame_mapping.scores.tolist(),
        "notes": report.notes,
    }
    if report.gradient_maps is not None:
        summary["gradient_maps_verdict"] = report.gradient_maps.verdict
        summary["gradient_maps_scores"] = report.gradient_maps.scores.tolist()
    if report.cross_attention is not None:
        summary["cross_attention_monotonicity"] = report.cross_attention.overall
    if report.diagonality is not None:
        summary["self_attention_diagonality"] = np.nanmean(report.diagonality.scores, axis=-1).tolist()
    if report.dominance is not None:
        summary["dominance_branches"] = list(report.dominance.branches)
        summary["dominance_ratio"] = report.dominance.ratio.tolist()
    return summary


def alignment_errors(model: ConformerAED, examples: Sequence[Example]) -> dict[str, Any]:
    """Word time-stamp errors of gradient and cross-attention alignment, pooled over ``examples``."""
    gradient, cross = [], []
    subsampling = model.config.time_downsampling
    for start in range(0, len(examples), ALIGNMENT_BATCH):
        chunk = examples[start : start + ALIGNMENT_BATCH]
        batch = collate(chunk)
        tokens = [list(example.text) for example in chunk]
        alignments = gradient_alignment(model, batch, tokens,
                                        settings=AlignmentSettings.paper("features"),
                                        word_style="characters")
        with torch.no_grad():
            output = model.eval()(batch.inputs, batch.input_lengths, batch.labels, batch.label_lengths)
        assert output.cross_attention is not None
        for index, (example, alignment) in enumerate(zip(chunk, alignments)):
            gradient.append(timestamp_errors(alignment.words, example.words))
            labels, frames = len(example.labels), int(output.encoder_lengths[index])
            attention = output.cross_attention[index, None, :labels, :frames]
            cross_alignment = cross_attention_alignment(
                attention, tokens[index], frame_shift_s=0.01, subsampling=subsampling,
                num_frames=frames, median_filter_width=1, word_style="characters")
            cross.append(timestamp_errors(cross_alignment.words, example.words))
    return {"gradient_alignment": aggregate_timestamp_errors(gradient).to_dict(),
            "cross_attention_alignment": aggregate_timestamp_errors(cross).to_dict(),
            "examples": len(examples)}


def evaluate_run(run_dir: Path, all_metrics: bool = False, log: Any = print,
                 dev_examples: Sequence[Example] | None = None, last_only: bool = False,
                 refresh_reports: bool = False) -> dict[str, Any]:
    """Evaluate every checkpoint of one finished run (the last one alone with ``last_only``);
    returns (and saves) ``evaluation.json``.

    ``dev_examples`` defaults to the dev split of the run's corpus, joined as in training.
    ``refresh_reports`` recomputes the reversal reports already saved (after a change to
    :func:`attnprobe.reversal_report`); the dev CER and TSE are kept.
    """
    if dev_examples is None:
        config = json.loads((run_dir / "config.json").read_text())
        recipe = Recipe.from_dict(config["experiment"]["recipe"])
        dev = load_split(config["corpus"], "dev")
        dev_examples = fixed_examples(dev, len(dev) // recipe.concatenate, recipe.concatenate)
    path = run_dir / EVALUATION_NAME
    evaluation = json.loads(path.read_text()) if path.exists() else {"checkpoints": {}}
    # A run folder keeps them under checkpoints/; a folder of checkpoints/ in the repository
    # keeps the last one next to its config.
    checkpoints = (sorted((run_dir / "checkpoints").glob("step-*.pt"))
                   or sorted(run_dir.glob("step-*.pt")))
    if not checkpoints:
        raise FileNotFoundError(f"{run_dir} holds no step-*.pt checkpoint (nor does its "
                                f"checkpoints/ folder)")
    for checkpoint in checkpoints[-1:] if last_only else checkpoints:
        model, step = load_checkpoint(checkpoint)
        key = str(step)
        entry = evaluation["checkpoints"].get(key, {})
        started = time.perf_counter()
        if "report" not in entry or refresh_reports:
            entry["report"] = report_summary(model, dev_examples[:REPORT_EXAMPLES])
        if (all_metrics or checkpoint == checkpoints[-1]) and "dev_character_error_rate" not in entry:
            entry["dev_character_error_rate"] = character_error_rate(model, dev_examples)
            entry["timestamp_errors"] = alignment_errors(model, dev_examples[:ALIGNMENT_EXAMPLES])
        entry.setdefault("seconds", time.perf_counter() - started)
        evaluation["checkpoints"][key] = entry
        path.write_text(json.dumps(evaluation, indent=1))
        log(f"{run_dir.name} step {step}: {entry['report']['verdict']}")
    return evaluation


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Reversal report, dev CER and TSE of finished runs.")
    parser.add_argument("names", nargs="*", help="run names (default: every finished run)")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--all-metrics", action="store_true",
                        help="dev CER and TSE on every checkpoint, not just the last")
    parser.add_argument("--last-only", action="store_true",
                        help="evaluate the last checkpoint alone (the monitor log has the rest)")
    parser.add_argument("--refresh-reports", action="store_true",
                        help="recompute saved reversal reports (after a change to the report)")
    arguments = parser.parse_args(argv)
    torch.set_num_threads(1)
    runs_dir = Path(arguments.runs_dir)
    names = arguments.names or sorted(path.parent.name for path in runs_dir.glob(f"*/{SUMMARY_NAME}"))
    for name in names:
        if not (runs_dir / name / SUMMARY_NAME).exists():
            print(f"{name}: not finished (no {SUMMARY_NAME}); train it first")
            continue
        evaluate_run(runs_dir / name, arguments.all_metrics, log=lambda line: print(line, flush=True),
                     last_only=arguments.last_only, refresh_reports=arguments.refresh_reports)


if __name__ == "__main__":
    main()
