"""Speech with exact word timings from the festival speech synthesis system.

Debian packages: ``festival`` plus voices, e.g. ``festvox-kallpc16k`` (``kal_diphone``) and
``festvox-us-slt-hts`` (``cmu_us_slt_arctic_hts``). One festival run per utterance synthesises the
text with ``utt.synth``, saves the wave, the phone end times (``utt.save.segs``) and the word end
times (``utt.save.words``), and prints how many phones each word has, read from festival's own
Word -> SylStructure -> Segment relations. Mapping the phones to words by those counts gives each
word's start; the word end times festival saved are checked against the mapping.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

from .manifest import SynthesizedSpeech, WordTiming, read_wav, words_from_phones

ENGINE = "festival"
VOICES: tuple[str, ...] = ("kal_diphone", "cmu_us_slt_arctic_hts")
"""The voices of the Debian packages ``festvox-kallpc16k`` and ``festvox-us-slt-hts``; any other
installed festival voice works too (see :func:`available_voices`)."""

INSTALL_HINT = "apt-get install festival festvox-kallpc16k festvox-us-slt-hts"

# festival saves times with 4 decimals.
_SAVED_TIME_RESOLUTION = 1e-4

_WORD_MARKER = "attnprobe-word"

_SCRIPT = """
(voice_{voice})
(set! utt (utt.synth (Utterance Text "{text}")))
(utt.save.wave utt "{wav}" 'riff)
(utt.save.segs utt "{segs}")
(utt.save.words utt "{words}")
(define (attnprobe-phone-count word)
  (apply + (mapcar (lambda (syllable) (length (item.daughters syllable)))
                   (item.daughters (item.relation word 'SylStructure)))))
(mapcar (lambda (word)
          (format t "{marker} %s %d\\n" (item.name word) (attnprobe-phone-count word)))
        (utt.relation.items utt 'Word))
"""


def is_available() -> bool:
    """Whether the ``festival`` command is installed."""
    return shutil.which("festival") is not None


def _run_festival(script: str) -> str:
    if not is_available():
        raise FileNotFoundError(f"the festival command is not installed; run `{INSTALL_HINT}`")
    with tempfile.NamedTemporaryFile("w", suffix=".scm", prefix="attnprobe-") as file:
        file.write(script)
        file.flush()
        result = subprocess.run(["festival", "-b", file.name], capture_output=True, text=True,
                                check=False)
    if result.returncode != 0 or "SIOD ERROR" in result.stderr + result.stdout:
        raise RuntimeError(f"festival failed: {(result.stderr or result.stdout).strip()}")
    return result.stdout


@functools.cache
def available_voices() -> tuple[str, ...]:
    """The festival voices installed on this machine (empty without festival)."""
    if not is_available():
        return ()
    printed = _run_festival("(format t \"%l\\n\" (voice.list))").strip()
    return tuple(printed.strip("()").split())


def _read_label_file(path: Path) -> list[tuple[str, float]]:
    """``(name, end_seconds)`` rows of a festival label file (header, ``#``, then ``end 100 name``)."""
    lines = path.read_text().splitlines()
    body = lines[lines.index("#") + 1:]
    rows = []
    for line in body:
        end, _, name = line.split(maxsplit=2)
        rows.append((name, float(end)))
    return rows


def _check_saved_word_ends(timings: tuple[WordTiming, ...], saved: list[tuple[str, float]]) -> None:
    saved_words = [(name, end) for name, end in saved if name != "pau"]
    if [name for name, _ in saved_words] != [timing.word for timing in timings] or any(
            abs(end - timing.end) > _SAVED_TIME_RESOLUTION
            for (_, end), timing in zip(saved_words, timings, strict=True)):
        raise ValueError(
            f"festival's saved word ends {saved_words} disagree with the phone mapping "
            f"{[(timing.word, timing.end) for timing in timings]}"
        )


def synthesize(text: str, voice: str) -> SynthesizedSpeech:
    """Speak ``text`` with a festival voice and time every word.

    Args:
        text: lowercase words separated by single spaces.
        voice: an installed festival voice, e.g. ``"kal_diphone"``.

    Returns:
        The audio at the voice's native rate and one timing per word.
    """
    if voice not in available_voices():
        raise ValueError(
            f"festival voice {voice!r} is not installed (installed: "
            f"{', '.join(available_voices()) or 'none'}); run `{INSTALL_HINT}`"
        )
    if not all(word.isalpha() for word in text.split()):
        raise ValueError(f"{text!r}: use plain words of letters only, so each is read as one word")
    words = text.split()
    with tempfile.TemporaryDirectory(prefix="attnprobe-festival-") as folder:
        paths = {name: Path(folder) / f"speech.{name}" for name in ("wav", "segs", "words")}
        printed = _run_festival(_SCRIPT.format(voice=voice, text=text, marker=_WORD_MARKER,
                                               **{name: str(path) for name, path in paths.items()}))
        samples, sample_rate = read_wav(paths["wav"])
        phones = _read_label_file(paths["segs"])
        saved_words = _read_label_file(paths["words"])
    counted = [line.split()[1:] for line in printed.splitlines() if line.startswith(_WORD_MARKER)]
    if [name for name, _ in counted] != words:
        raise ValueError(
            f"festival read {text!r} as the words {[name for name, _ in counted]}; use plain "
            f"dictionary words so each written word is one spoken word"
        )
    timings = words_from_phones(words, [int(count) for _, count in counted], phones)
    _check_saved_word_ends(timings, saved_words)
    return SynthesizedSpeech(samples, sample_rate, timings)
