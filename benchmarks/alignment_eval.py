"""Word-time accuracy of gradient alignment on Whisper tiny.en against synthetic reference times.

    python -m benchmarks.alignment_eval --corpus data/timed --n 120 --tune 40 \
        --out benchmarks/results/alignment_eval.md --figure benchmarks/results/alignment.png

Builds the corpus first with ``benchmarks/build_timed_corpus.py``. For each of the first ``--n``
utterances it computes the gradient score matrices once (10 ms log-mel features and the 20 ms
encoder input, all labels in batched backward passes) and the cross-attention DTW baseline, and
keeps them in ``<corpus>/scores`` (:mod:`benchmarks.alignment_cache`), so a second run only aligns.

Two tables, corpus TSE (paper definition, all words pooled): mean word-boundary and word-position
error in ms, the share of word boundaries within 20 / 50 ms, the mean signed start / end offsets,
and the seconds per utterance of the score computation.

1. **Held out.** The first ``--tune`` utterances choose one variant out of
   :func:`~benchmarks.alignment_variants.tuning_grid` (blank constants and percentiles, gap
   closing, both inputs); the table compares it, the paper's settings as published, Whisper's
   cross-attention DTW over its alignment heads and the evenly spaced floor on the *other*
   utterances only.
2. **All utterances**, the untuned rows only.

Only utterances whose aligned words match the reference words one to one are scored; the others
are counted, with the reason, under the tables.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from attnprobe.alignment import (
    TimestampErrors,
    aggregate_timestamp_errors,
    evenly_spaced_alignment,
    timestamp_errors,
)
from attnprobe.loading import load_model
from attnprobe.reporting.text import format_table
from benchmarks.corpus import Manifest

from .alignment_cache import utterance_scores
from .alignment_variants import (
    FRAME_SHIFT_S,
    PAPER_VARIANTS,
    Scored,
    Variant,
    choose_on,
    reference_words,
    tuning_grid,
    variant_errors,
)
from .results_file import write_results

Row = tuple[str, TimestampErrors, float]


def scored_utterances(corpus: str, count: int, cache: Path | None,
                      log: Callable[[str], None]) -> tuple[list[Scored], Counter[str], str]:
    """Score matrices of the first ``count`` utterances whose words the aligners reproduce."""
    manifest = Manifest.load(corpus)
    loaded = load_model()
    kept: list[Scored] = []
    skipped: Counter[str] = Counter()
    for utterance in manifest.utterances[:count]:
        scored = utterance_scores(loaded, manifest, utterance, cache)
        try:  # the words of any alignment of these tokens must be the reference words
            timestamp_errors(scored.cross_attention_words, reference_words(utterance))
        except ValueError as error:
            reason = str(error).split(";")[0]
            skipped[reason] += 1
            log(f"{utterance.id}: skipped ({reason})")
            continue
        kept.append((utterance, scored))
        log(f"{utterance.id}: {len(utterance.words)} words, "
            f"{sum(scored.seconds.values()):.1f} s")
    return kept, skipped, loaded.name


def baseline_rows(items: Sequence[Scored]) -> list[Row]:
    """Cross-attention DTW and the evenly spaced floor."""
    cross = aggregate_timestamp_errors(
        timestamp_errors(scored.cross_attention_words, reference_words(utterance))
        for utterance, scored in items)
    even = aggregate_timestamp_errors(
        timestamp_errors(evenly_spaced_alignment(scored.tokens, scored.valid_frames,
                                                 frame_shift_s=FRAME_SHIFT_S,
                                                 word_style="byte_bpe").words,
                         reference_words(utterance))
        for utterance, scored in items)
    seconds = sum(scored.seconds["cross_attention"] for _, scored in items) / len(items)
    return [("cross-attention DTW (alignment heads)", cross, seconds),
            ("evenly spaced (floor)", even, 0.0)]


def variant_rows(variants: Sequence[Variant], items: Sequence[Scored],
                 prefix: str = "") -> list[Row]:
    return [(prefix + variant.name, variant_errors(variant, items),
             sum(scored.seconds[variant.input] for _, scored in items) / len(items))
            for variant in variants]


def results_table(rows: Sequence[Row]) -> str:
    header = ["method", "TSE boundary (ms)", "TSE position (ms)", "within 20 ms",
              "within 50 ms", "mean offset start / end (ms)", "s / utterance"]
    return format_table(header, [
        [name, f"{errors.tse_boundaries_ms:.1f}", f"{errors.tse_position_ms:.1f}",
         f"{100 * errors.within_20ms:.1f}%", f"{100 * errors.within_50ms:.1f}%",
         f"{errors.start_offsets_ms.mean():+.0f} / {errors.end_offsets_ms.mean():+.0f}",
         f"{seconds:.2f}"] for name, errors, seconds in rows])


def report(items: Sequence[Scored], tune: int, model_name: str, corpus: str) -> tuple[str, Variant]:
    """Both tables as text, and the variant chosen on the tuning part."""
    tuning, held_out = items[:tune], items[tune:]
    if not tuning or not held_out:
        raise SystemExit(f"--tune {tune} leaves {len(tuning)} utterances to tune on and "
                         f"{len(held_out)} to report; use 0 < --tune < {len(items)}")
    chosen, tuned_tse = choose_on(tuning, tuning_grid())
    words = sum(len(utterance.words) for utterance, _ in held_out)
    lines = [f"{model_name} on {corpus}: variant chosen on the first {len(tuning)} scored "
             f"utterances (TSE there {tuned_tse:.1f} ms), reported on the other "
             f"{len(held_out)} ({words} words):", "",
             results_table(variant_rows([chosen], held_out, "chosen: ")
                           + variant_rows(PAPER_VARIANTS, held_out) + baseline_rows(held_out)),
             "", f"All {len(items)} scored utterances "
             f"({sum(len(utterance.words) for utterance, _ in items)} words), untuned rows:", "",
             results_table(variant_rows(PAPER_VARIANTS, items) + baseline_rows(items))]
    return "\n".join(lines), chosen


def save_figure(path: str, chosen: Variant, item: Scored) -> None:
    """The chosen variant's alignment of one held-out utterance, reference words in white."""
    from matplotlib.figure import Figure

    utterance, scored = item
    alignment = chosen.align(scored)
    figure = Figure(figsize=(max(8.0, 3.2 * alignment.duration_s), 4.6))
    ax = figure.add_subplot()
    alignment.plot(ax=ax)
    for _, start, end in reference_words(utterance):
        ax.axvspan(start, end, ymin=0.0, ymax=0.03, color="white", alpha=0.9)
        ax.axvline(start, color="white", linewidth=1.2, linestyle=":")
    ax.set_title(f"\"{utterance.text}\" ({utterance.id})\norange: gradient alignment "
                 f"(start solid, end dashed); white dotted: reference word starts", pad=30,
                 fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="data/timed",
                        help="folder with manifest.json (default: data/timed)")
    parser.add_argument("--n", type=int, default=20, help="first N utterances (default: 20)")
    parser.add_argument("--tune", type=int, default=8,
                        help="scored utterances that choose the tuned variant (default: 8)")
    parser.add_argument("--cache", default=None,
                        help="score cache folder (default: <corpus>/scores; 'none' for none)")
    parser.add_argument("--out", default=None, help="also write the tables to this markdown file")
    parser.add_argument("--figure", default=None,
                        help="save the chosen variant's alignment of one held-out utterance")
    arguments = parser.parse_args()

    cache = None if arguments.cache == "none" else \
        Path(arguments.cache or Path(arguments.corpus) / "scores")
    items, skipped, model_name = scored_utterances(
        arguments.corpus, arguments.n, cache,
        lambda line: print(line, file=sys.stderr, flush=True))
    text, chosen = report(items, arguments.tune, model_name, arguments.corpus)
    text += "".join(f"\nskipped {number}: {reason}" for reason, number in skipped.items())
    print(text)
    if arguments.figure is not None:
        save_figure(arguments.figure, chosen, items[arguments.tune])
    write_results(None if arguments.out is None else Path(arguments.out),
                  f"Alignment evaluation: {model_name}", f"```\n{text}\n```")


if __name__ == "__main__":
    main()
