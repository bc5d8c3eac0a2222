"""Audio files: any format soundfile reads, mixed to mono, resampled with torchaudio to the rate a
model wants. soundfile and torchaudio are imported on first use
(``pip install 'attnprobe[audio]'``).

Usage::

    audio = read_audio(Path("utterance.wav")).at_rate(16000)
    audio.samples                     # (samples,) float32 in [-1, 1]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attnprobe.errors import InputError

SHIPPED_UTTERANCE = Path(__file__).resolve().parent / "assets" / "utterance.wav"
"""A ~3 s utterance shipped with attnprobe (flite voice slt), with its transcript and exact word
times in the sidecar ``utterance.json``."""

SHORTEST_SECONDS = 0.1
"""Shorter audio holds too few frames for any probe (10 feature frames, 1-2 encoder frames)."""


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


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """``(samples,)`` at ``from_rate`` -> float32 at ``to_rate``: torchaudio's band-limited
    windowed-sinc resampling, ``ceil(len(samples) * to_rate / from_rate)`` samples long."""
    if from_rate == to_rate:
        return np.asarray(samples, dtype=np.float32)
    try:
        import torchaudio.functional
    except ImportError as error:
        raise InputError(f"resampling from {from_rate} Hz to {to_rate} Hz needs torchaudio: pip "
                         f"install 'attnprobe[audio]'") from error
    import torch

    waveform = torch.as_tensor(np.asarray(samples), dtype=torch.float32)
    return torchaudio.functional.resample(waveform, from_rate, to_rate).numpy()


def _soundfile() -> object:
    try:
        import soundfile
    except ImportError as error:
        raise InputError("reading audio needs soundfile: pip install 'attnprobe[audio]'") from error
    return soundfile


def check_audio_file(path: Path) -> None:
    """Raise :class:`InputError` unless ``path`` is an audio file soundfile can open (reads only
    the header, so it is cheap enough to run on every input before loading a model)."""
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
    if info.frames == 0:
        raise InputError(f"audio file {path} holds no samples; record or export it again")


def read_audio(path: Path) -> Audio:
    """The file's samples, mixed to mono, at its own rate.

    Raises:
        InputError: missing, unreadable, empty or too short (under 0.1 s) audio.
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
