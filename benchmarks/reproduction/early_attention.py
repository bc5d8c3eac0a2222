"""Where the decoder's cross-attention looks early in training:
``python -m benchmarks.reproduction.early_attention [names...] --steps 100 200 300``.

The paper explains the flip by a decoder that, at the start of training, attends mostly to the
first frames, which pushes the encoder's self-attention to gather every informative frame there.
This prints, for freshly initialised models (step 0, one per seed) and for the first checkpoints of
finished runs, the mean attended position of each label (0 = first encoder frame, 1 = last) on the
first ``--examples`` dev utterances, averaged over the first quarter of the labels, the last
quarter and all of them. A decoder that reads the first frames shows values near 0 in every
column; one that reads the whole utterance evenly, 0.5 everywhere; a forward alignment, a small
first-quarter and a large last-quarter value.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import torch

from attnprobe.models import ConformerAED, ConformerAEDConfig

from .data import Example, collate, fixed_examples, load_split
from .experiments import BASE_MODEL
from .train import load_checkpoint


def attended_positions(model: ConformerAED, examples: Sequence[Example]) -> tuple[float, float, float]:
    """Mean attended position (0..1) over the first quarter of the label positions, the last
    quarter, and all of them, averaged over ``examples`` (teacher-forced, eval mode)."""
    batch = collate(examples)
    with torch.no_grad():
        output = model.eval()(batch.inputs, batch.input_lengths, batch.labels, batch.label_lengths)
    assert output.cross_attention is not None
    first, last, every = [], [], []
    for index in range(len(examples)):
        frames = int(output.encoder_lengths[index])
        positions = int(batch.label_lengths[index]) + 1  # the labels and end-of-sentence
        weights = output.cross_attention[index, :positions, :frames]
        mean_position = weights @ torch.linspace(0.0, 1.0, frames)  # (positions,)
        quarter = max(1, positions // 4)
        first.append(float(mean_position[:quarter].mean()))
        last.append(float(mean_position[-quarter:].mean()))
        every.append(float(mean_position.mean()))
    return sum(first) / len(first), sum(last) / len(last), sum(every) / len(every)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=["baseline-seed0", "baseline-seed4", "deep-seed0",
                                                     "no-positions-seed0"])
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 200, 300])
    parser.add_argument("--fresh-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--examples", type=int, default=20)
    parser.add_argument("--runs-dir", default="runs")
    arguments = parser.parse_args(argv)
    torch.set_num_threads(1)
    runs_dir = Path(arguments.runs_dir)
    first_config = json.loads((runs_dir / arguments.names[0] / "config.json").read_text())
    dev = load_split(first_config["corpus"], "dev")
    examples = fixed_examples(dev, arguments.examples, 1)
    print("| model | step | first quarter of labels | last quarter | all labels |")
    print("|---|---|---|---|---|")

    def row(label: str, step: int, model: ConformerAED) -> str:
        cells = " | ".join(f"{value:.2f}" for value in attended_positions(model, examples))
        return f"| {label} | {step} | {cells} |"

    for seed in arguments.fresh_seeds:
        torch.manual_seed(seed)
        print(row(f"fresh, seed {seed}", 0, ConformerAED(ConformerAEDConfig.tiny(**BASE_MODEL))))
    for name in arguments.names:
        for step in arguments.steps:
            path = runs_dir / name / "checkpoints" / f"step-{step:06d}.pt"
            print(row(name, step, load_checkpoint(path)[0]) if path.exists()
                  else f"| {name} | {step} | no checkpoint | | |")


if __name__ == "__main__":
    main()
