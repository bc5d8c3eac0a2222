"""Speed of the gradient score matrix: one batched backward against a backward per label and captum.

For S labels on a T-frame log-mel input, prints side by side the time of

- ``batched``: attnprobe's score matrix as shipped (``attnprobe.alignment.scoring.gradient_scores``): one
  forward, then batched backward passes over chunks of labels whose size ``batched_vjp`` searches
  for speed within the memory budget;
- ``vmap``: the same with every chunk as large as the memory budget allows (the most labels per
  ``is_grads_batched`` backward);
- ``loop``: one forward, then one backward per label (the paper authors' method);
- ``captum``: captum's ``Saliency`` called once per label (a forward and a backward each);

the ratios, whether the three score matrices agree, and where the time goes: the FLOPs of the
forward and of one label's backward, this machine's measured matmul rate, and the time the FLOPs
alone need (no exact method can beat it, since every label's gradient costs a full backward).
``--profile`` adds the top operators of one per-label backward and of one batched chunk. The FLOP
count includes attention: torch's counter knows the fused attention kernels of CUDA but not the
CPU one (``_scaled_dot_product_flash_attention_for_cpu``), so its formulas are registered here.
Times are the median (range) over ``--repeats``; writes ``benchmarks/results/gradient_speed.md``
(``--out``).

Models: attnprobe's Conformer AED (mid-size: 6 blocks, d_model 256) and a randomly initialised
Whisper-tiny-shaped model through the Hugging Face adapter (skipped with a note when transformers
is missing). captum is optional (``pip install captum``); its column is skipped with a note when it
is not installed.

Run::

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/gradient_speed.py
    .venv/bin/python benchmarks/gradient_speed.py --labels 8 --frames 600 --models conformer
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import (
    FlopCounterMode,
    register_flop_formula,
    sdpa_backward_flop_count,
    sdpa_flop_count,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attnprobe.alignment.scoring import (  # noqa: E402
    LabelForward,
    gradient_scores,
    model_forward,
    score_matrix_loop,
)
from attnprobe.alignment.scoring.gradients import frame_norms
from attnprobe.alignment.scoring.label_batches import (
    DEFAULT_MEMORY_BUDGET,
    label_gradients,
    largest_chunk,
)
from attnprobe.batch import SpeechBatch
from benchmarks.results_file import RESULTS, Ratio, recorded_output, spread, write_results

TARGET_SPEEDUP = 4.0


@dataclass
class Timing:
    """Wall-clock and process-CPU seconds of every repeat, and the scores of the last run."""

    walls: list[float]
    cpus: list[float]
    scores: torch.Tensor

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)

    @property
    def cpu(self) -> float:
        return statistics.median(self.cpus)


@register_flop_formula(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu)
def _cpu_attention_flops(query_shape: tuple, key_shape: tuple, value_shape: tuple, *_: object,
                         out_shape: object = None, **__: object) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


@register_flop_formula(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward)
def _cpu_attention_backward_flops(grad_out_shape: tuple, query_shape: tuple, key_shape: tuple,
                                  value_shape: tuple, *_: object, out_shape: object = None,
                                  **__: object) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def timed(run: Callable[[], torch.Tensor], repeats: int) -> Timing:
    walls, cpus = [], []
    scores = torch.empty(0)
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        scores = run()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return Timing(walls, cpus, scores)


def conformer_case(frames: int, labels: int) -> tuple[nn.Module, SpeechBatch]:
    from attnprobe.models import ConformerAED, ConformerAEDConfig

    torch.manual_seed(0)
    config = ConformerAEDConfig.tiny(d_model=256, heads=4, ff_dim=1024, blocks=6, conv_kernel=31,
                                     frontend_channels=(32, 64), vocab_size=1000, embed_dim=256,
                                     lstm_dim=512, attention_dim=512, readout_dim=512)
    model = ConformerAED(config).eval()
    return model, random_batch(frames, labels, 80, low=2, high=config.vocab_size)


def whisper_case(frames: int, labels: int) -> tuple[nn.Module, SpeechBatch]:
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    import attnprobe.adapters.hf_whisper  # noqa: F401  (registers the adapter)

    torch.manual_seed(0)
    config = WhisperConfig(  # the shape of openai/whisper-tiny, random weights
        vocab_size=51865, num_mel_bins=80, d_model=384, encoder_layers=4, decoder_layers=4,
        encoder_attention_heads=6, decoder_attention_heads=6, encoder_ffn_dim=1536,
        decoder_ffn_dim=1536, max_source_positions=1500, max_target_positions=448,
        decoder_start_token_id=50257, pad_token_id=50256, bos_token_id=50257,
        eos_token_id=50256, attn_implementation="sdpa")
    model = WhisperForConditionalGeneration(config).eval()
    return model, random_batch(frames, labels, 80, low=0, high=50000)


def random_batch(frames: int, labels: int, features: int, low: int, high: int) -> SpeechBatch:
    generator = torch.Generator().manual_seed(0)
    return SpeechBatch(torch.randn(1, frames, features, generator=generator),
                       torch.tensor([frames]),
                       torch.randint(low, high, (1, labels), generator=generator),
                       torch.tensor([labels]))


def loop_scores(forward: LabelForward) -> torch.Tensor:
    result = forward()
    return score_matrix_loop(result.label_log_probs, result.target,
                             label_lengths=result.label_lengths,
                             frame_lengths=result.frame_lengths)


def captum_scores(model: nn.Module, batch: SpeechBatch) -> Callable[[], torch.Tensor]:
    from captum.attr import Saliency

    from attnprobe.adapters import resolve_adapter

    runner = resolve_adapter(model).runner
    saliency = Saliency(lambda inputs: runner.label_log_probs(batch.with_inputs(inputs)))

    def run() -> torch.Tensor:
        rows = []
        for label in range(int(batch.label_lengths[0])):
            gradient = saliency.attribute(batch.inputs, target=label, abs=False)
            rows.append(frame_norms(gradient[None], 2.0)[0])
        return torch.stack(rows, dim=1)

    return run


def matmul_rates() -> tuple[float, float]:
    """FLOP per wall second and per CPU second of a large float32 matmul with the current threads.

    The CPU-second rate is what one core does while it runs; on a machine that other jobs share it
    stays put where the wall-clock rate drops.
    """
    left, right = torch.randn(2048, 1024), torch.randn(1024, 1024)
    left @ right
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(10):
        left @ right
    flops = 10 * 2 * 2048 * 1024 * 1024
    return flops / (time.perf_counter() - wall), flops / (time.process_time() - cpu)


def flop_counts(forward: LabelForward) -> tuple[float, float]:
    """FLOPs of one teacher-forced forward and of one label's backward (matmuls and convs)."""
    with FlopCounterMode(display=False) as counter:
        result = forward()
    forward_flops = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        torch.autograd.grad(result.label_log_probs[:, 0].sum(), result.target)
    return float(forward_flops), float(counter.get_total_flops())


def profile_backwards(forward: LabelForward, chunk: int) -> None:
    from torch.profiler import ProfilerActivity, profile

    result = forward()
    torch.autograd.grad(result.label_log_probs[:, 0].sum(), result.target, retain_graph=True)
    for title, run in (
        ("one label's backward", lambda: torch.autograd.grad(
            result.label_log_probs[:, 1].sum(), result.target, retain_graph=True)),
        (f"one batched backward of {chunk} labels", lambda: label_gradients(
            result.label_log_probs[:, :chunk], result.target, chunk_size=chunk)),
    ):
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            run()
        print(f"\n  profile of {title}:")
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=8,
                                            max_name_column_width=44))


def run_case(name: str, model: nn.Module, batch: SpeechBatch, repeats: int, profile: bool,
             captum_note: str | None) -> None:
    forward = model_forward(model, batch, gradient_input="features")
    labels, frames = int(batch.label_lengths[0]), int(batch.input_lengths[0])
    print(f"\n== {name}: {labels} labels, {frames} input frames, "
          f"{torch.get_num_threads()} threads ==")
    # Warm up both backward paths on the real shapes, so that no column pays first-call costs.
    for size in (1, 2):
        probe = forward()
        label_gradients(probe.label_log_probs[:, :size], probe.target, chunk_size=size)
    largest = largest_chunk(probe.saved_bytes, probe.target, labels, DEFAULT_MEMORY_BUDGET)
    del probe
    results = {"batched": timed(lambda: gradient_scores(forward).scores, repeats),
               "vmap": timed(lambda: gradient_scores(forward, chunk_size=largest).scores, repeats),
               "loop": timed(lambda: loop_scores(forward), repeats)}
    if captum_note is None:
        results["captum"] = timed(captum_scores(model, batch), repeats)
    print(f"  median (range) over {repeats} repeats")
    print(f"  {'method':<8} {'wall s':>20} {'cpu s':>20} {'loop/x wall':>24}")
    for method, timing in results.items():
        print(f"  {method:<8} {spread(timing.walls):>20} {spread(timing.cpus):>20} "
              f"{'-' if method == 'loop' else str(Ratio.of(results['loop'].walls, timing.walls)):>24}")
    if captum_note is not None:
        print(f"  captum: skipped ({captum_note})")
    print(f"  labels per backward: vmap {largest}, the most the default "
          f"{DEFAULT_MEMORY_BUDGET / 2**30:g} GiB memory budget allows (batched searches up to it)")
    reference = results["loop"].scores
    for method, timing in results.items():
        if method == "loop":
            continue
        error = float((timing.scores - reference).abs().max() / reference.abs().max())
        print(f"  {method} vs loop: max relative difference {error:.1e} "
              f"({'equal' if error < 1e-3 else 'DIFFERENT'})")
    speedup = results["loop"].wall / results["batched"].wall
    print(f"  batched vs loop: {speedup:.2f}x, target {TARGET_SPEEDUP:g}x "
          f"{'reached' if speedup >= TARGET_SPEEDUP else 'NOT reached'}")
    forward_flops, backward_flops = flop_counts(forward)
    total = forward_flops + labels * backward_flops
    wall_rate, cpu_rate = matmul_rates()
    loop = results["loop"]
    print(f"  FLOPs (matmuls, convolutions, attention): forward {forward_flops / 1e9:.1f} G, one label's "
          f"backward {backward_flops / 1e9:.1f} G; forward + {labels} backwards = "
          f"{total / 1e9:.0f} G for the loop and the batched backward alike")
    print(f"  matmul rate here: {wall_rate / 1e9:.0f} GFLOP per wall s, {cpu_rate / 1e9:.0f} GFLOP "
          f"per CPU s; the loop ran at {total / loop.wall / wall_rate:.0%} (wall) and "
          f"{total / loop.cpu / cpu_rate:.0%} (CPU) of that rate, so no exact method can be more "
          f"than {loop.wall * wall_rate / total:.1f}x (wall) / {loop.cpu * cpu_rate / total:.1f}x "
          f"(CPU) faster than the loop on this machine")
    if profile:
        profile_backwards(forward, largest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--labels", type=int, default=40)
    parser.add_argument("--frames", type=int, default=3000, help="10 ms log-mel frames")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "gradient_speed.md",
                        help="results file (markdown)")
    parser.add_argument("--models", nargs="+", default=["conformer", "whisper"],
                        choices=["conformer", "whisper"])
    parser.add_argument("--profile", action="store_true", help="top operators of the backwards")
    arguments = parser.parse_args()
    captum_note = (None if importlib.util.find_spec("captum") is not None
                   else "captum is not installed: pip install captum")
    cases = {"conformer": ("attnprobe Conformer AED (6 blocks, d_model 256)", conformer_case),
             "whisper": ("Whisper-tiny shape, random weights (hf-whisper adapter)", whisper_case)}
    with recorded_output() as printed:
        for key in arguments.models:
            title, build = cases[key]
            if key == "whisper" and importlib.util.find_spec("transformers") is None:
                print(f"\n== {title}: skipped, transformers is not installed ==")
                continue
            model, batch = build(arguments.frames, arguments.labels)
            run_case(title, model, batch, arguments.repeats, arguments.profile, captum_note)
    write_results(arguments.out, "Gradient score matrix: batched vs a backward per label",
                  f"```\n{printed.getvalue().strip()}\n```")


if __name__ == "__main__":
    main()
