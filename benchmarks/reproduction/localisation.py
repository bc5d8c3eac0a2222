"""Where did the induced reversals turn? The reversal report of each induced run's last checkpoint
on the shipped utterance and on the reproduction's dev batch, at 16 and 48 probed frames and 1, 2
and 4 projections; the block must not depend on any of them.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.reproduction.localisation \\
        --json docs/reproduction/localisation.json --markdown docs/reproduction/localisation.md

A run's checkpoint comes from ``checkpoints/<name>`` when it is kept there, else from
``runs/<name>`` (retrain it with ``python -m benchmarks.reproduction.train <name>``). The dev batch
is the first two dev utterances of the run's corpus (the probe of ``evaluate.py``; spoken again
from the corpus plan where the corpus is not built); the shipped
utterance is read as ``attnprobe report`` reads it. The script uses only what every version of
:func:`attnprobe.reversal_report` has, so the same script run against an earlier checkout of the
library (``--label before``) gives the localisation before the current rule.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attnprobe.audio import SHIPPED_UTTERANCE, read_audio
from attnprobe.batch import SpeechBatch
from attnprobe.loading import load_model
from attnprobe.probes import reversal_report
from benchmarks.corpus.training_set import INDEX_NAME, TrainingSplit, first_utterances

from .data import collate, fixed_examples, load_split
from .train import load_checkpoint

INDUCED_RUNS = ("induced-reversal-seed0", "induced-reversal-seed1", "induced-aux-ctc-seed0",
                "induced-aux-ctc-seed1", "aux-ctc-seed0")
"""The four induced reversals, and the shipped unreversed checkpoint as a control."""
SHIPPED_TEXT = "my brother carried a heavy basket across the bridge"
DEV_EXAMPLES = 2
FRAMES = (16, 48)
PROJECTIONS = (1, 2, 4)


def run_folder(name: str) -> Path:
    for parent in ("checkpoints", "runs"):
        if (Path(parent) / name / "config.json").exists():
            return Path(parent) / name
    raise FileNotFoundError(f"{name}: neither checkpoints/{name} nor runs/{name} holds it; "
                            f"train it with python -m benchmarks.reproduction.train {name}")


def inputs(folder: Path) -> dict[str, tuple[torch.nn.Module, SpeechBatch]]:
    """``{"shipped utterance": ..., "dev batch": ...}``: the model and the batch of each."""
    loaded = load_model(str(folder))
    audio = read_audio(SHIPPED_UTTERANCE).at_rate(loaded.sample_rate)
    shipped = loaded.batch(audio.samples, loaded.transcript(SHIPPED_TEXT))
    checkpoint = last_checkpoint(folder)
    model, _ = load_checkpoint(checkpoint)
    dev = collate(fixed_examples(dev_split(folder, checkpoint), DEV_EXAMPLES))
    return {"shipped utterance": (loaded.model, shipped), "dev batch": (model, dev)}


def last_checkpoint(folder: Path) -> Path:
    """The run's last ``step-*.pt`` (in the folder itself, or in its ``checkpoints/``)."""
    found = sorted(folder.glob("step-*.pt")) or sorted((folder / "checkpoints").glob("step-*.pt"))
    if not found:
        raise FileNotFoundError(f"{folder} holds no step-*.pt checkpoint")
    return found[-1]


def dev_split(folder: Path, checkpoint: Path) -> TrainingSplit:
    """The dev utterances the run's probe batch is made of, standardised as in training: from
    the built corpus when it is here, else the first :data:`DEV_EXAMPLES` spoken again from the
    recipe's corpus plan (the same audio; no 4200-utterance corpus needed)."""
    config = json.loads((folder / "config.json").read_text())
    corpus = config.get("corpus")
    if corpus and (Path(corpus) / INDEX_NAME).is_file():
        return load_split(corpus, "dev")
    spec = config["experiment"]["recipe"]["corpus"]
    saved = torch.load(checkpoint, weights_only=True)
    mean, std = saved.get("feature_mean"), saved.get("feature_std")
    return first_utterances("dev", DEV_EXAMPLES, spec["n_train"], spec["n_dev"], seed=spec["seed"],
                            mean=None if mean is None else torch.tensor(mean),
                            std=None if std is None else torch.tensor(std))


def summarise(report: Any) -> dict[str, Any]:
    """The numbers the tables show, from attributes every version of the report has."""
    maps = report.gradient_maps
    entry: dict[str, Any] = {
        "reversed_at": report.reversed_at,
        "decided_by": getattr(report, "decided_by", "frame mapping"),
        "frame_mapping_scores": [round(float(value), 3) for value in report.frame_mapping.scores],
        "frame_mapping_alone": report.frame_mapping.reversed_at,
        "gradient_map_scores": None if maps is None else
        [round(float(value), 3) for value in maps.scores],
        "cross_attention": None if report.cross_attention is None else
        round(float(report.cross_attention.overall), 3),
    }
    if report.diagonality is not None:
        entry["self_attention"] = [round(float(value), 3)
                                   for value in report.diagonality.layer_scores]
    return entry


def localise_run(name: str, log: Any = print) -> dict[str, Any]:
    folder = run_folder(name)
    result: dict[str, Any] = {"run": name, "folder": str(folder), "settings": []}
    for input_name, (model, batch) in inputs(folder).items():
        for frames in FRAMES:
            for projections in PROJECTIONS:
                started = time.perf_counter()
                report = reversal_report(model, batch, projections=projections, max_frames=frames)
                entry = {"input": input_name, "max_frames": frames, "projections": projections,
                         **summarise(report), "seconds": round(time.perf_counter() - started, 1)}
                result["settings"].append(entry)
                log(f"{name} | {input_name} | {frames} frames | {projections} projections: "
                    f"{report.verdict} ({entry['decided_by']})")
    blocks = {entry["reversed_at"] for entry in result["settings"]}
    result["same_block_everywhere"] = len(blocks) == 1
    result["blocks"] = sorted(blocks, key=lambda block: -1 if block is None else block)
    return result


def markdown(results: list[dict[str, Any]], label: str) -> str:
    """One row per run and input: the block at each setting, who decided, the probes' scores."""
    lines = [f"Localisation ({label}): `reversed_at` of `reversal_report` per run, input, probed "
             f"frames (16 / 48) and projections ({' / '.join(map(str, PROJECTIONS))}).", "",
             "| run | input | block at 16 frames | block at 48 frames | decided by | frame mapping "
             "alone (48 frames, 4 proj.) | frame mapping scores | gradient maps G_0, G_1.. | "
             "cross-attention |",
             "|---|---|---|---|---|---|---|---|---|"]
    for result in results:
        for input_name in ("shipped utterance", "dev batch"):
            rows = [entry for entry in result["settings"] if entry["input"] == input_name]
            if not rows:
                continue
            by_frames = {frames: " / ".join(_block(entry["reversed_at"]) for entry in rows
                                            if entry["max_frames"] == frames)
                         for frames in FRAMES}
            last = rows[-1]
            deciders = sorted({entry["decided_by"] for entry in rows})
            maps = last["gradient_map_scores"]
            lines.append(
                f"| {result['run']} | {input_name} | {by_frames[16]} | {by_frames[48]} | "
                f"{', '.join(deciders)} | {_block(last['frame_mapping_alone'])} | "
                f"{_scores(last['frame_mapping_scores'])} | "
                f"{'-' if maps is None else _scores(maps)} | "
                f"{'-' if last['cross_attention'] is None else format(last['cross_attention'], '+.2f')} |")
    same = [result["run"] for result in results if result["same_block_everywhere"]]
    lines += ["", f"Same block at every input and setting: {', '.join(same) or 'none'} "
                  f"({len(same)} of {len(results)} runs)."]
    return "\n".join(lines) + "\n"


def _block(block: int | None) -> str:
    return "none" if block is None else str(block)


def _scores(values: list[float]) -> str:
    return " ".join(f"{value:+.2f}" for value in np.asarray(values, dtype=float))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", default=list(INDUCED_RUNS))
    parser.add_argument("--json", type=Path, help="write every setting's numbers here")
    parser.add_argument("--markdown", type=Path, help="write the table here")
    parser.add_argument("--label", default="the current rule",
                        help="what the library checkout is, for the table's title")
    parser.add_argument("--update", action="store_true",
                        help="keep the runs of an existing --json that are not given here "
                             "(localise runs as they finish training)")
    arguments = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = []
    if arguments.update and arguments.json and arguments.json.exists():
        results = [kept for kept in json.loads(arguments.json.read_text())["runs"]
                   if kept["run"] not in arguments.runs]
    for name in arguments.runs:
        try:
            results.append(localise_run(name, log=lambda line: print(line, flush=True)))
        except FileNotFoundError as error:
            print(error)
    order = {name: index for index, name in enumerate(INDUCED_RUNS)}
    results.sort(key=lambda result: order.get(result["run"], len(order)))
    table = markdown(results, arguments.label)
    print(table)
    if arguments.json:
        arguments.json.parent.mkdir(parents=True, exist_ok=True)
        arguments.json.write_text(json.dumps({"label": arguments.label, "runs": results},
                                             indent=1))
    if arguments.markdown:
        arguments.markdown.parent.mkdir(parents=True, exist_ok=True)
        arguments.markdown.write_text(table)


if __name__ == "__main__":
    main()
