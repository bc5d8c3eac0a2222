"""``attnprobe align``: word and label times of a transcript in its audio, by one of three methods
(:mod:`attnprobe.reporting.alignments`), in one of four formats."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from attnprobe.alignment import settings_for
from attnprobe.audio import check_audio_file
from attnprobe.errors import InputError
from attnprobe.jobs.files import PendingFiles, check_writable, write_file_atomically
from attnprobe.jobs.items import InputItem, collect_inputs, read_text_argument
from attnprobe.jobs.progress import run_items
from attnprobe.loading import load_model
from attnprobe.reporting.alignments import SUFFIXES, align_item, render


def run_align(arguments: argparse.Namespace) -> int:
    """The ``align`` command; returns the exit code."""
    items = collect_inputs(arguments.audio, read_text_argument(arguments.text))
    many = len(items) > 1
    out = None if arguments.out is None else Path(arguments.out).expanduser()
    if out is not None:
        check_writable(out, "folder" if many else "file")
    elif many and arguments.format == "textgrid":
        raise InputError("several TextGrids cannot share the terminal; pass --out FOLDER")
    if not many:
        check_audio_file(items[0].audio)
        if items[0].text is None:
            raise InputError(f"no transcript for {items[0].audio}: give --text 'the words "
                             f"spoken' or a <name>.txt sidecar")
    loaded = load_model(arguments.model, language=arguments.language, task=arguments.task)
    settings = settings_for(loaded.family)
    if arguments.blank is not None:
        settings = settings.replace(blank=arguments.blank)
    if arguments.close_gaps is not None:
        settings = settings.replace(max_gap_s=arguments.close_gaps / 1000)
    rendered: dict[str, str] = {}

    def process(item: InputItem) -> str:
        alignment, duration = align_item(loaded, item, arguments.method, settings)
        rendered[item.id] = render(alignment, item, duration, arguments.format, loaded.name)
        return f"{len(alignment.words)} words"

    summary = run_items(items, process)
    if out is None:
        sys.stdout.write("".join(rendered.values()))
    elif not many:
        if rendered:
            write_file_atomically(out, next(iter(rendered.values())))
    else:
        pending = PendingFiles(out)
        if arguments.format == "ctm":
            pending.add("alignments.ctm", "".join(rendered.values()))
        else:
            for item_id, text in rendered.items():
                pending.add(f"{item_id}{SUFFIXES[arguments.format]}", text)
        pending.add("summary.json", json.dumps(summary.to_dict(), indent=1) + "\n")
        pending.commit()
    return summary.finish(out)
