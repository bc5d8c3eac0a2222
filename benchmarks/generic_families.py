"""Every speech family of the pinned transformers through attnprobe's generic path, as a table.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.generic_families
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.generic_families whisper wav2vec2

Each family is built as a tiny random model (``tests/hf_families.py``) and run with no
hand-written site map registered (``tests/generic_path.py``, what the acceptance test
``tests/test_generic_families.py`` asserts): trace (largest output change, hooks or registry
entries left), attention (sites whose probabilities were captured), the reversal report (probes
that ran) and gradient alignment (aligned items, or why the model has nothing to align), with the
wall-clock seconds of the whole family on this machine. Families listed as not working
(``CANNOT_WORK``) are run too, and their first error is shown next to the documented reason.

Writes ``benchmarks/results/generic_families.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.generic_path import CANNOT_WORK, NO_PROBABILITIES, FamilyResult, exercise  # noqa: E402
from tests.hf_families import speech_families  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "generic_families.md"
PROBE_SHORT = {"frame_mapping": "frames", "gradient_maps": "gradients",
               "cross_attention": "cross", "diagonality": "diagonality",
               "dominance": "dominance"}


def row(result: FamilyResult) -> list[str]:
    family = result.family
    trace = ("clean" if result.output_difference is not None and result.output_difference <= 1e-5
             and not result.hooks_left and not result.registry_left else
             f"changed {result.output_difference}")
    attention = f"{result.attention_captured}/{result.attention_sites}"
    if family.model_type in NO_PROBABILITIES:
        attention += " (chunked)"
    report = ", ".join(PROBE_SHORT[name] for name in result.report_ran)
    if result.alignments is not None:
        alignment = f"{result.alignments} items" + ("" if result.alignment_in_seconds
                                                    else " (frames)")
    else:
        alignment = "n/a (no labels)"
    return [family.model_type, family.class_name, trace, attention, report, alignment,
            f"{result.seconds['total']:.1f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("families", nargs="*", help="model types (default: all)")
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    header = ["family", "class", "trace", "attention", "report ran", "alignment", "s"]
    working, failing = [], []
    for family in speech_families():
        if arguments.families and family.model_type not in arguments.families:
            continue
        started = time.perf_counter()
        try:
            result = exercise(family)
        except Exception as error:  # noqa: BLE001 (tabulate, do not stop)
            reason = CANNOT_WORK.get(family.model_type, "NOT LISTED AS NOT WORKING")
            failing.append([family.model_type, family.class_name, reason,
                            f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:90]}"])
            print(f"{family.model_type}: does not work ({reason})", flush=True)
            continue
        result.seconds["total"] = time.perf_counter() - started
        working.append(row(result))
        print(" | ".join(working[-1]), flush=True)
    lines = ["# Speech families of the pinned transformers through the generic path", "",
             "Written by `OMP_NUM_THREADS=1 python -m benchmarks.generic_families` (tiny random "
             f"models, 2-core shared CPU; seconds are wall clock of build + trace + report + "
             f"alignment). transformers {_version()}.", "",
             f"{len(working)} families work, {len(failing)} do not.", "",
             _table(header, working), "", "## Families that do not work", "",
             _table(["family", "class", "why", "first error"], failing), ""]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print(f"wrote {RESULTS}")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _version() -> str:
    import transformers

    return transformers.__version__


if __name__ == "__main__":
    main()
