"""Gradient attribution of transcript labels to input frames, and alignments built from it.

    from attnprobe.attribution import gradient_alignment
    alignments = gradient_alignment(model.eval(), batch, tokens)     # list[Alignment]

- :mod:`.scores`: ``score[s, t] = || d log p(a_s | a_<s, X) / d x_t ||`` for all labels from one
  forward pass (:func:`gradient_scores`, :func:`function_forward`).
- :mod:`.batching`: the labels' shared backward passes, in chunks capped by a memory budget
  (:func:`label_gradients`).
- :mod:`.smoothing`: :class:`SmoothGrad` and :class:`IntegratedGradients` variants.
- :mod:`.ctc`: the per-label quantity of CTC models (:func:`ctc_label_log_probs`).
- :mod:`.align`: scores -> Viterbi -> words with times (:func:`gradient_alignment`).
"""

from __future__ import annotations

from .align import align_scores, gradient_alignment, model_forward
from .batching import DEFAULT_MEMORY_BUDGET, label_gradients
from .ctc import CTCOccupancy, ctc_label_log_probs, ctc_occupancy
from .scores import (
    ForwardPass,
    GradientScores,
    LabelForward,
    function_forward,
    gradient_scores,
    score_matrix,
    score_matrix_loop,
)
from .smoothing import Attributions, IntegratedGradients, SmoothGrad

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "Attributions",
    "CTCOccupancy",
    "ForwardPass",
    "GradientScores",
    "IntegratedGradients",
    "LabelForward",
    "SmoothGrad",
    "align_scores",
    "ctc_label_log_probs",
    "ctc_occupancy",
    "function_forward",
    "gradient_alignment",
    "gradient_scores",
    "label_gradients",
    "model_forward",
    "score_matrix",
    "score_matrix_loop",
]
