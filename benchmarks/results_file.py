"""What every benchmark shares: ratios over interleaved rounds with their spread, and a results
file that records what was measured, by which command, on which machine.

A ratio is reported as its median over rounds with the range of the per-round ratios; when that
range holds 1.0 (the variant is sometimes faster, sometimes slower than its baseline) the effect is
smaller than the noise, and the report says so rather than quoting the median alone.
"""

from __future__ import annotations

import contextlib
import io
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Ratio:
    """Per-round ratios of a variant's measurement to its baseline's."""

    values: tuple[float, ...]

    @classmethod
    def of(cls, variant: Sequence[float], baseline: Sequence[float]) -> Ratio:
        """Round ``i`` of ``variant`` over round ``i`` of ``baseline`` (interleaved rounds)."""
        return cls(tuple(v / b for v, b in zip(variant, baseline, strict=True)))

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    @property
    def within_noise(self) -> bool:
        """Whether the rounds disagree on the direction of the effect (the range holds 1)."""
        return self.low <= 1.0 <= self.high and len(self.values) > 1

    def __str__(self) -> str:
        text = f"{self.median:.2f}x ({self.low:.2f}-{self.high:.2f})"
        return text + " within noise" if self.within_noise else text


REPOSITORY = Path(__file__).resolve().parents[1]


def spread(values: Sequence[float]) -> str:
    """``median (min-max)`` of a list of measurements."""
    return f"{statistics.median(values):.3g} ({min(values):.3g}-{max(values):.3g})"


def machine() -> str:
    """One line about where the numbers come from."""
    import torch

    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return (f"{platform.machine()}, {os.cpu_count()} CPUs, load average {load}; python "
            f"{platform.python_version()}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


def command() -> str:
    """The command line that ran this benchmark, to put beside its numbers, in the form that runs
    from the repository root whether the script was started as a file or a module
    (``python -m benchmarks.x``: the benchmarks import each other as a package)."""
    script = Path(sys.argv[0]).resolve()
    try:
        relative = script.relative_to(REPOSITORY)
    except ValueError:
        return shlex.join(["python", script.name, *sys.argv[1:]])
    module = ".".join(relative.with_suffix("").parts)
    return shlex.join(["python", "-m", module, *sys.argv[1:]])


def write_results(path: Path | None, title: str, body: str) -> None:
    """Write ``body`` (markdown) under a heading with the command, date and machine."""
    if path is None:
        return
    header = (f"# {title}\n\nCommand: `{command()}`  \nDate: {time.strftime('%Y-%m-%d %H:%M')}"
              f"  \nMachine: {machine()}\n\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + body.rstrip() + "\n")
    print(f"results written to {path}")


class _Tee(io.TextIOBase):
    def __init__(self, stream: io.TextIOBase) -> None:
        self.stream = stream
        self.kept = io.StringIO()

    def write(self, text: str) -> int:
        self.kept.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


@contextlib.contextmanager
def recorded_output() -> Iterator[io.StringIO]:
    """Print as usual and keep a copy of everything printed (``.getvalue()`` after the block)."""
    tee = _Tee(sys.stdout)
    with contextlib.redirect_stdout(tee):
        yield tee.kept
