"""attnprobe: hooks, reversal probes and gradient alignment for transformer ASR models.

    import attnprobe
    with attnprobe.trace(model) as t:
        model(features, feature_lengths)
    t["encoder.3.self_attn"].attention   # (batch, heads, query_frames, key_frames)

    attnprobe.reversal_report(model, batch).verdict          # "reversed at block 9"
    attnprobe.gradient_alignment(model, batch, tokens)[0]    # words with times
    print(attnprobe.describe(model))                         # what was found, which probes run
"""

from __future__ import annotations

from .adapters import describe
from .alignment import Alignment, AlignmentSettings, gradient_alignment
from .batch import SpeechBatch
from .errors import (
    AttnprobeError,
    CapabilityError,
    GradientUnavailableError,
    InputError,
    MemoryBudgetExceeded,
    UnsupportedModelError,
)
from .monitor import EncoderFlipWarning, FlipEvent, FlipMonitor, MonitorRecord
from .probes import ReversalReport, reversal_report
from .records import Captured, Record
from .reducers import StreamingReducer
from .sites import SITE_KINDS, Site
from .trace import Trace, trace

__version__ = "0.1.0"

__all__ = [
    "SITE_KINDS",
    "Alignment",
    "AlignmentSettings",
    "AttnprobeError",
    "CapabilityError",
    "Captured",
    "EncoderFlipWarning",
    "FlipEvent",
    "FlipMonitor",
    "GradientUnavailableError",
    "InputError",
    "MemoryBudgetExceeded",
    "MonitorRecord",
    "Record",
    "ReversalReport",
    "Site",
    "SpeechBatch",
    "StreamingReducer",
    "Trace",
    "UnsupportedModelError",
    "describe",
    "gradient_alignment",
    "reversal_report",
    "trace",
]
