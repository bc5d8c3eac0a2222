"""``attnprobe align`` and ``attnprobe report`` over a corpus, as jobs of
:func:`attnprobe.jobs.run_job`: in one process or sharded over ``torchrun``'s ranks, resumable.

- :class:`AlignJob`: one file per utterance, ``<id>.json`` (or ``.txt``, ``.TextGrid``, ``.ctm``);
  the summary adds the time-stamp error over every utterance with reference word times, and for
  CTM all utterances in one ``alignments.ctm``.
- :class:`ReportJob`: one folder per utterance (``<id>/report.html``, ``report.json``, figures);
  the summary adds the verdict counts and an overview page, ``report.html``, linking to each.

Before any model is loaded, every item's audio header is checked and its length compared with the
model's window (:meth:`AudioJob.inspect`; gradient alignment takes any length, window by window);
the model is loaded once per rank, on the first item.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from attnprobe.alignment import AlignmentSettings, settings_for
from attnprobe.audio import check_audio_file
from attnprobe.errors import InputError
from attnprobe.jobs.engine import Inspection, ItemOutput, Job
from attnprobe.jobs.files import PendingFiles
from attnprobe.jobs.items import InputItem
from attnprobe.jobs.state import JobFolder
from attnprobe.jobs.summary import offsets_fact, summary_document, summary_json
from attnprobe.jobs.validation import load_model_or_explain, model_window_seconds
from attnprobe.loading import LoadedModel

from .alignments import SUFFIXES, align_item, render
from .html import PageTable, Section, render_page
from .sections import queue_result
from .text import describe
from .utterance import ReportOptions, analyse, errors_against_reference

SUMMARY = "summary.json"


class AudioJob(Job):
    """What the two audio jobs share: header checks, the model's window, lazy loading.

    Args:
        model: the ``--model`` specification.
        needs_text: items without a transcript fail (``align``).
        any_length: the job reads audio of any length (gradient alignment, window by window);
            otherwise audio longer than the model's window is refused from its header.
        language / task: a multilingual Whisper's decoder prompt (``--language`` / ``--task``).
    """

    too_long_fix = "cut it into shorter pieces"

    def __init__(self, model: str | None, needs_text: bool, any_length: bool = False,
                 language: str | None = None, task: str | None = None) -> None:
        self.model_spec = model
        self.needs_text = needs_text
        self.window_s = None if any_length else model_window_seconds(model)
        self.language = language
        self.task = task
        self._loaded: LoadedModel | None = None

    @property
    def loaded(self) -> LoadedModel:
        if self._loaded is None:
            self._loaded = load_model_or_explain(self.model_spec, self.language, self.task)
        return self._loaded

    def inspect(self, item: InputItem) -> Inspection:
        """The audio's duration, from its header.

        Raises:
            InputError: the item cannot be processed (read from the header and the item alone).
        """
        if item.problem is not None:
            raise InputError(item.problem)
        header = check_audio_file(item.audio)
        if self.window_s is not None and header.duration > self.window_s:
            raise InputError(f"{item.audio} lasts {header.duration:.1f} s but "
                             f"{self.model_spec or 'the default model'} reads at most "
                             f"{self.window_s:g} s at a time; {self.too_long_fix}")
        if self.needs_text and item.text is None:
            raise InputError(f"no transcript for {item.audio}: give --text, a <name>.txt "
                             f"sidecar, or a text column in the manifest")
        return Inspection(header.duration)

    def start(self) -> None:
        _ = self.loaded


class AlignJob(AudioJob):
    """``attnprobe align`` over a corpus (see the module docstring)."""

    command = "align"
    too_long_fix = "use --method gradient (any length) or cut it into shorter pieces"

    def __init__(self, model: str | None, method: str = "gradient",
                 settings: AlignmentSettings | None = None, output_format: str = "json",
                 settings_changes: dict[str, Any] | None = None, language: str | None = None,
                 task: str | None = None) -> None:
        """``settings``: ``None``, the model family's (:func:`~attnprobe.alignment.settings_for`),
        with ``settings_changes`` (e.g. ``{"blank": ..., "max_gap_s": ...}``) applied."""
        super().__init__(model, needs_text=True, any_length=method == "gradient",
                         language=language, task=task)
        self.method = method
        self.given_settings = settings
        self.settings_changes = dict(settings_changes or {})
        self.output_format = output_format

    @property
    def settings(self) -> AlignmentSettings:
        settings = self.given_settings or settings_for(self.loaded.family)
        return settings.replace(**self.settings_changes) if self.settings_changes else settings

    def fingerprint(self) -> dict[str, Any]:
        return {"command": self.command, "model": str(self.model_spec), "method": self.method,
                "format": self.output_format, "settings": repr(self.given_settings),
                "changes": repr(sorted(self.settings_changes.items())),
                "prompt": [self.language, self.task]}

    def output_name(self, item_id: str) -> str:
        return f"{item_id}{SUFFIXES[self.output_format]}"

    def summary_names(self) -> list[str]:
        return [SUMMARY, *(["alignments.ctm"] if self.output_format == "ctm" else [])]

    def align(self, item: InputItem) -> tuple[str, ItemOutput]:
        """The rendered alignment of one item and what the summary keeps of it."""
        loaded = self.loaded
        alignment, duration = align_item(loaded, item, self.method, self.settings)
        text = render(alignment, item, duration, self.output_format, loaded.name)
        facts: dict[str, Any] = {"words": len(alignment.words), "duration_s": duration}
        notes: list[str] = []
        errors = errors_against_reference(alignment, item, notes)
        if errors is not None:
            facts["tse_boundaries_ms"] = errors.tse_boundaries_ms
            facts["offsets_ms"] = offsets_fact(errors)
        return text, ItemOutput(text.encode("utf-8"), f"{len(alignment.words)} words", facts,
                                list(alignment.warnings))

    def process(self, item: InputItem) -> ItemOutput:
        return self.align(item)[1]

    def merge(self, folder: JobFolder, items: Sequence[InputItem],
              records: Sequence[dict[str, Any] | None]) -> dict[str, bytes]:
        files = {SUMMARY: summary_json(summary_document(self.command, self.fingerprint(), items,
                                                        records))}
        if self.output_format == "ctm":
            files["alignments.ctm"] = b"".join(
                (folder.out / self.output_name(item.id)).read_bytes()
                for item, record in zip(items, records, strict=True)
                if record is not None and record["ok"]
                and (folder.out / self.output_name(item.id)).is_file())
        return files


class ReportJob(AudioJob):
    """``attnprobe report`` over a corpus (see the module docstring).

    Args:
        echo: called with each utterance's terminal text (``None``: quiet, as on ranks of a
            distributed run).
    """

    command = "report"
    folder_per_item = True

    def __init__(self, model: str | None, options: ReportOptions,
                 echo: Callable[[str], None] | None = None, language: str | None = None,
                 task: str | None = None) -> None:
        super().__init__(model, needs_text=False, language=language, task=task)
        self.options = options
        self.echo = echo

    def fingerprint(self) -> dict[str, Any]:
        return {"command": self.command, "model": str(self.model_spec),
                "options": repr(self.options), "prompt": [self.language, self.task]}

    def output_name(self, item_id: str) -> str:
        return item_id

    def summary_names(self) -> list[str]:
        return [SUMMARY, "report.html"]

    def process(self, item: InputItem) -> ItemOutput:
        loaded = self.loaded
        result = analyse(loaded, item, self.options)
        if self.echo is not None:
            self.echo(describe(result))
        pending = PendingFiles(Path(item.id))  # collects the files; the job writes them
        section = queue_result(result, pending)
        pending.add("report.html", render_page(
            f"attnprobe reversal report: {loaded.name} on {item.id}",
            [f"{item.audio} probed with {loaded.name} ({loaded.family})."], [section]))
        facts: dict[str, Any] = {"verdict": result.verdict,
                                 "reversed_at": None if result.report is None
                                 else result.report.reversed_at,
                                 "duration_s": result.audio.duration}
        if result.errors is not None:
            facts["tse_boundaries_ms"] = result.errors.tse_boundaries_ms
            facts["offsets_ms"] = offsets_fact(result.errors)
        return ItemOutput(dict(pending.files), result.verdict, facts, list(result.warnings))

    def merge(self, folder: JobFolder, items: Sequence[InputItem],
              records: Sequence[dict[str, Any] | None]) -> dict[str, bytes]:
        document = summary_document(self.command, self.fingerprint(), items, records)
        return {SUMMARY: summary_json(document),
                "report.html": overview_page(document, self.model_spec).encode("utf-8")}


def overview_page(document: dict[str, Any], model: str | None) -> str:
    """The corpus page: counts, then one short section per file (verdict, warnings, link)."""
    verdicts: Counter[str] = Counter(document["verdicts"] or {})
    introduction = [
        f"{document['files']} files probed with {model or 'the default model'}: "
        f"{document['succeeded']} reported, {document['failed']} failed, "
        f"{document['unfinished']} not finished.",
        "Verdicts: " + (", ".join(f"{verdict} {count}" for verdict, count in verdicts.items())
                        or "none yet") + ".",
    ]
    if document["timestamp_errors"] is not None:
        errors = document["timestamp_errors"]
        introduction.append(f"Word-time error over {errors['num_words']} words with reference "
                            f"times: {errors['tse_boundaries_ms']:.1f} ms per boundary.")
    rows, sections = [], []
    for entry in document["results"]:
        verdict = entry.get("verdict") or ("not finished" if entry["ok"] is None
                                           else f"failed: {entry['error']}")
        rows.append([entry["id"], verdict, "" if entry.get("tse_boundaries_ms") is None
                     else f"{entry['tse_boundaries_ms']:.0f}", str(len(entry["warnings"]))])
        if entry["ok"]:
            kind = "reversed" if entry.get("reversed_at") is not None else \
                "kept" if entry.get("verdict") == "not reversed" else "unknown"
            sections.append(Section(entry["id"], verdict, kind,
                                    [f"Full report: {entry['id']}/report.html"],
                                    notes=[f"Warning: {warning}" for warning in entry["warnings"]]))
    overview = PageTable(["file", "verdict", "TSE boundaries (ms)", "warnings"], rows, "All files")
    return render_page("attnprobe reversal reports", introduction, sections, overview)
