"""Speech with exact word timings from flite (Debian package ``flite``).

``flite -psdur`` prints every phone with its end time, pauses included, but not which word a phone
belongs to. To find out, flite is asked a second time to read the words as a comma-separated list:
commas make it pause after every word, so the phones between two pauses are one word's phones,
chosen by flite's own lexicon and letter-to-sound rules. Read in a sentence, a word keeps its
number of phones; only vowel qualities may change (flite says "the" as "dh iy" before a vowel and
"dh ax" elsewhere), so the two readings are checked against each other phone by phone, allowing
exactly that.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from .manifest import PAUSE_PHONES, SynthesizedSpeech, read_wav, words_from_phones

ENGINE = "flite"
VOICES: tuple[str, ...] = ("slt", "kal", "awb", "rms", "kal16")
"""flite's built-in US English voices (``awb_time`` only speaks clock times, so it is left out)."""

INSTALL_HINT = "apt-get install flite"

# The CMU phone set's vowels: the only phones flite's post-lexical rules change in context.
_VOWELS = frozenset("aa ae ah ao aw ax axr ay eh er ey ih ix iy ow oy uh uw".split())


def is_available() -> bool:
    """Whether the ``flite`` command is installed."""
    return shutil.which("flite") is not None


def _run_flite(arguments: list[str]) -> str:
    if not is_available():
        raise FileNotFoundError(f"the flite command is not installed; run `{INSTALL_HINT}`")
    result = subprocess.run(["flite", *arguments], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"flite {' '.join(arguments)} failed: {result.stderr.strip()}")
    return result.stdout


def phones_of_each_word(words: list[str], voice: str) -> list[list[str]]:
    """The phones flite says for each word, without pauses: ``[["dh", "ax"], ["b", "er", "ch"]]``."""
    printed = _run_flite(["-voice", voice, "-ps", "-t", ", ".join(words), "-o", "none"]).split()
    groups: list[list[str]] = [[]]
    for phone in printed:
        if phone in PAUSE_PHONES:
            if groups[-1]:
                groups.append([])
        else:
            groups[-1].append(phone)
    groups = [group for group in groups if group]
    if len(groups) != len(words):
        raise ValueError(
            f"flite read {len(words)} comma-separated words as {len(groups)} pause-separated "
            f"groups ({' '.join(printed)}); use plain single words without digits or abbreviations"
        )
    return groups


def _check_same_phones(word_phones: list[list[str]], sentence_phones: list[str], text: str) -> None:
    isolated = [phone for phones in word_phones for phone in phones]
    mismatches = [(expected, spoken) for expected, spoken in zip(isolated, sentence_phones, strict=True)
                  if expected != spoken and not (expected in _VOWELS and spoken in _VOWELS)]
    if mismatches:
        raise ValueError(
            f"flite pronounced {text!r} with consonants that differ from its words read alone "
            f"({mismatches}); the phone-count mapping would misplace words, so choose another sentence"
        )


def synthesize(text: str, voice: str) -> SynthesizedSpeech:
    """Speak ``text`` with a flite voice and time every word.

    Args:
        text: lowercase words separated by single spaces.
        voice: one of :data:`VOICES`.

    Returns:
        The audio at the voice's native rate (8 kHz for ``kal``, else 16 kHz) and one timing per word.
    """
    if voice not in VOICES:
        raise ValueError(f"unknown flite voice {voice!r}; choose one of {', '.join(VOICES)}")
    words = text.split()
    with tempfile.TemporaryDirectory(prefix="attnprobe-flite-") as folder:
        wav_path = Path(folder) / "speech.wav"
        printed = _run_flite(["-voice", voice, "-psdur", "-t", text, "-o", str(wav_path)])
        samples, sample_rate = read_wav(wav_path)
    phones = []
    for entry in printed.split():
        phone, _, end = entry.rpartition(":")
        phones.append((phone, float(end)))
    word_phones = phones_of_each_word(words, voice)
    sentence_phones = [phone for phone, _ in phones if phone not in PAUSE_PHONES]
    timings = words_from_phones(words, [len(group) for group in word_phones], phones)
    _check_same_phones(word_phones, sentence_phones, text)
    return SynthesizedSpeech(samples, sample_rate, timings)
