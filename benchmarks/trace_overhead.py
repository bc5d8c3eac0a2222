"""Forward-time and peak-memory cost of tracing, measured side by side in one run.

    .venv/bin/python benchmarks/trace_overhead.py            # both models, nnsight if installed
    .venv/bin/pip install nnsight                             # only for the comparison column

Models: a Whisper-shaped random model (tiny.en sizes, 30 s input = 3000 mel frames, 1500 encoder
frames, 32 decoder positions, the default sdpa attention) and attnprobe's Conformer AED at the
paper's size (12 x 512) on 30 s of input (500 encoder frames). Variants, each against the untraced
forward measured in the same run:

- outputs: ``attnprobe.trace(model, capture={"output"})`` (every site's output);
- attention: ``attnprobe.trace(model, kind=("self_attn", "cross_attn"), capture={"attention"})``;
- the same two captures through nnsight, when it is installed (attention needs eager there).

Time: per round, each variant's forward over the untraced forward of the same round (rounds
interleave the variants); the median ratio with the range over rounds, flagged "within noise" when
the rounds disagree on its direction. Memory: in a fresh process per variant, the growth of the
resident set from just before one forward pass to its peak during it (captures kept), Linux only.
Writes ``benchmarks/results/trace_overhead.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import attnprobe  # noqa: E402
from benchmarks.results_file import RESULTS, Ratio, write_results  # noqa: E402

VARIANTS = ("untraced", "outputs", "attention", "nnsight_outputs", "nnsight_attention")


def whisper_model(attention: str = "sdpa") -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    config = WhisperConfig(d_model=384, encoder_layers=4, decoder_layers=4,
                           encoder_attention_heads=6, decoder_attention_heads=6,
                           encoder_ffn_dim=1536, decoder_ffn_dim=1536, num_mel_bins=80,
                           vocab_size=51864, max_source_positions=1500)
    model = WhisperForConditionalGeneration._from_config(config, attn_implementation=attention)
    inputs = {"input_features": torch.randn(1, 80, 3000),
              "decoder_input_ids": torch.randint(0, 51864, (1, 32))}
    return model.eval(), inputs


def conformer_model(attention: str = "sdpa") -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    from attnprobe.models import ConformerAED, ConformerAEDConfig

    torch.manual_seed(0)
    model = ConformerAED(ConformerAEDConfig())
    inputs = {"features": torch.randn(1, 3000, 80), "feature_lengths": torch.tensor([3000]),
              "labels": torch.randint(2, 1000, (1, 32)), "label_lengths": torch.tensor([32])}
    return model.eval(), inputs


MODELS: dict[str, Callable[[str], tuple[torch.nn.Module, dict[str, torch.Tensor]]]] = {
    "whisper": whisper_model, "conformer": conformer_model}


def make_runner(name: str, variant: str) -> Callable[[], Any]:
    """A no-argument function that runs one forward pass of ``variant`` and keeps its captures."""
    needs_eager = variant == "nnsight_attention" and name == "whisper"
    model, inputs = MODELS[name]("eager" if needs_eager else "sdpa")
    if variant == "untraced":
        return lambda: model(**inputs)
    if variant in ("outputs", "attention"):
        options: dict[str, Any] = ({"capture": {"output"}} if variant == "outputs" else
                                   {"kind": ("self_attn", "cross_attn"), "capture": {"attention"}})

        def traced() -> Any:
            with attnprobe.trace(model, **options) as t:
                model(**inputs)
            return t

        return traced
    return nnsight_runner(model, inputs, variant)


def attention_paths(model: torch.nn.Module, paths: list[str]) -> tuple[list[str], bool]:
    """Where nnsight can read attention probabilities: the output of an eager Hugging Face
    attention module (element 1), or attnprobe's Conformer taps (switched on for nnsight)."""
    taps = [f"{path}.attention_tap" if hasattr(model.get_submodule(path), "attention_tap")
            else f"{path}.attention.attention_tap" for path in paths]
    if all(_has_module(model, tap) for tap in taps):
        for tap in taps:
            model.get_submodule(tap).active += 1
        return taps, False
    return paths, True


def _has_module(model: torch.nn.Module, path: str) -> bool:
    try:
        model.get_submodule(path)
    except AttributeError:
        return False
    return True


def nnsight_runner(model: torch.nn.Module, inputs: dict[str, torch.Tensor], variant: str
                   ) -> Callable[[], Any]:
    """The same capture through nnsight: save the module at every site attnprobe traces."""
    from nnsight import NNsight

    warnings.filterwarnings("ignore", module="nnsight")

    with attnprobe.trace(model, capture=set()) as probe:
        pass
    kinds = ("self_attn", "cross_attn") if variant == "nnsight_attention" else None
    paths = [site.module_path for site in probe.all_sites if kinds is None or site.kind in kinds]
    second_element = False
    if variant == "nnsight_attention":
        paths, second_element = attention_paths(model, paths)
    paths = execution_order(model, inputs, paths)
    wrapped = NNsight(model)

    def module_of(path: str) -> Any:
        target = wrapped
        for part in path.split("."):
            target = target[int(part)] if part.isdigit() else getattr(target, part)
        return target

    def run() -> list[Any]:
        saved = []
        with wrapped.trace(**inputs):
            for path in paths:
                output = module_of(path).output
                saved.append((output[1] if second_element else output).save())
        return saved

    return run


def execution_order(model: torch.nn.Module, inputs: dict[str, torch.Tensor], paths: list[str]
                    ) -> list[str]:
    """``paths`` sorted by when their modules finish (nnsight must be asked in that order)."""
    finished: list[str] = []
    handles = [model.get_submodule(path).register_forward_hook(
        lambda *_, path=path: finished.append(path)) for path in paths]
    with torch.no_grad():
        model(**inputs)
    for handle in handles:
        handle.remove()
    return list(dict.fromkeys(finished))


def time_variants(name: str, variants: list[str], rounds: int) -> dict[str, list[float]]:
    runners = {variant: make_runner(name, variant) for variant in variants}
    times: dict[str, list[float]] = {variant: [] for variant in variants}
    with torch.no_grad():
        for runner in runners.values():
            runner()  # warm-up: allocator, kernels, lazy imports
        for _ in range(rounds):
            for variant, runner in runners.items():
                start = time.perf_counter()
                runner()
                times[variant].append(time.perf_counter() - start)
    return times


def peak_memory(name: str, variant: str) -> float:
    """Peak RSS in MiB of a fresh process running one forward of ``variant``."""
    result = subprocess.run([sys.executable, __file__, "--memory-child", name, variant],
                            capture_output=True, text=True, check=True)
    return float(json.loads(result.stdout.strip().splitlines()[-1])["peak_mib"])


def memory_child(name: str, variant: str) -> None:
    runner = make_runner(name, variant)
    before = _status_kib("VmRSS")
    # Writing 5 to clear_refs resets the peak-RSS mark (Linux), so the peak below is the forward's
    # own, not that of imports or model construction.
    Path("/proc/self/clear_refs").write_text("5")
    with torch.no_grad():
        kept = runner()
    peak = _status_kib("VmHWM")
    del kept
    print(json.dumps({"peak_mib": (peak - before) / 1024}))


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def nnsight_available() -> bool:
    try:
        import nnsight  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="whisper,conformer")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS / "trace_overhead.md",
                        help="results file (markdown)")
    parser.add_argument("--memory-child", nargs=2, metavar=("MODEL", "VARIANT"))
    arguments = parser.parse_args()
    if arguments.memory_child:
        memory_child(*arguments.memory_child)
        return
    variants = list(VARIANTS if nnsight_available() else VARIANTS[:3])
    lines = [f"Time: traced / untraced forward, median of {arguments.rounds} interleaved rounds "
             f"(range over rounds; 'within noise' when the rounds disagree on the direction)." +
             ("" if nnsight_available() else " nnsight not installed (pip install nnsight)."),
             "",
             "| model | capture | attnprobe time | attnprobe peak memory | nnsight time | "
             "nnsight peak memory |",
             "|" + "---|" * 6]
    print("\n".join(lines), flush=True)
    for name in arguments.models.split(","):
        times = time_variants(name, variants, arguments.rounds)
        memory = {variant: peak_memory(name, variant) for variant in variants}
        base_memory = memory["untraced"]
        for variant, label in (("outputs", "(a) module outputs"),
                               ("attention", "(b) attention probabilities")):
            extra = memory[variant] - base_memory
            row = (f"| {name} | {label} | {Ratio.of(times[variant], times['untraced'])} | "
                   f"{memory[variant] / base_memory:.2f}x ({extra:+.0f} MiB) |")
            theirs = f"nnsight_{variant}"
            if theirs in times:
                row += (f" {Ratio.of(times[theirs], times['untraced'])} | "
                        f"{memory[theirs] / base_memory:.2f}x |")
            else:
                row += " - | - |"
            lines.append(row)
            print(row, flush=True)
        base = statistics.median(times["untraced"])
        lines.append(f"| {name} | untraced forward: {base * 1000:.0f} ms, peak "
                     f"{base_memory:.0f} MiB | | | | |")
        print(lines[-1], flush=True)
    write_results(arguments.out, "Trace overhead", "\n".join(lines))


if __name__ == "__main__":
    main()
