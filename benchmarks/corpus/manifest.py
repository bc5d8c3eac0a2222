"""What every synthesiser of the timed corpus shares: word timings, utterances, the manifest file.

A synthesiser (flite, festival, espeak-ng) turns a sentence into :class:`SynthesizedSpeech`: audio
at the engine's own sample rate plus one :class:`WordTiming` per written word. :func:`write_utterance`
resamples it to 16 kHz mono int16, writes ``<id>.wav`` and a ``<id>.json`` sidecar (which is also
what makes a rebuild reuse finished utterances), and :class:`Manifest` lists them all in
``manifest.json``::

    {"sample_rate": 16000,
     "utterances": [{"id": "0000-slt", "wav": "0000-slt.wav", "text": "the red kite ...",
                     "voice": "slt", "engine": "flite", "duration": 2.47,
                     "words": [{"word": "the", "start": 0.184, "end": 0.258}, ...]}, ...]}

Times are seconds from the start of the wav; wav paths are relative to the manifest's folder.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from attnprobe.audio import read_audio, resample

SAMPLE_RATE = 16000
"""Sample rate of every wav the corpus writes (what Whisper and the project's models read)."""

PAUSE_PHONES = frozenset({"pau", "h#", "sil", "#"})
"""Phone names that mark silence rather than a sound of a word."""


@dataclass(frozen=True)
class WordTiming:
    """One spoken word: its text and where it sits in the audio, in seconds."""

    word: str
    start: float
    end: float


@dataclass(frozen=True)
class SynthesizedSpeech:
    """A synthesiser's output before it is written to disk.

    Attributes:
        samples: ``(samples,)`` float32 waveform in [-1, 1] at ``sample_rate``.
        sample_rate: the engine's native rate in Hz (8 kHz voices exist; the writer resamples).
        words: one timing per written word of the text, in order.
    """

    samples: np.ndarray
    sample_rate: int
    words: tuple[WordTiming, ...]

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


@dataclass(frozen=True)
class Utterance:
    """One entry of the manifest; ``wav`` is relative to the manifest's folder."""

    id: str
    wav: str
    text: str
    voice: str
    engine: str
    duration: float
    words: tuple[WordTiming, ...]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, entry: dict) -> Utterance:
        words = tuple(WordTiming(**word) for word in entry["words"])
        return cls(**{**entry, "words": words})


@dataclass
class Manifest:
    """The utterances of a corpus folder.

    Attributes:
        root: folder holding ``manifest.json`` and the wavs.
        utterances: in build order.
    """

    root: Path
    utterances: list[Utterance] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.utterances)

    @property
    def total_duration(self) -> float:
        """Seconds of audio in the corpus."""
        return sum(utterance.duration for utterance in self.utterances)

    def wav_path(self, utterance: Utterance) -> Path:
        return self.root / utterance.wav

    def save(self) -> Path:
        """Write ``root/manifest.json`` and return its path."""
        path = self.root / "manifest.json"
        document = {"sample_rate": SAMPLE_RATE,
                    "utterances": [utterance.to_dict() for utterance in self.utterances]}
        path.write_text(json.dumps(document, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        """Read a ``manifest.json`` (or the folder holding one)."""
        path = Path(path)
        if path.is_dir():
            path = path / "manifest.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"no manifest at {path}; build one with benchmarks.corpus.build_corpus or "
                f"`python benchmarks/build_timed_corpus.py --out {path.parent}`"
            )
        document = json.loads(path.read_text())
        return cls(path.parent, [Utterance.from_dict(entry) for entry in document["utterances"]])


def words_from_phones(words: Sequence[str], phones_per_word: Sequence[int],
                      phones: Sequence[tuple[str, float]]) -> tuple[WordTiming, ...]:
    """Word timings from phone end times, given how many phones each word has.

    A word starts where the phone before its first phone ends (so a pause before it is not part
    of it) and ends where its last phone ends. Pause phones belong to no word.

    Args:
        words: the written words, in order.
        phones_per_word: number of non-pause phones of each word.
        phones: ``(phone, end_seconds)`` for the whole utterance, pauses included, in order.
    """
    if len(words) != len(phones_per_word):
        raise ValueError(f"{len(words)} words but {len(phones_per_word)} phone counts")
    spoken = [(index, end) for index, (phone, end) in enumerate(phones) if phone not in PAUSE_PHONES]
    if sum(phones_per_word) != len(spoken):
        raise ValueError(
            f"the words need {sum(phones_per_word)} phones but the synthesiser produced "
            f"{len(spoken)}: {' '.join(phone for phone, _ in phones)}; a word was pronounced with "
            f"a different number of phones in context (e.g. a contraction or a digit): remove it"
        )
    timings = []
    cursor = 0
    for word, count in zip(words, phones_per_word, strict=True):
        if count == 0:
            raise ValueError(f"the synthesiser gave the word {word!r} no phones; remove it")
        first_index = spoken[cursor][0]
        start = phones[first_index - 1][1] if first_index > 0 else 0.0
        timings.append(WordTiming(word, start, spoken[cursor + count - 1][1]))
        cursor += count
    return tuple(timings)


def check_word_timings(words: Sequence[WordTiming], duration: float) -> None:
    """Raise ``ValueError`` unless the words are non-empty, in order, non-overlapping and inside
    ``[0, duration]`` seconds."""
    previous_end = 0.0
    for timing in words:
        if not previous_end <= timing.start < timing.end <= duration:
            raise ValueError(
                f"implausible timing for {timing.word!r}: [{timing.start:.3f}, {timing.end:.3f}] s "
                f"after a word ending at {previous_end:.3f} s in {duration:.3f} s of audio; the "
                f"synthesiser's phone times do not match its audio"
            )
        previous_end = timing.end


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int) -> None:
    """Write ``(samples,)`` float audio in [-1, 1] as mono 16-bit PCM (clipping outside that)."""
    import soundfile

    soundfile.write(str(path), np.clip(samples, -1.0, 1.0), sample_rate, subtype="PCM_16")


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """``(samples, sample_rate)`` of an audio file, mono float32 in [-1, 1]."""
    audio = read_audio(Path(path))
    return audio.samples, audio.sample_rate


def write_utterance(folder: Path, utterance_id: str, text: str, voice: str, engine: str,
                    speech: SynthesizedSpeech) -> Utterance:
    """Write ``<id>.wav`` (16 kHz mono int16) and its ``<id>.json`` sidecar; return the entry."""
    check_word_timings(speech.words, speech.duration)
    samples = resample(speech.samples, speech.sample_rate, SAMPLE_RATE)
    write_wav(folder / f"{utterance_id}.wav", samples, SAMPLE_RATE)
    utterance = Utterance(utterance_id, f"{utterance_id}.wav", text, voice, engine,
                          len(samples) / SAMPLE_RATE, speech.words)
    (folder / f"{utterance_id}.json").write_text(json.dumps(utterance.to_dict(), indent=1))
    return utterance


def read_finished_utterance(folder: Path, utterance_id: str, text: str, voice: str) -> Utterance | None:
    """The utterance written earlier under ``utterance_id`` if it has this text and voice and its
    wav exists; ``None`` when it must be synthesised (again)."""
    sidecar = folder / f"{utterance_id}.json"
    if not sidecar.is_file() or not (folder / f"{utterance_id}.wav").is_file():
        return None
    utterance = Utterance.from_dict(json.loads(sidecar.read_text()))
    return utterance if (utterance.text, utterance.voice) == (text, voice) else None
