"""Gradient alignment on human word boundaries (TIMIT) against cross-attention DTW and even
spacing, for Whisper tiny.en and base.

    python -m benchmarks.alignment_timit --corpus ../shared/timit \\
        --models whisper-tiny.en,whisper-base --out benchmarks/results/alignment_timit.md

For every model and scoring option (targets, where the gradients are taken, the encoder window;
:class:`~benchmarks.timit_scores.ScoringOption`), the score matrices of all 80 utterances are
computed once (cached under ``--cache``, keyed by code, model, option and audio). Decoding settings
(blank constant, silence weight) are chosen on the tuning speakers only; the tables report the
tuning half and the report half, with word-boundary and word-position TSE, the share of word
boundaries within 20 / 50 ms, the mean signed offsets and CPU-seconds per audio-second (one
thread, the process's CPU clock, scoring and decoding included). Cross-attention DTW (the model's
alignment heads, BPE tokens) and BPE tokens spread evenly over the audio are measured in the same
run. ``--max-cpu`` restricts the choice to options within a CPU budget on the tuning half (the
others are still shown there). ``--today`` adds the method as shipped before (gradients at the
10 ms log-mel, BPE targets, percentile blank), which costs about 3.5 CPU-seconds per audio-second
on tiny.en and 9 on base: ``--today-halves report --today-every 2`` measures it on every second
utterance of the report half, beside the chosen option and DTW on the same utterances.

The TIMIT sample is read at run time from ``--corpus`` and never copied; without it the benchmark
says so and exits.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from attnprobe.alignment import (
    DEFAULT_SETTINGS,
    AlignmentSettings,
    BlankScore,
    TimestampErrors,
    aggregate_timestamp_errors,
    evenly_spaced_alignment,
    timestamp_errors,
)
from attnprobe.loading import LoadedModel, load_model
from attnprobe.reporting.alignments import by_cross_attention

from .results_file import recorded_output, write_results
from .timit import TimitUtterance, load_half
from .timit_scores import ScoringOption, StoredScores, decoded, utterance_scores

OPTIONS = {
    "chars-last-30s": ScoringOption("characters, last encoder block, 30 s window"),
    "chars-last-fit": ScoringOption("characters, last encoder block, window fitted (+1 s)",
                                    window_margin_s=1.0),
    "chars-last-fitdec": ScoringOption("characters, last encoder block, 30 s encoder, decoder "
                                       "window fitted (+1 s)", window_margin_s=1.0,
                                       fit_decoder_only=True),
    "tokens-last-30s": ScoringOption("BPE tokens, last encoder block, 30 s window",
                                     targets="tokens"),
    "chars-penultimate-30s": ScoringOption("characters, second-to-last block, 30 s window",
                                           gradient_input="encoder.-2"),
}
TODAY = ScoringOption("before this change: BPE tokens, 10 ms log-mel, 30 s window, percentile "
                      "blank P50", targets="tokens", gradient_input="features")
BLANKS = (-2.0, -3.0, -4.0, -5.0, -6.0)
SILENCE_WEIGHTS = (0.0, 0.5, 1.0, 2.0)
Row = tuple[str, TimestampErrors, float | None]


def decoding_grid() -> list[AlignmentSettings]:
    """Every decoding the tuning half chooses from."""
    grid = [DEFAULT_SETTINGS.replace(blank=BlankScore("constant", blank), silence_weight=weight)
            for blank, weight in itertools.product(BLANKS, SILENCE_WEIGHTS)]
    return grid + [DEFAULT_SETTINGS]


def describe(settings: AlignmentSettings) -> str:
    blank = settings.blank
    text = (f"blank {blank.value:g}" if blank is not None and blank.kind == "constant" else
            f"percentile blank ({blank.reduction}, P{blank.percentile:g})" if blank else "paper")
    return f"{text}, silence weight {settings.silence_weight:g}, gaps <= {settings.max_gap_s:g} s"


def errors_of(items: Sequence[tuple[StoredScores, TimitUtterance]], settings: AlignmentSettings,
              frame_shift_s: float) -> tuple[TimestampErrors, float]:
    """Pooled errors and the decoding CPU seconds."""
    per_utterance, seconds = [], 0.0
    for stored, utterance in items:
        alignment, cpu = decoded(stored, settings, frame_shift_s)
        seconds += cpu
        per_utterance.append(timestamp_errors(alignment.words, utterance.words))
    return aggregate_timestamp_errors(per_utterance), seconds


def resolved(option: ScoringOption, loaded: LoadedModel) -> ScoringOption:
    """``encoder.-k`` counted from the end of this model's encoder."""
    prefix, _, block = option.gradient_input.partition(".")
    if prefix == "encoder" and block.startswith("-"):
        layers = loaded.adapter.site_map.encoder_layers
        return ScoringOption(option.name, option.targets, f"encoder.{layers[int(block)]}",
                             option.window_margin_s, option.fit_decoder_only)
    return option


def scored(loaded: LoadedModel, option: ScoringOption, utterances: Sequence[TimitUtterance],
           cache: Path | None, log: Callable[[str], None]) -> list[tuple[StoredScores, TimitUtterance]]:
    items = []
    for utterance in utterances:
        stored = utterance_scores(loaded, option, utterance, cache)
        items.append((stored, utterance))
    audio = sum(utterance.duration for utterance in utterances)
    log(f"  {option.name}: {sum(s.cpu_seconds for s, _ in items) / audio:.3f} CPU-s per audio-s")
    return items


def baselines(loaded: LoadedModel, utterances: Sequence[TimitUtterance]) -> list[Row]:
    """Cross-attention DTW and even spacing (BPE tokens), timed like the gradient rows."""
    dtw, even, seconds = [], [], 0.0
    shift = loaded.adapter.runner.frame_shift_seconds
    for utterance in utterances:
        started = time.process_time()
        transcript = loaded.transcript(utterance.text)
        batch = loaded.batch(utterance.samples, transcript)
        alignment = by_cross_attention(loaded, batch, transcript, DEFAULT_SETTINGS)
        seconds += time.process_time() - started
        dtw.append(timestamp_errors(alignment.words, utterance.words))
        spaced = evenly_spaced_alignment(transcript.tokens, int(batch.input_lengths[0]),
                                         frame_shift_s=shift, word_style=loaded.word_style)
        even.append(timestamp_errors(spaced.words, utterance.words))
    audio = sum(utterance.duration for utterance in utterances)
    return [("cross-attention DTW (alignment heads, BPE tokens)",
             aggregate_timestamp_errors(dtw), seconds / audio),
            ("BPE tokens evenly spaced (floor)", aggregate_timestamp_errors(even), 0.0)]


@dataclass(frozen=True)
class TodayPlan:
    """Where the method as shipped before is measured: it costs 3-10 CPU-s per audio-s, so on a
    busy machine only on some halves, or on every ``every``-th utterance of them."""

    halves: tuple[str, ...] = ("tune", "report")
    every: int = 1


def today_rows(loaded: LoadedModel, today: TodayPlan, utterances: Sequence[TimitUtterance],
               chosen: tuple[ScoringOption, AlignmentSettings], cache: Path | None,
               log: Callable[[str], None]) -> list[Row]:
    """The method before this change, and where it runs on a subset, the chosen option and
    cross-attention DTW on the same subset (their full-half rows are not comparable)."""
    subset = list(utterances[::today.every])
    audio = sum(utterance.duration for utterance in subset)
    shift = loaded.adapter.runner.frame_shift_seconds
    note = "" if today.every == 1 else f" [on {len(subset)} of these utterances, {audio:.1f} s]"
    rows: list[Row] = []
    runs = [(TODAY, DEFAULT_SETTINGS)] + ([chosen] if today.every > 1 else [])
    for option, settings in runs:
        items = scored(loaded, option, subset, cache, log)
        errors, decode_cpu = errors_of(items, settings, shift)
        cpu = (sum(stored.cpu_seconds for stored, _ in items) + decode_cpu) / audio
        name = (f"gradient, {option.name}" if option is TODAY
                else f"chosen: gradient, {option.name}, {describe(settings)}")
        rows.append((name + note, errors, cpu))
    if today.every > 1:
        name, errors, cpu = baselines(loaded, subset)[0]
        rows.append((name + note, errors, cpu))
    return rows


def table(rows: Sequence[Row]) -> str:
    lines = ["| method | TSE-b ms | TSE-p ms | <= 20 ms | <= 50 ms | mean offset start / end ms "
             "| CPU-s / audio-s |", "|---|---|---|---|---|---|---|"]
    for name, errors, cpu in rows:
        lines.append(f"| {name} | {errors.tse_boundaries_ms:.1f} | {errors.tse_position_ms:.1f} "
                     f"| {100 * errors.within_20ms:.1f}% | {100 * errors.within_50ms:.1f}% | "
                     f"{errors.start_offsets_ms.mean():+.0f} / {errors.end_offsets_ms.mean():+.0f}"
                     f" | {'' if cpu is None else f'{cpu:.2f}'} |")
    return "\n".join(lines)


def evaluate_model(spec: str, corpus: Path, option_names: Sequence[str], today: TodayPlan | None,
                   report_all: bool, max_cpu: float | None, cache: Path | None,
                   log: Callable[[str], None], every: int = 1) -> tuple[str, dict]:
    loaded = load_model(spec, language="en")
    shift = loaded.adapter.runner.frame_shift_seconds
    halves = {half: load_half(corpus, half)[::every] for half in ("tune", "report")}
    audio = {half: sum(u.duration for u in utterances) for half, utterances in halves.items()}
    model_cache = None if cache is None else cache / loaded.name
    tuned = []  # (over the CPU budget, tune TSE, option, settings)
    for name in option_names:
        option = resolved(OPTIONS[name], loaded)
        log(f"{loaded.name}: scoring the tuning half, {option.name}")
        items = scored(loaded, option, halves["tune"], model_cache, log)
        cpu = sum(stored.cpu_seconds for stored, _ in items) / audio["tune"]
        best = min(((errors_of(items, settings, shift)[0].tse_boundaries_ms, settings)
                    for settings in decoding_grid()), key=lambda pair: pair[0])
        tuned.append((max_cpu is not None and cpu > max_cpu, best[0], option, best[1]))
        log(f"  best on the tuning half: {best[0]:.1f} ms with {describe(best[1])}")
    # The most accurate option on the tuning half within the CPU budget (if any is).
    tuned.sort(key=lambda entry: (entry[0], entry[1]))
    tuned = [entry[1:] for entry in tuned]
    sections, choice = [], {}
    for half in ("tune", "report"):
        rows: list[Row] = []
        for rank, (_, option, settings) in enumerate(tuned):
            if half == "report" and rank > 0 and not report_all:
                continue
            items = scored(loaded, option, halves[half], model_cache, log)
            errors, decode_cpu = errors_of(items, settings, shift)
            cpu = (sum(stored.cpu_seconds for stored, _ in items) + decode_cpu) / audio[half]
            mark = "**chosen**: " if rank == 0 else ""
            rows.append((f"{mark}gradient, {option.name}, {describe(settings)}", errors, cpu))
        if today and half in today.halves:
            rows += today_rows(loaded, today, halves[half], tuned[0][1:], model_cache, log)
        log(f"{loaded.name}: baselines on the {half} half")
        rows += baselines(loaded, halves[half])
        words = sum(len(u.words) for u in halves[half])
        repaired = sum(u.repaired for u in halves[half])
        sections.append(f"### {loaded.name}, {half} half ({len(halves[half])} utterances, "
                        f"{audio[half]:.1f} s, {words} words; {repaired} files byte-order "
                        f"repaired)\n\n{table(rows)}")
    _, option, settings = tuned[0]
    choice = {"option": option.name, "gradient_input": option.gradient_input,
              "targets": option.targets, "window_margin_s": option.window_margin_s,
              "blank": settings.blank.value if settings.blank else None,
              "silence_weight": settings.silence_weight}
    return "\n\n".join(sections), choice


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="../shared/timit", help="the TIMIT sample folder")
    parser.add_argument("--models", default="whisper-tiny.en,whisper-base",
                        help="comma-separated load_model specs")
    parser.add_argument("--options", default="chars-last-30s,chars-last-fitdec,chars-last-fit",
                        help=f"scoring options to tune, from {', '.join(OPTIONS)}")
    parser.add_argument("--today", action="store_true",
                        help="also measure the method as shipped before (slow)")
    parser.add_argument("--today-halves", default="tune,report",
                        help="halves where --today measures (comma-separated)")
    parser.add_argument("--today-every", type=int, default=1,
                        help="--today on every k-th utterance only, beside the chosen option "
                             "and DTW on the same utterances")
    parser.add_argument("--max-cpu", type=float, default=None,
                        help="choose among the options that score the tuning half within this "
                             "many CPU-s per audio-s (all options are still shown)")
    parser.add_argument("--report-all", action="store_true",
                        help="report every option on the report half, not only the chosen one")
    parser.add_argument("--every", type=int, default=1,
                        help="every k-th utterance of each half only (a subset, for slow models "
                             "on a busy machine; the tables say how many)")
    parser.add_argument("--cache", default="data/timit-scores",
                        help="score cache folder ('none': no cache)")
    parser.add_argument("--out", default=None, help="write the results file here")
    arguments = parser.parse_args()
    corpus = Path(arguments.corpus)
    if not (corpus / "README.md").is_file():
        print(f"skipped: no TIMIT sample at {corpus} (read-only evaluation data, not shipped)")
        return
    torch.set_num_threads(1)
    cache = None if arguments.cache == "none" else Path(arguments.cache)
    sections, choices = [], {}
    with recorded_output() as printed:
        for spec in arguments.models.split(","):
            text, choice = evaluate_model(spec, corpus, arguments.options.split(","),
                                          TodayPlan(tuple(arguments.today_halves.split(",")),
                                                    arguments.today_every)
                                          if arguments.today else None, arguments.report_all,
                                          arguments.max_cpu, cache,
                                          lambda line: print(line, file=sys.stderr, flush=True),
                                          arguments.every)
            print(text + "\n", flush=True)
            sections.append(text)
            choices[spec] = choice
        print("Chosen on the tuning half:\n\n```\n" + json.dumps(choices, indent=1) + "\n```")
    body = ("Settings chosen on the tuning speakers (" + ", ".join(
        ("dr1-fvmh0", "dr2-marc0", "dr3-falk0", "dr4-maeb0")) + "), reported on the other four "
        "(dr5-ftlg0, dr6-mbma1, dr7-fblv0, dr8-mbcg0). CPU-s / audio-s: one thread, the "
        "process's CPU clock, scoring and decoding; it excludes waiting for a core, but on a "
        "busy machine (load average above) cache and memory contention still inflate it, so "
        "compare CPU figures within a table.\n\n" + printed.getvalue())
    write_results(None if arguments.out is None else Path(arguments.out),
                  "Gradient alignment on TIMIT word boundaries", body)


if __name__ == "__main__":
    main()
