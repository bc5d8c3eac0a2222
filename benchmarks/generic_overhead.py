"""Cost of the generic path next to the hand-written adapter, on the same models in the same run.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.generic_overhead
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.generic_overhead --rounds 7

For each model with a hand-written adapter (tiny random Whisper, Wav2Vec2 and Parakeet from
``tests/hf_models.py``, scaled up to 6 blocks of width 64 so the probes do real work) the script
times, interleaved round by round so that both see the same machine load:

- **report**: ``reversal_report`` (1 projection, 16 frames) through the hand-written adapter and
  through the generic one (``attnprobe.adapters.generic_adapter``: site map found by structure,
  runner read off the model), each adapter resolved once beforehand, as ``FlipMonitor`` does;
- **setup**: resolving the adapter, where the generic path pays for discovery (the extractor run
  on noise, the trial forward passes, one observed forward pass).

Printed and written to ``benchmarks/results/generic_overhead.md``: median seconds of each, their
ratio (generic / hand-written) per round with the median and the spread (min-max) over rounds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import attnprobe  # noqa: E402
from attnprobe.adapters import generic_adapter, resolve_adapter  # noqa: E402
from attnprobe.adapters.generic import DiscoveredSites  # noqa: E402
from attnprobe.adapters.hf_generic import _specs as remembered_specs  # noqa: E402
from attnprobe.adapters.hf_generic import input_spec  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "generic_overhead.md"


def whisper() -> tuple[torch.nn.Module, attnprobe.SpeechBatch]:
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    config = WhisperConfig(vocab_size=64, num_mel_bins=80, d_model=64, encoder_layers=6,
                           decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                           encoder_ffn_dim=128, decoder_ffn_dim=128, max_source_positions=100,
                           max_target_positions=32, pad_token_id=0, bos_token_id=1,
                           eos_token_id=2, decoder_start_token_id=1)
    generator = torch.Generator().manual_seed(0)
    batch = attnprobe.SpeechBatch(torch.randn(2, 150, 80, generator=generator),
                                  torch.tensor([150, 110]),
                                  torch.randint(3, 64, (2, 8), generator=generator),
                                  torch.tensor([8, 6]))
    return WhisperForConditionalGeneration(config).eval(), batch


def wav2vec2() -> tuple[torch.nn.Module, attnprobe.SpeechBatch]:
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    torch.manual_seed(0)
    config = Wav2Vec2Config(vocab_size=32, hidden_size=64, num_hidden_layers=6,
                            num_attention_heads=4, intermediate_size=128, conv_dim=(32, 32, 32),
                            conv_stride=(5, 4, 4), conv_kernel=(10, 4, 4),
                            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                            feat_extract_norm="layer", do_stable_layer_norm=True)
    generator = torch.Generator().manual_seed(0)
    return (Wav2Vec2ForCTC(config).eval(),
            attnprobe.SpeechBatch(torch.randn(2, 8000, generator=generator),
                                  torch.tensor([8000, 6000])))


def parakeet() -> tuple[torch.nn.Module, attnprobe.SpeechBatch]:
    from transformers import ParakeetCTCConfig, ParakeetEncoderConfig, ParakeetForCTC

    torch.manual_seed(0)
    encoder = ParakeetEncoderConfig(hidden_size=64, num_hidden_layers=6, num_attention_heads=4,
                                    intermediate_size=128, num_mel_bins=80,
                                    subsampling_conv_channels=32)
    config = ParakeetCTCConfig(vocab_size=32, encoder_config=encoder.to_dict())
    generator = torch.Generator().manual_seed(0)
    return (ParakeetForCTC(config).eval(),
            attnprobe.SpeechBatch(torch.randn(2, 240, 80, generator=generator),
                                  torch.tensor([240, 176])))


MODELS: dict[str, Callable[[], tuple[torch.nn.Module, attnprobe.SpeechBatch]]] = {
    "whisper": whisper, "wav2vec2": wav2vec2, "parakeet": parakeet}


def seconds(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-frames", type=int, default=16)
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    rows = []
    for name, build in MODELS.items():
        model, batch = build()
        dedicated, generic = resolve_adapter(model), generic_adapter(model, example=batch)
        assert dedicated.site_map.family != "generic" and generic.site_map.family == "generic"

        def report(adapter: attnprobe.adapters.Adapter) -> Callable[[], object]:
            return lambda: attnprobe.reversal_report(model, batch, projections=1, chunk_size=16,
                                                     max_frames=arguments.max_frames,
                                                     adapter=adapter)

        def fresh_generic() -> None:
            # Forget what discovery remembered about this model, then discover again.
            remembered_specs.pop(model, None)
            from attnprobe.adapters import discovery

            discovery._remembered.pop(model, None)
            input_spec(model)
            resolve_adapter(model, DiscoveredSites, example=batch)

        report(dedicated)()
        report(generic)()
        timings: dict[str, list[float]] = {key: [] for key in
                                           ("report dedicated", "report generic",
                                            "setup dedicated", "setup generic")}
        for _ in range(arguments.rounds):
            timings["report dedicated"].append(seconds(report(dedicated)))
            timings["report generic"].append(seconds(report(generic)))
            timings["setup dedicated"].append(seconds(lambda: resolve_adapter(model)))
            timings["setup generic"].append(seconds(fresh_generic))
        for what in ("report", "setup"):
            ratios = [generic_time / dedicated_time for generic_time, dedicated_time in
                      zip(timings[f"{what} generic"], timings[f"{what} dedicated"])]
            rows.append([name, what, f"{statistics.median(timings[f'{what} dedicated']):.3f}",
                         f"{statistics.median(timings[f'{what} generic']):.3f}",
                         f"{statistics.median(ratios):.2f}x",
                         f"{min(ratios):.2f}-{max(ratios):.2f}"])
            print(" | ".join(rows[-1]), flush=True)
    header = ["model", "what", "hand-written s", "generic s", "ratio (median)",
              "ratio (min-max)"]
    lines = ["# The generic path next to the hand-written adapters", "",
             f"Written by `OMP_NUM_THREADS=1 python -m benchmarks.generic_overhead --rounds "
             f"{arguments.rounds}` on a shared 2-core CPU; median of {arguments.rounds} "
             f"interleaved rounds, ratio per round. Report: reversal_report with 1 projection, "
             f"{arguments.max_frames} frames per sequence, adapters resolved beforehand. Setup: "
             f"resolving the adapter (discovery, for the generic one).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
