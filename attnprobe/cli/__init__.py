"""The ``attnprobe`` command line (also ``python -m attnprobe``).

    attnprobe demo [--out DIR]
    attnprobe report --model M --audio A [--text T] [--out DIR] [--checkpoints RUN_DIR]
    attnprobe align --model M --audio A --text T [--method gradient|cross-attention|ctc]
                    [--format table|json|textgrid|ctm] [--out PATH]

Every failure ends in one line on stderr, ``attnprobe: error: <what and how to fix it>`` (the
traceback only with ``--debug``), and a non-zero exit code: 2 for a bad input or model, 1 when some
files of a batch failed or did not finish, 3 for a failure attnprobe did not foresee (a bug: rerun
with ``--debug`` and report it), 130 when interrupted. Nothing half-written is left behind.

Under ``torchrun`` the same commands run on every rank; rank 0 prints the progress and the
summary, the other ranks speak only of failures of their own.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Sequence

from attnprobe.errors import AttnprobeError, JobError

from .parser import build_parser

INPUT_ERROR = 2
UNEXPECTED_ERROR = 3
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
    debug = bool(getattr(arguments, "debug", False))
    rank = int(os.environ.get("RANK", "0") or 0)
    try:
        return int(_command(arguments.command)(arguments))
    except KeyboardInterrupt:
        print("attnprobe: interrupted; run the same command again to finish what is left",
              file=sys.stderr)
        return INTERRUPTED
    except AttnprobeError as error:
        # Every rank meets the same bad input: rank 0 says it; a job failure is a rank's own.
        if rank == 0 or isinstance(error, JobError):
            _fail(str(error), debug, rank)
        return INPUT_ERROR
    except ImportError as error:
        _fail(f"{error}; install the missing package (pip install 'attnprobe[hf,audio,plot]')",
              debug, rank)
        return INPUT_ERROR
    except MemoryError:
        _fail("ran out of memory; process shorter audio, or lower --memory-limit", debug, rank)
        return INPUT_ERROR
    except Exception as error:  # noqa: BLE001 - the last line of defence: one line, not a trace
        text = " ".join(str(error).split())[:300]
        _fail(f"unexpected {type(error).__name__}{': ' + text if text else ''} (a bug in "
              f"attnprobe: rerun with --debug for the traceback and report it)", debug, rank)
        return UNEXPECTED_ERROR


def _fail(message: str, debug: bool, rank: int) -> None:
    if debug:
        traceback.print_exc()
    flat = " ".join(message.split()) or "unknown error"
    where = f" [rank {rank}]" if rank else ""
    print(f"attnprobe{where}: error: {flat}", file=sys.stderr)


__all__ = ["build_parser", "main"]
