"""Write alignments as Praat TextGrid (long format) and NIST CTM files.

TextGrid: two interval tiers, ``"words"`` and ``"labels"``; each tiles ``[0, duration]`` with
empty intervals in the gaps, as Praat requires. Aligners whose neighbouring spans share a frame
(cross-attention DTW) get the shared stretch split at its middle. An alignment with warnings gets a
third tier, ``"warnings"``, one interval over the whole file.

CTM: one line per word, ``utterance channel start duration word``, times in seconds; warnings
come first as ``;;`` comment lines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from .result import Alignment

# Spans closer than this (in seconds) are treated as touching, not as separated by a gap.
TOUCHING_S = 1e-9


def textgrid_text(alignment: Alignment, duration_s: float | None = None) -> str:
    """The alignment as a long-format Praat TextGrid.

    Args:
        alignment: what to write.
        duration_s: length of the recording; defaults to ``alignment.duration_s`` (the valid
            frames). Pass the audio duration when the last frame ends before the audio does.
    """
    alignment.require_seconds("a TextGrid")
    duration = alignment.duration_s if duration_s is None else duration_s
    assert duration is not None
    tiers = {
        "words": [(word.start_s, word.end_s, word.text) for word in alignment.words],
        "labels": [(label.start_s, label.end_s, label.text) for label in alignment.labels],
    }
    if alignment.warnings:
        tiers["warnings"] = [(0.0, duration, " / ".join(alignment.warnings))]
    lines = [
        'File type = "ooTextFile"',
        'Object class = "TextGrid"',
        "",
        "xmin = 0 ",
        f"xmax = {_number(duration)} ",
        "tiers? <exists> ",
        f"size = {len(tiers)} ",
        "item []: ",
    ]
    for tier_index, (name, spans) in enumerate(tiers.items(), start=1):
        intervals = tile_intervals(spans, duration, tier=name)
        lines += [
            f"    item [{tier_index}]:",
            '        class = "IntervalTier" ',
            f'        name = "{name}" ',
            "        xmin = 0 ",
            f"        xmax = {_number(duration)} ",
            f"        intervals: size = {len(intervals)} ",
        ]
        for interval_index, (start, end, text) in enumerate(intervals, start=1):
            lines += [
                f"        intervals [{interval_index}]:",
                f"            xmin = {_number(start)} ",
                f"            xmax = {_number(end)} ",
                f'            text = "{_quoted(text)}" ',
            ]
    return "\n".join(lines) + "\n"


def write_textgrid(alignment: Alignment, path: str | Path, duration_s: float | None = None) -> Path:
    """Write :func:`textgrid_text` to ``path`` (UTF-8) and return the path."""
    path = Path(path)
    path.write_text(textgrid_text(alignment, duration_s), encoding="utf-8")
    return path


def tile_intervals(
    spans: Sequence[tuple[float, float, str]], duration_s: float, tier: str = "words"
) -> list[tuple[float, float, str]]:
    """Ordered ``(start, end, text)`` spans -> intervals that tile ``[0, duration_s]``.

    Gaps become empty-text intervals; where two neighbours overlap, the boundary moves to the
    middle of the overlap.

    Raises:
        ValueError: spans out of order, or past ``duration_s``.
    """
    placed: list[list] = []
    for start, end, text in spans:
        if placed and start < placed[-1][1] - TOUCHING_S:
            previous = placed[-1]
            middle = (start + previous[1]) / 2
            if not previous[0] < middle < end:
                raise ValueError(
                    f"{tier} {previous[2]!r} [{previous[0]:.3f}, {previous[1]:.3f}] and {text!r} "
                    f"[{start:.3f}, {end:.3f}] are out of order; a TextGrid needs monotone spans"
                )
            previous[1] = start = middle
        placed.append([start, end, text])
    if placed and placed[-1][1] > duration_s + TOUCHING_S:
        raise ValueError(
            f"{tier} end at {placed[-1][1]:.3f} s, after the duration {duration_s:.3f} s; pass "
            f"duration_s= the recording's length"
        )
    intervals: list[tuple[float, float, str]] = []
    cursor = 0.0
    for start, end, text in placed:
        if start > cursor + TOUCHING_S:
            intervals.append((cursor, start, ""))
        else:
            start = cursor
        intervals.append((start, end, text))
        cursor = end
    if duration_s > cursor + TOUCHING_S or not intervals:
        intervals.append((cursor, duration_s, ""))
    return intervals


def ctm_text(utterance_id: str, alignment: Alignment, channel: int = 1) -> str:
    """CTM lines ``utterance channel start duration word`` for one utterance."""
    if any(char.isspace() for char in utterance_id):
        raise ValueError(f"utterance id {utterance_id!r} contains whitespace; CTM splits on it")
    alignment.require_seconds("a CTM file")
    lines = [f";; {utterance_id} warning: {' '.join(warning.split())}\n"
             for warning in alignment.warnings]
    for word in alignment.words:
        if any(char.isspace() for char in word.text):
            raise ValueError(
                f"word {word.text!r} contains whitespace, which splits a CTM column; group the "
                f"tokens with the right word_style"
            )
        duration = word.end_s - word.start_s
        lines.append(f"{utterance_id} {channel} {word.start_s:.3f} {duration:.3f} {word.text}\n")
    return "".join(lines)


def write_ctm(alignments: Mapping[str, Alignment], path: str | Path, channel: int = 1) -> Path:
    """Write the words of every utterance (keyed by utterance id) to one CTM file."""
    path = Path(path)
    path.write_text(
        "".join(
            ctm_text(utterance, alignment, channel) for utterance, alignment in alignments.items()
        ),
        encoding="utf-8",
    )
    return path


def _number(seconds: float) -> str:
    return format(round(seconds, 6), ".6f").rstrip("0").rstrip(".")


def _quoted(text: str) -> str:
    return text.replace('"', '""')
