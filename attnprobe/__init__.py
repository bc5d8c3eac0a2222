"""attnprobe: hooks, reversal probes and gradient alignment for transformer ASR models.

    import attnprobe
    with attnprobe.trace(model) as t:
        model(features, feature_lengths)
    t["encoder.3.self_attn"].attention   # (batch, heads, query_frames, key_frames)
"""

from __future__ import annotations

from .errors import (
    AttnprobeError,
    CapabilityError,
    GradientUnavailableError,
    InputError,
    MemoryBudgetExceeded,
    UnsupportedModelError,
)
from .batch import SpeechBatch
from .records import Captured, Record
from .reducers import StreamingReducer
from .sites import SITE_KINDS, Site
from .trace import Trace, trace
from .probes import reversal_report
from .monitor import EncoderFlipWarning, FlipEvent, FlipMonitor

__version__ = "0.1.0"

__all__ = [
    "SITE_KINDS",
    "AttnprobeError",
    "CapabilityError",
    "EncoderFlipWarning",
    "FlipEvent",
    "FlipMonitor",
    "SpeechBatch",
    "Captured",
    "GradientUnavailableError",
    "InputError",
    "MemoryBudgetExceeded",
    "Record",
    "Site",
    "StreamingReducer",
    "Trace",
    "UnsupportedModelError",
    "reversal_report",
    "trace",
]
