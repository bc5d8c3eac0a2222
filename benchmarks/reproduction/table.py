"""Results table and reversal-vs-step figure of the sweep: ``python -m benchmarks.reproduction.table``.

    python -m benchmarks.reproduction.table                       # markdown table on stdout
    python -m benchmarks.reproduction.table --figure docs/reproduction/reversal_vs_step.png \
        --blocks-figure docs/reproduction/reversal_per_block.png

Reads ``<runs>/<name>/summary.json`` (finished runs), ``monitor.jsonl`` (the FlipMonitor history)
and ``evaluation.json`` (from ``evaluate``, where present) from every ``--runs-dir``: by default
``runs/`` (this machine's runs, not committed), ``checkpoints/`` (the shipped runs) and
``docs/reproduction/runs/`` (the small per-run files committed for the runs whose checkpoints are
not kept), the first folder holding a run winning. Every number comes from those files, so a
fresh clone regenerates the table of the committed runs.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from .experiments import GROUPS
from .train import SUMMARY_NAME

MISSING = "–"


DEFAULT_RUN_FOLDERS = ("runs", "checkpoints", "docs/reproduction/runs")


def load_runs(runs_dirs: list[Path]) -> list[dict[str, Any]]:
    """One dict per finished run: ``summary``, ``monitor`` (records) and ``evaluation`` (or None);
    a run found in several folders is read from the first."""
    runs = []
    seen: set[str] = set()
    summaries = [path for runs_dir in runs_dirs
                 for path in sorted(runs_dir.glob(f"*/{SUMMARY_NAME}"))]
    for summary_path in summaries:
        folder = summary_path.parent
        if folder.name in seen:
            continue
        seen.add(folder.name)
        monitor_path = folder / "monitor.jsonl"
        evaluation_path = folder / "evaluation.json"
        runs.append({
            "summary": json.loads(summary_path.read_text()),
            "monitor": ([json.loads(line) for line in monitor_path.read_text().splitlines()]
                        if monitor_path.exists() else []),
            "evaluation": json.loads(evaluation_path.read_text()) if evaluation_path.exists() else None,
        })
    order = {group: index for index, group in enumerate(GROUPS)}
    return sorted(runs, key=lambda run: (order.get(run["summary"]["group"], len(order)),
                                         run["summary"]["seed"]))


def _last_evaluated(evaluation: dict[str, Any] | None) -> dict[str, Any]:
    if not evaluation or not evaluation["checkpoints"]:
        return {}
    return evaluation["checkpoints"][max(evaluation["checkpoints"], key=int)]


def _tse(entry: dict[str, Any], method: str) -> str:
    errors = entry.get("timestamp_errors", {}).get(method)
    if errors is None:
        return MISSING
    return f"{errors['tse_boundaries_ms']:.0f} / {errors['tse_position_ms']:.0f}"


def run_row(run: dict[str, Any]) -> list[str]:
    summary = run["summary"]
    flip = summary["first_flip"]
    final = summary["final_reversed_at"]
    last = _last_evaluated(run["evaluation"])
    report = last.get("report", {})
    monotonicity = summary["final_cross_attention_monotonicity"]
    return [
        summary["name"],
        "yes" if final is not None else "no",
        MISSING if flip is None else f"{flip['step']} (block {flip['block']})",
        " ".join(f"{score:+.2f}" for score in summary["final_reversal_scores"]),
        MISSING if monotonicity is None else f"{monotonicity:+.2f}",
        f"{summary['dev_character_error_rate']:.3f}",
        report.get("verdict", MISSING),
        _tse(last, "gradient_alignment"),
        _tse(last, "cross_attention_alignment"),
        f"{summary['wall_s'] / 60:.1f} / {summary['cpu_s'] / 60:.1f}",
        summary["status"],
    ]


HEADER = ["run", "reversed at end", "first flip: step (block)", "final reversal score per block",
          "cross-attention monotonicity", "dev CER", "evaluate.py verdict (last checkpoint)",
          "gradient TSE ms (boundary / centre)", "cross-attention TSE ms (boundary / centre)",
          "wall / CPU min", "status"]


def markdown(runs: list[dict[str, Any]]) -> str:
    """The per-run table, then flips per group."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(run_row(run)) + " |" for run in runs]
    by_group: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        by_group[run["summary"]["group"]].append(run)
    lines += ["", "| group | runs | reversed at end (monitor) | ever flipped (monitor) | seeds reversed "
              "(monitor) | reversed by evaluate.py (evaluated runs) |", "|---|---|---|---|---|---|"]
    for group, group_runs in by_group.items():
        summaries = [run["summary"] for run in group_runs]
        reversed_seeds = [str(item["seed"]) for item in summaries if item["final_reversed_at"] is not None]
        ever = sum(item["first_flip"] is not None for item in summaries)
        verdicts = [_last_evaluated(run["evaluation"]).get("report", {}).get("verdict")
                    for run in group_runs]
        evaluated = [verdict for verdict in verdicts if verdict is not None]
        by_report = sum(verdict.startswith("reversed") for verdict in evaluated)
        lines.append(f"| {group} | {len(summaries)} | {len(reversed_seeds)} | {ever} | "
                     f"{', '.join(reversed_seeds) or MISSING} | "
                     f"{f'{by_report} of {len(evaluated)}' if evaluated else MISSING} |")
    return "\n".join(lines)


def dominance_table(runs: list[dict[str, Any]], branch: str = "self_attn") -> str:
    """Branch dominance at the last evaluated checkpoint: ``branch``'s output norm over the norm of
    the residual it is added to, per encoder block (the paper saw the MHSA branch of the flipping
    block grow larger than its residual). Runs without an evaluation are left out."""
    rows = []
    for run in runs:
        report = _last_evaluated(run["evaluation"]).get("report", {})
        branches = report.get("dominance_branches")
        if not branches or branch not in branches:
            continue
        column = branches.index(branch)
        ratios = " ".join(f"{row[column]:.2f}" for row in report["dominance_ratio"])
        rows.append(f"| {run['summary']['name']} | {report['verdict']} | {ratios} |")
    if not rows:
        return ""
    return "\n".join([f"| run | evaluate.py verdict | {branch} / residual norm, per block |",
                      "|---|---|---|", *rows])


def figure(runs: list[dict[str, Any]], path: Path) -> None:
    """Reversal score of the last encoder block (solid) and cross-attention monotonicity (dotted)
    against the training step, one panel per group, one colour per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys(run["summary"]["group"] for run in runs))
    columns = min(3, len(groups))
    rows = -(-len(groups) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(max(6.0, 4.5 * columns), 3.2 * rows), squeeze=False,
                             sharex=True, sharey=True)
    for axis, group in zip(axes.flat, groups):
        for run in (run for run in runs if run["summary"]["group"] == group):
            steps = [record["step"] for record in run["monitor"]]
            colour = f"C{run['summary']['seed'] % 10}"
            axis.plot(steps, [record["reversal_scores"][-1] for record in run["monitor"]],
                      color=colour, label=f"seed {run['summary']['seed']}")
            monotonicity = [record["cross_attention_monotonicity"] for record in run["monitor"]]
            axis.plot(steps, [float("nan") if value is None else value for value in monotonicity],
                      color=colour, linestyle=":")
        axis.axhline(-0.5, color="grey", linewidth=0.8)
        axis.set_title(group)
        axis.set_ylim(-1.05, 1.05)
        axis.legend(fontsize=7, loc="lower left")
    for axis in axes.flat[len(groups):]:
        axis.set_visible(False)
    for axis in axes[-1]:
        axis.set_xlabel("training step")
    for axis in axes[:, 0]:
        axis.set_ylabel("score (-1 = reversed)")
    fig.suptitle("last-block reversal score (solid), cross-attention monotonicity (dotted)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def block_figure(runs: list[dict[str, Any]], path: Path) -> None:
    """Per-block reversal score (rows: encoder blocks, columns: monitor probes) of every run, on a
    red (-1, reversed) to blue (+1, kept) scale: shows a block that turns even if a later block
    turns back."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(5, len(runs))
    rows = -(-len(runs) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.8 * rows), squeeze=False,
                             gridspec_kw={"hspace": 0.6})
    image = None
    for axis, run in zip(axes.flat, runs):
        scores = [record["reversal_scores"] for record in run["monitor"]]
        steps = [record["step"] for record in run["monitor"]]
        image = axis.imshow(list(zip(*scores)), aspect="auto", origin="lower", cmap="RdBu",
                            vmin=-1, vmax=1, extent=(steps[0], steps[-1], -0.5, len(scores[0]) - 0.5))
        axis.set_title(run["summary"]["name"], fontsize=8)
        axis.set_xlabel("step", fontsize=7)
        axis.set_ylabel("block", fontsize=7)
        axis.tick_params(labelsize=6)
    for axis in axes.flat[len(runs):]:
        axis.set_visible(False)
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="reversal score")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def tables(runs: list[dict[str, Any]]) -> str:
    """The run table, the group table and the branch-dominance table, as printed (and as pasted
    into ``docs/reproduction.md``, which ``tests/test_docs_tables.py`` checks)."""
    dominance = dominance_table(runs)
    return markdown(runs) + ("\n\n" + dominance if dominance else "")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Results table and figure of the sweep.")
    parser.add_argument("--runs-dir", action="append", type=Path,
                        help=f"a folder of run folders (repeatable; default: "
                             f"{', '.join(DEFAULT_RUN_FOLDERS)})")
    parser.add_argument("--figure", type=Path, help="write the reversal-vs-step figure here (PNG)")
    parser.add_argument("--blocks-figure", type=Path,
                        help="write the per-block reversal score of every run here (PNG)")
    arguments = parser.parse_args(argv)
    folders = arguments.runs_dir or [Path(folder) for folder in DEFAULT_RUN_FOLDERS]
    runs = load_runs(folders)
    if not runs:
        raise SystemExit(f"no finished runs under {', '.join(map(str, folders))}; run the sweep "
                         f"first")
    print(tables(runs))
    if arguments.figure is not None:
        figure(runs, arguments.figure)
        print(f"\nfigure: {arguments.figure}")
    if arguments.blocks_figure is not None:
        block_figure(runs, arguments.blocks_figure)
        print(f"\nper-block figure: {arguments.blocks_figure}")


if __name__ == "__main__":
    main()
