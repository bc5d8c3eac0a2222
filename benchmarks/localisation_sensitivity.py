"""How small a reversal do the probes see, and do they name the right block? A sweep over planted
reversals of growing strength (``attnprobe.testing.flips``):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/localisation_sensitivity.py \\
        --out benchmarks/results/localisation_sensitivity

- **branch scale**: one block's self-attention branch attends the anti-diagonal over 1 or 3
  frames (``spread``) and is ``scale`` times its input, the paper's mechanism;
- **reversed channels**: a fraction of one block output's channels reversed in time;
- **swapped frame pairs**: a share of the mirror pairs of frames of one block output swapped.

Host: a random attnprobe Conformer AED (random weights keep time order, every block), its decoder
pinned to read the encoder output in order (``pin_cross_attention``) so that the gradient maps
have an aligned decoder; a batch of two padded sequences with one label per encoder frame. Each
seed draws new weights, inputs and planted block. Per probe, at each strength: how often it says
"reversed" (detection) and how often it names the planted block; what a perfect probe says
(``PlantedReversal.answer``: the reversed part outweighs the rest; share of pairs >= 0.75) is in
the ``perfect`` column. Probes: the frame mapping's energy centre (what the rule uses), its
earlier argmax statistic ("peak"), the gradient maps, and the verdict of ``reversal_report`` with
the aligned decoder (without one, the verdict is the frame mapping's row). Then the stability of the
frame mapping: the largest change of a block's score, and of the named block, between probe
settings (probed frames, projections, their seed) on the clear plantings.

Writes ``<out>.json`` (every measurement), ``<out>.md`` (the tables) and ``<out>.png``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attnprobe import reversal_report
from attnprobe.batch import SpeechBatch
from attnprobe.models import ConformerAED, ConformerAEDConfig
from attnprobe.probes.verdict import REVERSAL_THRESHOLD, turning_block
from attnprobe.testing import (
    PlantedReversal,
    pin_cross_attention,
    plant_branch_reversal,
    plant_channel_reversal,
    plant_partial_reversal,
)

BLOCKS = 4
POOL = 2
SWEEPS: dict[str, tuple[float, ...]] = {
    "branch scale (spread 1)": (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 6.0),
    "branch scale (spread 3)": (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 6.0),
    "reversed channels": (0.1, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
    "swapped frame pairs": (0.1, 0.3, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9, 1.0),
}
PROBES = ("perfect", "frame mapping", "frame mapping (peak, before)", "gradient maps",
          "verdict, aligned decoder")
"""The frame mapping's row is also the verdict without an aligned decoder (the rule's step 1)."""
STABILITY_SETTINGS = ((8, 1, 0), (16, 2, 1), (16, 4, 2), (None, 2, 3))
"""(max_frames, projections, seed) of the stability check."""


def host(seed: int) -> ConformerAED:
    torch.manual_seed(seed)
    return ConformerAED(ConformerAEDConfig.tiny(
        vocab_size=16, blocks=BLOCKS, d_model=32, heads=2, ff_dim=64, conv_kernel=5, embed_dim=16,
        lstm_dim=32, attention_dim=32, readout_dim=32, frontend_channels=(4,),
        time_pools=(POOL,), n_mels=16)).eval()


def batch(seed: int) -> SpeechBatch:
    generator = torch.Generator().manual_seed(seed)
    frames = torch.randint(20, 33, (2,), generator=generator)
    features = torch.randn(2, int(frames.max()) * POOL, 16, generator=generator)
    labels = torch.randint(2, 16, (2, int(frames.max())), generator=generator)
    return SpeechBatch(features, frames * POOL, labels, frames)


def planting(sweep: str, level: float, block: int
             ) -> Callable[[Any], AbstractContextManager[PlantedReversal]]:
    if sweep.startswith("branch"):
        spread = 3 if "spread 3" in sweep else 1
        return lambda model: plant_branch_reversal(model, block, level, spread)
    if sweep == "reversed channels":
        return lambda model: plant_channel_reversal(model, block, level)
    return lambda model: plant_partial_reversal(model, {block: level})


def measure(sweep: str, level: float, seed: int, projections: int, max_frames: int
            ) -> dict[str, Any]:
    """Every probe's named block (``None``: not reversed) for one planting."""
    model, speech = host(seed), batch(seed)
    block = int(np.random.default_rng(seed).integers(0, BLOCKS))
    plant = planting(sweep, level, block)
    with pin_cross_attention(model, "diagonal"), plant(model) as planted:
        report = reversal_report(model, speech, projections=projections, max_frames=max_frames,
                                 seed=seed)
    mapping = report.frame_mapping
    maps = report.gradient_maps
    assert maps is not None
    layers, scores, input_score = maps.oriented_scores()
    named = {
        "perfect": planted.answer(),
        "frame mapping": mapping.reversed_at,
        "frame mapping (peak, before)": turning_block(mapping.peak_scores(), mapping.layers,
                                                      REVERSAL_THRESHOLD),
        "gradient maps": turning_block(scores, layers, REVERSAL_THRESHOLD, input_score),
        "verdict, aligned decoder": report.reversed_at,
    }
    measured = planted.ratios or planted.shares
    return {"sweep": sweep, "level": level, "seed": seed, "block": block, "named": named,
            "decided_by": report.decided_by,
            "measured": None if not measured else float(measured[block])}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per sweep and probe: detection and right-block rates per level; the smallest level each
    seed detects from on (median and range over seeds)."""
    summary: dict[str, Any] = {}
    for sweep, levels in SWEEPS.items():
        part = [row for row in rows if row["sweep"] == sweep]
        seeds = sorted({row["seed"] for row in part})
        per_probe: dict[str, Any] = {}
        for probe in PROBES:
            rates = []
            for level in levels:
                at = [row for row in part if row["level"] == level]
                detected = [row["named"][probe] is not None for row in at]
                right = [row["named"][probe] == row["block"] for row in at]
                rates.append({"level": level, "detected": float(np.mean(detected)),
                              "right_block": float(np.mean(right))})
            smallest = []
            for seed in seeds:
                found = [row["level"] for row in sorted(part, key=lambda row: row["level"])
                         if row["seed"] == seed and row["named"][probe] is not None]
                smallest.append(found[0] if found else None)
            detected_levels = [value for value in smallest if value is not None]
            above = [row for row in part if row["named"][probe] is not None]
            per_probe[probe] = {
                "rates": rates,
                "smallest_detected_per_seed": smallest,
                "smallest_detected_median": (statistics.median(detected_levels)
                                             if detected_levels else None),
                "smallest_detected_range": ([min(detected_levels), max(detected_levels)]
                                            if detected_levels else None),
                "right_block_when_detected": (float(np.mean([row["named"][probe] == row["block"]
                                                             for row in above]))
                                              if above else None),
            }
        measured = {level: [row["measured"] for row in part if row["level"] == level
                            and row["measured"] is not None] for level in levels}
        summary[sweep] = {"probes": per_probe, "measured_median": {
            str(level): (statistics.median(values) if values else None)
            for level, values in measured.items()}}
    return summary


def stability(rows: list[dict[str, Any]], seeds: int) -> dict[str, Any]:
    """The frame mapping at several probe settings on the clear plantings of every sweep."""
    clear_levels = {"branch scale (spread 1)": 4.0, "branch scale (spread 3)": 4.0,
                    "reversed channels": 1.0, "swapped frame pairs": 1.0}
    largest_change, moved, cases = 0.0, 0, 0
    for sweep, level in clear_levels.items():
        for seed in range(seeds):
            model, speech = host(seed), batch(seed)
            block = int(np.random.default_rng(seed).integers(0, BLOCKS))
            with planting(sweep, level, block)(model.encoder):
                reports = [reversal_report(model.encoder, speech, projections=projections,
                                           max_frames=frames, seed=probe_seed)
                           for frames, projections, probe_seed in STABILITY_SETTINGS]
            scores = np.array([report.frame_mapping.scores for report in reports])
            largest_change = max(largest_change, float(np.ptp(scores, axis=0).max()))
            moved += len({report.reversed_at for report in reports}) > 1
            cases += 1
    return {"settings": [list(setting) for setting in STABILITY_SETTINGS], "plantings": cases,
            "largest_score_change": largest_change, "plantings_whose_block_moved": moved}


def markdown(summary: dict[str, Any], stable: dict[str, Any], seeds: int) -> str:
    lines = [f"Probe sensitivity over {seeds} seeds (random 4-block Conformer AED, decoder pinned "
             f"to read in order, 2 padded sequences of 20-32 encoder frames); `python "
             f"benchmarks/localisation_sensitivity.py`.", ""]
    lines += ["| sweep | probe | smallest reversal detected: median (range over seeds) | "
              "right block when detected |", "|---|---|---|---|"]
    for sweep, part in summary.items():
        for probe, values in part["probes"].items():
            median, spread = values["smallest_detected_median"], values["smallest_detected_range"]
            found = "never" if median is None else f"{median:g} ({spread[0]:g}-{spread[1]:g})"
            if median is not None and None in values["smallest_detected_per_seed"]:
                found += f", not at all in {values['smallest_detected_per_seed'].count(None)} seeds"
            right = values["right_block_when_detected"]
            lines.append(f"| {sweep} | {probe} | {found} | "
                         f"{'-' if right is None else f'{100 * right:.0f}%'} |")
    lines += ["", "Detection rate per strength (share of seeds that say reversed; right block in "
                  "brackets):", ""]
    for sweep, part in summary.items():
        levels = [rate["level"] for rate in part["probes"]["perfect"]["rates"]]
        lines += [f"**{sweep}**" + ("" if not any(part["measured_median"].values()) else
                                   " (measured " + ("branch / residual ratio" if "branch" in sweep
                                                    else "energy share") + ": " + ", ".join(
                                       f"{level:g}: {value:.2f}" for level, value in
                                       zip(levels, part["measured_median"].values())
                                       if value is not None) + ")"), "",
                  "| probe | " + " | ".join(f"{level:g}" for level in levels) + " |",
                  "|---|" + "---|" * len(levels)]
        for probe, values in part["probes"].items():
            cells = [f"{rate['detected']:.1f} ({rate['right_block']:.1f})"
                     for rate in values["rates"]]
            lines.append(f"| {probe} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [f"Stability of the frame mapping on {stable['plantings']} clear plantings at "
              f"(max_frames, projections, seed) = {stable['settings']}: largest change of a "
              f"block's score {stable['largest_score_change']:.2f}; plantings whose named block "
              f"moved: {stable['plantings_whose_block_moved']}."]
    return "\n".join(lines) + "\n"


def figure(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweeps = list(summary)
    fig, axes = plt.subplots(1, len(sweeps), figsize=(4.2 * len(sweeps), 3.6), sharey=True)
    styles = {"perfect": ("black", "--"), "frame mapping": ("tab:blue", "-"),
              "frame mapping (peak, before)": ("tab:blue", ":"), "gradient maps": ("tab:red", "-"),
              "verdict, aligned decoder": ("tab:purple", "-.")}
    for axes_, sweep in zip(axes, sweeps):
        for probe, values in summary[sweep]["probes"].items():
            levels = [rate["level"] for rate in values["rates"]]
            right = [rate["right_block"] for rate in values["rates"]]
            color, style = styles[probe]
            axes_.plot(levels, right, linestyle=style, color=color, marker="o", markersize=3,
                       label=probe)
        axes_.set(title=sweep, xlabel="strength", ylim=(-0.05, 1.05))
    axes[0].set_ylabel("share of seeds naming the planted block")
    axes[-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--projections", type=int, default=2)
    parser.add_argument("--max-frames", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/localisation_sensitivity"))
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    rows = [measure(sweep, level, seed, arguments.projections, arguments.max_frames)
            for sweep, levels in SWEEPS.items() for level in levels
            for seed in range(arguments.seeds)]
    summary = summarise(rows)
    stable = stability(rows, arguments.seeds)
    table = markdown(summary, stable, arguments.seeds)
    print(table)
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.with_suffix(".json").write_text(json.dumps(
        {"seeds": arguments.seeds, "projections": arguments.projections,
         "max_frames": arguments.max_frames, "rows": rows, "summary": summary,
         "stability": stable, "seconds": time.perf_counter() - started}, indent=1))
    arguments.out.with_suffix(".md").write_text(table)
    figure(summary, arguments.out.with_suffix(".png"))
    print(f"wrote {arguments.out}.json, .md, .png in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
