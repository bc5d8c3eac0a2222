"""Audio files: any format soundfile reads, mixed to mono, resampled to the rate a model wants.
soundfile and torchaudio are imported on first use (``pip install 'attnprobe[audio]'``).

Every file is checked from its header alone (:func:`check_audio_file`: sample rate, channels,
length, decoded size) before any sample is read, so a damaged header is one clear error instead
of gigabytes of memory. :func:`speech_presence` says whether a recording holds voiced sound at all,
so an alignment of silence or noise can say that its times mean nothing.

Usage::

    audio = read_audio(Path("utterance.wav")).at_rate(16000)
    audio.samples                     # (samples,) float32 in [-1, 1]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from attnprobe.errors import InputError

SHIPPED_UTTERANCE = Path(__file__).resolve().parent / "assets" / "utterance.wav"
"""A ~3 s utterance shipped with attnprobe (flite voice slt), with its transcript and exact word
times in the sidecar ``utterance.json``."""

SHORTEST_SECONDS = 0.1
"""Shorter audio holds too few frames for any probe (10 feature frames, 1-2 encoder frames)."""
SAMPLE_RATES = (4_000, 384_000)
"""Sample rates (Hz) a header may claim: telephone speech to studio recorders. Anything outside
is a damaged header, and resampling from it would take unbounded memory."""
MOST_CHANNELS = 64
DECODED_BYTES = 4 * 2**30
"""Largest decoded size (float32, every channel) read at once: about 4.6 hours of 16 kHz stereo."""
SINC_RATIO_TERMS = 1_000
"""torchaudio's windowed-sinc resampler builds a kernel per output phase; rates whose reduced ratio
has larger terms (16001 -> 16000 Hz) are resampled in the frequency domain instead."""


@dataclass(frozen=True)
class Audio:
    """A mono recording.

    Attributes:
        path: the file it came from.
        samples: ``(samples,)`` float32 in [-1, 1].
        sample_rate: Hz.
    """

    path: Path
    samples: np.ndarray
    sample_rate: int

    @property
    def duration(self) -> float:
        """Seconds."""
        return len(self.samples) / self.sample_rate

    def at_rate(self, sample_rate: int) -> Audio:
        """The same recording at ``sample_rate`` (see :func:`resample`)."""
        if sample_rate == self.sample_rate:
            return self
        return Audio(self.path, resample(self.samples, self.sample_rate, sample_rate), sample_rate)


@dataclass(frozen=True)
class AudioHeader:
    """What a file's header says, read without decoding a sample.

    Attributes:
        path: the file.
        sample_rate: Hz.
        channels: channel count.
        frames: samples per channel.
        format / subtype: soundfile's names, e.g. ``"WAV"`` / ``"PCM_16"``.
    """

    path: Path
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration(self) -> float:
        """Seconds."""
        return self.frames / self.sample_rate


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """``(samples,)`` at ``from_rate`` -> float32 at ``to_rate``, ``ceil(len(samples) * to_rate /
    from_rate)`` samples long: torchaudio's band-limited windowed-sinc resampling, or, for rates
    whose reduced ratio has terms over :data:`SINC_RATIO_TERMS`, an exact-ratio FFT resampling
    (memory proportional to the signal, not to the rates)."""
    if from_rate == to_rate:
        return np.asarray(samples, dtype=np.float32)
    ratio = Fraction(to_rate, from_rate)
    if max(ratio.numerator, ratio.denominator) > SINC_RATIO_TERMS:
        return _resample_by_fft(np.asarray(samples, dtype=np.float64), from_rate, to_rate)
    try:
        import torchaudio.functional
    except ImportError as error:
        raise InputError(f"resampling from {from_rate} Hz to {to_rate} Hz needs torchaudio: pip "
                         f"install 'attnprobe[audio]'") from error
    import torch

    waveform = torch.as_tensor(np.asarray(samples), dtype=torch.float32)
    return torchaudio.functional.resample(waveform, from_rate, to_rate).numpy()


def _resample_by_fft(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Keep the spectrum below both Nyquist frequencies and transform back at the new length.

    The input is zero-padded to a whole number of ratio periods (``from_rate / gcd`` samples, at
    most one second), so that the output lands exactly on the new rate's sample grid."""
    length = math.ceil(len(samples) * to_rate / from_rate)
    ratio = Fraction(to_rate, from_rate)
    period = ratio.denominator
    padded_length = -(-len(samples) // period) * period
    padded = np.zeros(padded_length)
    padded[: len(samples)] = samples
    output_length = padded_length // period * ratio.numerator
    spectrum = np.fft.rfft(padded)
    kept = min(len(spectrum), output_length // 2 + 1)
    resized = np.zeros(output_length // 2 + 1, dtype=np.complex128)
    resized[:kept] = spectrum[:kept]
    resampled = np.fft.irfft(resized, n=output_length) * (output_length / padded_length)
    return resampled[:length].astype(np.float32)


def _soundfile() -> object:
    try:
        import soundfile
    except ImportError as error:
        raise InputError("reading audio needs soundfile: pip install 'attnprobe[audio]'") from error
    return soundfile


def check_audio_file(path: Path) -> AudioHeader:
    """The header of ``path``, or :class:`InputError` when it cannot be a usable recording: missing,
    unreadable, empty, shorter than :data:`SHORTEST_SECONDS`, a sample rate outside
    :data:`SAMPLE_RATES`, more than :data:`MOST_CHANNELS` channels, or more than
    :data:`DECODED_BYTES` decoded. Reads only the header, so it is cheap enough to run on every
    input before a model is loaded."""
    if not path.exists():
        raise InputError(f"audio file {path} does not exist; check the path")
    if path.is_dir():
        raise InputError(f"{path} is a folder; pass an audio file, or the folder itself to --audio "
                         f"to process every audio file in it")
    soundfile = _soundfile()
    try:
        info = soundfile.info(str(path))  # type: ignore[attr-defined]
    except Exception as error:  # noqa: BLE001 - libsndfile reports every failure as one type
        raise InputError(_unreadable(path, error)) from error
    header = AudioHeader(path, int(info.samplerate), int(info.channels), int(info.frames),
                         str(info.format), str(info.subtype))
    low, high = SAMPLE_RATES
    if not low <= header.sample_rate <= high:
        raise InputError(f"audio file {path} claims a sample rate of {header.sample_rate} Hz, "
                         f"outside {low}-{high} Hz: its header is damaged; export it again, "
                         f"e.g. `ffmpeg -i {path} -ar 16000 -ac 1 fixed.wav`")
    if not 1 <= header.channels <= MOST_CHANNELS:
        raise InputError(f"audio file {path} claims {header.channels} channels (at most "
                         f"{MOST_CHANNELS} are read): its header is damaged; export it again as "
                         f"mono")
    if header.frames <= 0:
        raise InputError(f"audio file {path} holds no samples; record or export it again")
    if header.duration < SHORTEST_SECONDS:
        raise InputError(f"audio file {path} lasts {header.duration * 1000:.0f} ms; the probes "
                         f"need at least {SHORTEST_SECONDS * 1000:.0f} ms of speech")
    decoded = 4 * header.frames * header.channels
    if decoded > DECODED_BYTES:
        raise InputError(f"audio file {path} would take {decoded / 2**30:.1f} GiB decoded "
                         f"({header.duration / 3600:.1f} h, {header.channels} channels; at most "
                         f"{DECODED_BYTES / 2**30:.0f} GiB): cut it into shorter files")
    return header


def read_audio(path: Path) -> Audio:
    """The file's samples, mixed to mono, at its own rate (header checked first by
    :func:`check_audio_file`).

    Raises:
        InputError: missing, unreadable, empty, too short, or a header out of range.
    """
    check_audio_file(path)
    soundfile = _soundfile()
    try:
        samples, sample_rate = soundfile.read(str(path), dtype="float32",  # type: ignore[attr-defined]
                                              always_2d=True)
    except Exception as error:  # noqa: BLE001 - libsndfile reports every failure as one type
        raise InputError(_unreadable(path, error)) from error
    mono = samples.mean(axis=1).astype(np.float32)
    if not np.isfinite(mono).all():
        raise InputError(f"audio file {path} contains NaN or infinite samples; export it again "
                         f"as 16-bit PCM")
    audio = Audio(path, mono, int(sample_rate))
    if audio.duration < SHORTEST_SECONDS:
        raise InputError(f"audio file {path} lasts {audio.duration * 1000:.0f} ms; the probes need "
                         f"at least {SHORTEST_SECONDS * 1000:.0f} ms of speech")
    return audio


def _unreadable(path: Path, error: Exception) -> str:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return (f"cannot read {path} as audio ({reason}); convert it to WAV or FLAC, e.g. "
            f"`ffmpeg -i {path} -ar 16000 -ac 1 {path.with_suffix('.wav').name}`")
