"""80-dimensional log-mel features as the paper's models use (attnprobe's Conformer reads them):
25 ms window, 10 ms shift, 16 kHz.

Computed with torchaudio's Kaldi-compatible filterbank (Povey window, pre-emphasis 0.97, no
dither, so the same audio always gives the same features). Audio in [-1, 1] is scaled to the
16-bit range first, as Kaldi and most speech toolkits expect. Digital silence gives the floor
log(float32 eps) = -15.9 in every bin; the training set adds a low noise floor to avoid it.

Usage::

    features = log_mel(samples)                  # (frames, 80), frames = 1 + (samples - 400) // 160
    features = log_mel(samples, normalise=True)  # zero mean, unit variance per mel bin
"""

from __future__ import annotations

import numpy as np
import torch

SAMPLE_RATE = 16000
MEL_BINS = 80
WINDOW_S = 0.025
SHIFT_S = 0.010
_INT16_SCALE = 32768.0


def frame_count(sample_count: int, sample_rate: int = SAMPLE_RATE) -> int:
    """Frames :func:`log_mel` returns for ``sample_count`` samples (0 if shorter than a window)."""
    window = round(WINDOW_S * sample_rate)
    shift = round(SHIFT_S * sample_rate)
    return 0 if sample_count < window else 1 + (sample_count - window) // shift


def log_mel(
    samples: np.ndarray | torch.Tensor,
    sample_rate: int = SAMPLE_RATE,
    normalise: bool = False,
) -> torch.Tensor:
    """Log-mel filterbank features of mono audio.

    Args:
        samples: (samples,) float audio in [-1, 1].
        sample_rate: rate of ``samples`` in Hz; the models expect 16000.
        normalise: subtract the per-bin mean and divide by the per-bin standard deviation over
            the frames of this utterance.

    Returns:
        (frames, 80) float32; frame ``t`` covers samples ``[t * shift, t * shift + window)``
        with ``shift`` = 10 ms and ``window`` = 25 ms, so frame ``t`` is centred at
        ``t * 0.01 + 0.0125`` seconds.
    """
    import torchaudio.compliance.kaldi

    waveform = torch.as_tensor(samples, dtype=torch.float32).reshape(1, -1)
    if waveform.shape[1] < round(WINDOW_S * sample_rate):
        raise ValueError(
            f"audio of {waveform.shape[1]} samples is shorter than one {WINDOW_S * 1000:.0f} ms "
            f"window at {sample_rate} Hz; pad it with silence"
        )
    features = torchaudio.compliance.kaldi.fbank(
        waveform * _INT16_SCALE,
        num_mel_bins=MEL_BINS,
        frame_length=WINDOW_S * 1000,
        frame_shift=SHIFT_S * 1000,
        sample_frequency=sample_rate,
        dither=0.0,
        energy_floor=0.0,
    )
    if normalise:
        deviation = features.std(dim=0, correction=0).clamp_min(1e-5)
        features = (features - features.mean(dim=0)) / deviation
    return features
