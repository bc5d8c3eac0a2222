"""The ``attnprobe`` command line (also ``python -m attnprobe``).

    attnprobe demo [--out DIR]
    attnprobe report --model M --audio A [--text T] [--out DIR]
    attnprobe align --model M --audio A --text T [--method gradient|cross-attention|ctc]
                    [--format table|json|textgrid|ctm] [--out PATH]

Every failure ends in one line on stderr, ``attnprobe: error: <what and how to fix it>``, and a
non-zero exit code: 2 for a bad input or model, 1 when some files of a batch failed, 130 when
interrupted. Nothing is written on an error.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from attnprobe.errors import AttnprobeError

from .parser import build_parser

INPUT_ERROR = 2
INTERRUPTED = 130


def _command(name: str) -> Callable[..., int]:
    # Imported per command: the demo need not import what align needs, and --help stays fast.
    if name == "demo":
        from .demo import run_demo

        return run_demo
    if name == "report":
        from .report import run_report

        return run_report
    from .align import run_align

    return run_align


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    arguments = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        return int(_command(arguments.command)(arguments))
    except AttnprobeError as error:
        return _fail(str(error))
    except ImportError as error:
        return _fail(f"{error}; install the missing package "
                     f"(pip install 'attnprobe[hf,audio,plot]')")
    except KeyboardInterrupt:
        print("attnprobe: interrupted", file=sys.stderr)
        return INTERRUPTED


def _fail(message: str) -> int:
    lines = message.strip().splitlines() or ["unknown error"]
    print(f"attnprobe: error: {' '.join(line.strip() for line in lines)}", file=sys.stderr)
    return INPUT_ERROR


__all__ = ["build_parser", "main"]
