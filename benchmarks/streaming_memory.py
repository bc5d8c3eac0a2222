"""Peak memory of the attention and dominance probes, streamed versus stored, and a check that both
give the same results.

    .venv/bin/python benchmarks/streaming_memory.py                  # 12 blocks, 1500 frames
    .venv/bin/python benchmarks/streaming_memory.py --frames 600 --d-model 128

Model: attnprobe's Conformer AED with 12 blocks of width 64 (4 heads) and random weights, one
utterance of ``--frames`` encoder frames (x6 feature frames) with 50 labels, teacher-forced, no
gradients. Variants, each in a fresh process so that peaks do not mix:

- plain: the forward pass alone;
- stored: ``attnprobe.trace(model, ...)`` keeping every attention matrix and hidden state, then the
  full-tensor probes (cross-attention monotonicity, self-attention diagonality, branch dominance);
- streaming: the same probes as reducers, ``attnprobe.trace(..., reducers=[...], store=False)``.

Memory: growth of the process's peak resident set size (``ru_maxrss``) from just before the
forward pass to just after the results (torch's CPU tensors bypass ``tracemalloc``), plus the bytes
the trace's records hold; median and range over ``--rounds`` fresh processes per variant. The
streamed and stored results must be identical (the streaming probes are checked against an
independent computation in ``tests/test_probes_streaming.py``). Writes
``benchmarks/results/streaming_memory.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.results_file import RESULTS, spread, write_results  # noqa: E402

VARIANTS = ("plain", "stored", "streaming")
KINDS = ("block", "ffn", "self_attn", "conv", "cross_attn")
CAPTURE = {"input", "output", "attention"}
LABELS = 50


def measure(variant: str, frames: int, blocks: int, d_model: int) -> dict[str, Any]:
    """Run one variant in this process; returns peak growth, stored bytes and the results."""
    import attnprobe
    from attnprobe.models import ConformerAED, ConformerAEDConfig
    from attnprobe.probes import (
        BranchDominanceReducer,
        CrossAttentionMonotonicityReducer,
        SelfAttentionDiagonalityReducer,
        branch_dominance,
        cross_attention_monotonicity,
        self_attention_diagonality,
    )

    torch.manual_seed(0)
    config = ConformerAEDConfig.tiny(vocab_size=64, blocks=blocks, d_model=d_model, heads=4,
                                     ff_dim=4 * d_model)
    model = ConformerAED(config).eval()
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(1, frames * config.time_downsampling, config.n_mels,
                           generator=generator)
    lengths = torch.tensor([features.shape[1]])
    labels = torch.randint(2, config.vocab_size, (1, LABELS), generator=generator)
    label_lengths = torch.tensor([LABELS])
    with torch.no_grad():  # warm up kernels and allocator on a short input
        model(features[:, :60], torch.tensor([60]), labels[:, :3], torch.tensor([3]))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    stored_bytes = 0
    results: dict[str, Any] = {}
    with torch.no_grad():
        if variant == "plain":
            model(features, lengths, labels, label_lengths)
        elif variant == "stored":
            with attnprobe.trace(model, kind=KINDS, capture=CAPTURE, memory_budget=None) as trace:
                model(features, lengths, labels, label_lengths)
            stored_bytes = trace.stored_bytes
            results = {"cross_attention": cross_attention_monotonicity(trace).to_dict(),
                       "diagonality": self_attention_diagonality(trace).to_dict(),
                       "dominance": branch_dominance(trace).to_dict()}
        else:
            reducers = {"cross_attention": CrossAttentionMonotonicityReducer(),
                        "diagonality": SelfAttentionDiagonalityReducer(),
                        "dominance": BranchDominanceReducer()}
            with attnprobe.trace(model, kind=KINDS, capture=CAPTURE, store=False,
                                 reducers=list(reducers.values())) as trace:
                model(features, lengths, labels, label_lengths)
            stored_bytes = trace.stored_bytes
            results = {name: reducer.result().to_dict() for name, reducer in reducers.items()}
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"variant": variant, "peak_growth_mib": (after - before) / 1024,
            "stored_mib": stored_bytes / 2**20, "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1500, help="encoder frames (default 1500)")
    parser.add_argument("--blocks", type=int, default=12, help="Conformer blocks (default 12)")
    parser.add_argument("--d-model", type=int, default=64, help="model width (default 64)")
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per variant")
    parser.add_argument("--out", type=Path, default=RESULTS / "streaming_memory.md",
                        help="results file (markdown)")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.variant is not None:
        print(json.dumps(measure(arguments.variant, arguments.frames, arguments.blocks,
                                 arguments.d_model)))
        return

    measured: dict[str, list[dict[str, Any]]] = {variant: [] for variant in VARIANTS}
    for _ in range(arguments.rounds):
        for variant in VARIANTS:
            command = [sys.executable, __file__, "--variant", variant, "--frames",
                       str(arguments.frames), "--blocks", str(arguments.blocks), "--d-model",
                       str(arguments.d_model)]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            measured[variant].append(json.loads(output.strip().splitlines()[-1]))
    attention_mib = arguments.blocks * 4 * arguments.frames**2 * 4 / 2**20
    lines = [f"Conformer AED, {arguments.blocks} blocks x d_model {arguments.d_model}, 4 heads, "
             f"{arguments.frames} encoder frames, {LABELS} labels; self-attention probabilities "
             f"of all blocks: {attention_mib:.0f} MiB in fp32. Median (range) over "
             f"{arguments.rounds} fresh processes per variant.", "",
             "| variant | peak RSS growth (MiB) | records hold (MiB) |", "|---|---|---|"]
    for variant in VARIANTS:
        rows = measured[variant]
        lines.append(f"| {variant} | {spread([row['peak_growth_mib'] for row in rows])} | "
                     f"{rows[0]['stored_mib']:.0f} |")
    same = all(stored["results"] == streamed["results"]
               for stored, streamed in zip(measured["stored"], measured["streaming"]))
    lines += ["", f"Streamed results identical to stored: {same}"]
    print("\n".join(lines))
    if not same:
        raise SystemExit("streamed and stored results differ")
    write_results(arguments.out, "Streaming probes: peak memory", "\n".join(lines))


if __name__ == "__main__":
    main()
