"""Speech with exact word times from the espeak-ng library (``libespeak-ng.so.1``) via ctypes.

The espeak-ng command line prints no timings, but the library reports, in synchronous mode, a WORD
event at the start of every word and a PHONEME event at the start of every phoneme, each with its
position in the audio. :func:`synthesize` turns those events into word spans:

- a word starts at its WORD event;
- it ends where the next word starts, or earlier where a pause phoneme (``_``, ``_:``) follows its
  last phoneme; the last word ends where the voiced audio ends (trailing silence is trimmed by
  energy, 40 dB below the loudest 5 ms frame);
- espeak-ng sometimes speaks two words as one dictionary entry ("in the", "with the") and then
  sends one WORD event for both; the phonemes of that event are split between the words by the
  phoneme count of each word spoken alone, checked phoneme by phoneme;
- a zero-length WORD event at the end of the text is spurious and dropped.

The library is process-global state: it is initialised once per process and a lock serialises
calls. Its output depends slightly on the calls made before (pitch-period phase, flutter), so a
sequence of calls is reproducible only from a fresh process; :mod:`benchmarks.corpus.training_set`
builds each shard in a fresh worker for that reason.

Usage::

    speech = synthesize("the old dog found a red box", voice="en+m3", rate=175)
    speech.samples        # (samples,) float32 at 16 kHz, 0.2 s of silence on both sides
    speech.words[0]       # WordTiming(word='the', start=0.2, end=0.32)
"""

from __future__ import annotations

import ctypes
import re
import threading
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from attnprobe.audio import resample

ESPEAK_SAMPLE_RATE = 22050
OUTPUT_SAMPLE_RATE = 16000
LIBRARY_NAME = "libespeak-ng.so.1"
INSTALL_HINT = "install it with `apt-get install -y espeak-ng` (Debian/Ubuntu)"

# Constants of /usr/include/espeak-ng/speak_lib.h (API revision 12).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000  # without it, missing espeak-ng-data ends the whole process
_CHARS_UTF8 = 1
_POSITION_CHARACTER = 1
_PARAMETER_RATE = 1
_RATE_MINIMUM, _RATE_MAXIMUM = 80, 450
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EVENT_PHONEME = 7
# Audio per callback; longer than the default 60 ms so that a sentence takes few callbacks.
_BUFFER_MS = 1000

# Marks that espeak-ng's text-to-phoneme output puts on phonemes but its events do not carry.
_STRESS_MARKS = "',%="
# Trailing audio quieter than this, relative to the loudest 5 ms frame, is silence.
_SILENCE_BELOW_DB = -40.0
_ENERGY_FRAME = ESPEAK_SAMPLE_RATE // 200


class _EspeakEvent(ctypes.Structure):
    """``espeak_EVENT`` on LP64 (x86_64, aarch64): 40 bytes, the pointer and union 8-aligned."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),  # 1-based character index into the input text
        ("length", ctypes.c_int),  # characters, WORD events only
        ("audio_position", ctypes.c_int),  # milliseconds
        ("sample", ctypes.c_int),  # sample index at 22.05 kHz
        ("user_data", ctypes.c_void_p),
        ("phoneme", ctypes.c_char * 8),  # union id: phoneme name for PHONEME events
    ]


_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_EspeakEvent)
)


class WordTiming(NamedTuple):
    """One word and its span in seconds from the start of the returned audio."""

    word: str
    start: float
    end: float


class EspeakSpeech(NamedTuple):
    """``samples``: (samples,) float32 mono at 16 kHz; ``words``: one span per word of the text."""

    samples: np.ndarray
    words: list[WordTiming]


class EspeakEvent(NamedTuple):
    """The fields of an espeak-ng event that word timing needs."""

    kind: int  # 1 WORD, 7 PHONEME
    text_position: int  # 1-based character index
    length: int
    sample: int  # at 22.05 kHz
    phoneme: str


class WordTimingError(RuntimeError):
    """espeak-ng's events for a text could not be turned into consistent word spans."""


class EspeakUnavailableError(RuntimeError):
    """libespeak-ng.so.1 is not installed."""


class _Espeak:
    """The initialised library of this process, with the buffers its callback fills."""

    def __init__(self) -> None:
        try:
            self.library = ctypes.CDLL(LIBRARY_NAME)
        except OSError as error:
            raise EspeakUnavailableError(
                f"cannot load {LIBRARY_NAME}: {error}; {INSTALL_HINT}"
            ) from error
        library = self.library
        library.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
        ]
        library.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        library.espeak_Info.restype = ctypes.c_char_p
        library.espeak_TextToPhonemes.restype = ctypes.c_char_p
        library.espeak_TextToPhonemes.argtypes = [
            ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int
        ]
        sample_rate = library.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS,
            _BUFFER_MS,
            None,
            _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT,
        )
        if sample_rate != ESPEAK_SAMPLE_RATE:
            raise EspeakUnavailableError(
                f"espeak_Initialize returned {sample_rate}, expected {ESPEAK_SAMPLE_RATE} Hz; "
                f"check that espeak-ng-data is installed ({INSTALL_HINT})"
            )
        data_path = ctypes.c_char_p()
        library.espeak_Info(ctypes.byref(data_path))
        self.data_path = Path(data_path.value.decode())
        self.chunks: list[np.ndarray] = []
        self.events: list[EspeakEvent] = []
        self.audio_positions_ms: list[int] = []
        # Kept as an attribute: the C library holds the pointer for the life of the process.
        self.callback = _SYNTH_CALLBACK(self._collect)
        library.espeak_SetSynthCallback(self.callback)
        self.lock = threading.Lock()

    def _collect(self, wav, sample_count: int, events) -> int:
        if sample_count > 0 and wav:
            self.chunks.append(np.ctypeslib.as_array(wav, shape=(sample_count,)).copy())
        index = 0
        while events[index].type != _EVENT_LIST_TERMINATED:
            event = events[index]
            if event.type in (_EVENT_WORD, _EVENT_PHONEME):
                is_phoneme = event.type == _EVENT_PHONEME
                phoneme = event.phoneme.decode(errors="replace") if is_phoneme else ""
                self.events.append(EspeakEvent(
                    event.type, event.text_position, event.length, event.sample, phoneme
                ))
                self.audio_positions_ms.append(event.audio_position)
            index += 1
        return 0

    def set_voice(self, voice: str, rate: int) -> None:
        variant = voice.partition("+")[2]
        variants_folder = self.data_path / "voices" / "!v"
        if variant and not (variants_folder / variant).is_file():
            raise ValueError(
                f"espeak-ng has no voice variant {variant!r} (it would silently use the plain "
                f"voice); choose one of {sorted(path.name for path in variants_folder.iterdir())}"
            )
        if self.library.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(
                f"espeak-ng has no voice {voice!r}; list voices with `espeak-ng --voices=en` and "
                "add a variant as 'en+m3' (the form 'en-gb+m3' is not found: use 'en+m3')"
            )
        if not _RATE_MINIMUM <= rate <= _RATE_MAXIMUM:
            raise ValueError(f"rate {rate} words/minute is outside espeak-ng's 80..450")
        self.library.espeak_SetParameter(_PARAMETER_RATE, rate, 0)

    def synthesize(self, text: str) -> tuple[np.ndarray, list[EspeakEvent]]:
        """(samples,) int16 at 22.05 kHz and the WORD/PHONEME events of ``text``."""
        self.chunks, self.events, self.audio_positions_ms = [], [], []
        encoded = text.encode()
        status = self.library.espeak_Synth(
            encoded, len(encoded) + 1, 0, _POSITION_CHARACTER, 0, _CHARS_UTF8, None, None
        )
        if status != 0:
            raise RuntimeError(f"espeak_Synth failed with status {status} for {text!r}")
        samples = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int16)
        for event, milliseconds in zip(self.events, self.audio_positions_ms):
            # The sample index and the millisecond position are separate fields; their agreement
            # shows that the struct layout above matches the library.
            if abs(event.sample * 1000 / ESPEAK_SAMPLE_RATE - milliseconds) > 1.5:
                raise RuntimeError(
                    f"espeak_EVENT layout mismatch: sample {event.sample} vs {milliseconds} ms; "
                    "compare _EspeakEvent with espeak_EVENT in /usr/include/espeak-ng/speak_lib.h"
                )
        return samples, self.events

    def phonemes_of(self, word: str) -> list[str]:
        """Phoneme names of ``word`` spoken alone, without stress marks, in the current voice."""
        buffer = ctypes.create_string_buffer(word.encode())
        pointer = ctypes.c_void_p(ctypes.addressof(buffer))
        names: list[str] = []
        while pointer.value:
            separated = self.library.espeak_TextToPhonemes(
                ctypes.byref(pointer), _CHARS_UTF8, ord("|") << 8
            )
            names += re.split(r"[|\s]+", separated.decode().strip())
        return [name.strip(_STRESS_MARKS) for name in names if name.strip(_STRESS_MARKS)]


_library: _Espeak | None = None
_library_lock = threading.Lock()


def _espeak() -> _Espeak:
    global _library
    with _library_lock:
        if _library is None:
            _library = _Espeak()
        return _library


def espeak_available() -> bool:
    """Whether libespeak-ng.so.1 loads and initialises in this process."""
    try:
        _espeak()
    except EspeakUnavailableError:
        return False
    return True


def check_voice(voice: str, rate: int) -> None:
    """Raise ``ValueError`` (naming the alternatives) unless espeak-ng can speak with these."""
    library = _espeak()
    with library.lock:
        library.set_voice(voice, rate)


def last_voiced_sample(samples: np.ndarray) -> int:
    """End (exclusive) of the last 5 ms frame within 40 dB of the loudest frame; 0 if silent."""
    frame_count = len(samples) // _ENERGY_FRAME + 1
    padded = np.zeros(frame_count * _ENERGY_FRAME)
    padded[: len(samples)] = samples
    energy = np.square(padded.reshape(frame_count, _ENERGY_FRAME)).mean(axis=1)
    if energy.max() <= 0:
        return 0
    voiced = np.flatnonzero(energy >= energy.max() * 10 ** (_SILENCE_BELOW_DB / 10))
    return min(len(samples), int(voiced[-1] + 1) * _ENERGY_FRAME)


def word_spans(
    text: str,
    events: list[EspeakEvent],
    voiced_end: int,
    phonemes_of: Callable[[str], list[str]],
) -> list[tuple[str, int, int]]:
    """``(word, start_sample, end_sample)`` at 22.05 kHz for every whitespace-separated word.

    ``events`` are the WORD and PHONEME events in the order espeak-ng sent them; ``voiced_end`` is
    the end of speech in the audio; ``phonemes_of`` gives a word's phonemes spoken alone (used
    only to split a WORD event that covers several words). Raises :class:`WordTimingError` when
    the events do not fit the text.
    """
    tokens = [(match.start() + 1, match.group()) for match in re.finditer(r"\S+", text)]
    token_index = {position: index for index, (position, _) in enumerate(tokens)}
    groups: list[tuple[int, int, list[EspeakEvent]]] = []  # first token, WORD sample, phonemes
    pause_samples: list[int] = []
    for event in events:
        if event.kind == _EVENT_WORD and event.length > 0:
            if event.text_position not in token_index:
                raise WordTimingError(
                    f"espeak-ng reported a word at character {event.text_position} of {text!r}, "
                    "which starts no word; pass plain words separated by single spaces"
                )
            groups.append((token_index[event.text_position], event.sample, []))
        elif event.kind == _EVENT_PHONEME and event.phoneme.startswith("_"):
            pause_samples.append(event.sample)
        elif event.kind == _EVENT_PHONEME and groups:
            groups[-1][2].append(event)
    if not groups or groups[0][0] != 0:
        raise WordTimingError(f"espeak-ng reported no event for the first word of {text!r}")

    starts: list[tuple[str, int, int]] = []  # word, start sample, last phoneme sample
    for group_number, (first_token, word_sample, phonemes) in enumerate(groups):
        following = groups[group_number + 1][0] if group_number + 1 < len(groups) else len(tokens)
        words = [word for _, word in tokens[first_token:following]]
        starts += _split_group(words, word_sample, phonemes, phonemes_of)

    spans = []
    for index, (word, start, last_phoneme) in enumerate(starts[:-1]):
        pauses = [pause for pause in pause_samples if pause > last_phoneme]
        spans.append((word, start, min([starts[index + 1][1], voiced_end, *pauses])))
    # The final vowel fades out across the closing pause phoneme, so the last word ends where
    # the voiced audio does, not at that phoneme.
    spans.append((starts[-1][0], starts[-1][1], voiced_end))
    _check_spans(text, spans, voiced_end)
    return spans


def _split_group(
    words: list[str],
    word_sample: int,
    phonemes: list[EspeakEvent],
    phonemes_of: Callable[[str], list[str]],
) -> list[tuple[str, int, int]]:
    """``(word, start sample, last phoneme sample)`` for the words of one WORD event."""
    if not phonemes:
        raise WordTimingError(f"espeak-ng spoke no phoneme for {' '.join(words)!r}")
    if len(words) == 1:
        return [(words[0], word_sample, phonemes[-1].sample)]
    result = []
    offset = 0
    for number, word in enumerate(words):
        is_last = number + 1 == len(words)
        # The last word takes the remaining phonemes unchecked: its sound depends on what follows
        # ("the" before a vowel is D-I2, alone it is D-@).
        expected = [] if is_last else phonemes_of(word)
        own = phonemes[offset:] if is_last else phonemes[offset : offset + len(expected)]
        if not own or (not is_last and [event.phoneme for event in own] != expected):
            raise WordTimingError(
                f"cannot split espeak-ng's joint word {' '.join(words)!r}: phonemes "
                f"{[event.phoneme for event in phonemes]} do not continue with {word!r}"
                + ("" if is_last else f" = {expected}")
            )
        start = word_sample if number == 0 else own[0].sample
        result.append((word, start, own[-1].sample))
        offset += len(own)
    return result


def _check_spans(text: str, spans: list[tuple[str, int, int]], audio_end: int) -> None:
    previous_end = 0
    for word, start, end in spans:
        if not previous_end <= start < end <= audio_end:
            raise WordTimingError(
                f"word {word!r} of {text!r} has span {start}..{end} samples after a word ending at "
                f"{previous_end}, audio ends at {audio_end}: spans must be ordered, non-empty, "
                "non-overlapping and inside the audio"
            )
        previous_end = end


def synthesize(
    text: str,
    voice: str = "en-us",
    rate: int = 175,
    leading_silence_s: float = 0.2,
    trailing_silence_s: float = 0.2,
) -> EspeakSpeech:
    """Speak ``text`` and return 16 kHz audio with one :class:`WordTiming` per word.

    Args:
        text: words separated by spaces; each whitespace-separated token gets one span.
        voice: an espeak-ng voice, optionally with a variant: ``"en-us"``, ``"en+m3"``,
            ``"en-us+f3"``, ``"en+klatt2"``.
        rate: speaking rate in words per minute, 80..450.
        leading_silence_s, trailing_silence_s: digital silence added around the speech (espeak-ng
            starts speaking within ~10 ms), so that models see utterance edges without speech.

    Returns:
        ``(samples, words)``: (samples,) float32 in [-1, 1] at 16 kHz and the word spans in
        seconds from the start of ``samples``; spans are ordered, non-overlapping and inside the
        audio.
    """
    library = _espeak()
    with library.lock:
        library.set_voice(voice, rate)
        raw, events = library.synthesize(text)
        spans = word_spans(text, events, last_voiced_sample(raw), library.phonemes_of)
    speech = resample(raw.astype(np.float32) / 32768.0, ESPEAK_SAMPLE_RATE, OUTPUT_SAMPLE_RATE)
    leading = np.zeros(round(leading_silence_s * OUTPUT_SAMPLE_RATE), np.float32)
    trailing = np.zeros(round(trailing_silence_s * OUTPUT_SAMPLE_RATE), np.float32)
    samples = np.concatenate([leading, speech, trailing])
    offset_s = len(leading) / OUTPUT_SAMPLE_RATE
    words = [
        WordTiming(word, offset_s + start / ESPEAK_SAMPLE_RATE, offset_s + end / ESPEAK_SAMPLE_RATE)
        for word, start, end in spans
    ]
    return EspeakSpeech(samples, words)
