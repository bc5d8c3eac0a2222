"""Reversal probes: does an encoder reverse the time axis, and at which block?

Schmitt et al. (ICASSP 2025) found Conformer encoders that output frame ``t`` with the content of
input frame ``T-1-t``. Each probe measures one face of that (Schmitt et al., ICASSP 2025):

- :func:`cross_attention_monotonicity`: the decoder attends the encoder output backwards;
- :func:`self_attention_diagonality`: a block's self-attention turns anti-diagonal;
- :func:`frame_mapping`: which input frames each block's output frames depend on (any family);
- :func:`gradient_maps`: ``|| d log p(label) / d block output ||`` per label and frame;
- :func:`branch_dominance`: a branch output outgrowing the residual it is added to;
- :func:`reversal_report`: all that applies, combined into one verdict.

The attention and dominance probes also run as streaming reducers
(``attnprobe.trace(model, reducers=[...], store=False)``); see :mod:`attnprobe.probes.streaming`.
"""

from .cross_attention import (
    CrossAttentionMonotonicity,
    CrossAttentionMonotonicityReducer,
    cross_attention_monotonicity,
)
from .diagonality import (
    SelfAttentionDiagonality,
    SelfAttentionDiagonalityReducer,
    self_attention_diagonality,
)
from .dominance import BranchDominance, BranchDominanceReducer, branch_dominance
from .frame_mapping import FrameMapping, frame_mapping
from .gradient_maps import GradientMaps, gradient_maps
from .report import ReversalReport, reversal_report
from .result import ProbeResult
from .statistics import MINIMUM_POSITIONS
from .streaming import StreamingResults, streaming_probes
from .verdict import REVERSAL_THRESHOLD

__all__ = [
    "MINIMUM_POSITIONS",
    "REVERSAL_THRESHOLD",
    "BranchDominance",
    "BranchDominanceReducer",
    "CrossAttentionMonotonicity",
    "CrossAttentionMonotonicityReducer",
    "FrameMapping",
    "GradientMaps",
    "ProbeResult",
    "ReversalReport",
    "SelfAttentionDiagonality",
    "SelfAttentionDiagonalityReducer",
    "StreamingResults",
    "branch_dominance",
    "cross_attention_monotonicity",
    "frame_mapping",
    "gradient_maps",
    "reversal_report",
    "self_attention_diagonality",
    "streaming_probes",
]
