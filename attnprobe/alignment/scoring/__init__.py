"""Scoring: how strongly each transcript label depends on each input frame.

- :mod:`.forward`: one teacher-forced pass of any callable (:func:`function_forward`);
  :mod:`.model_forward`: of a model through its runner (:func:`model_forward`).
- :mod:`.gradients`: ``score[s, t] = || d log p(a_s | a_<s, X) / d x_t ||`` for all labels from
  one forward pass (:func:`gradient_scores`), and the one-backward-per-label reference.
- :mod:`.label_batches`: the labels' shared backward passes, in chunks capped by a memory budget.
- :mod:`.smoothing`: :class:`SmoothGrad` and :class:`IntegratedGradients`.
- :mod:`.ctc_term`: the per-label quantity of CTC models (:func:`ctc_label_log_probs`).
"""

from .ctc_term import CTCOccupancy, ctc_label_log_probs, ctc_occupancy
from .forward import ForwardPass, LabelForward, function_forward
from .gradients import GradientScores, gradient_scores, score_matrix, score_matrix_loop
from .label_batches import DEFAULT_MEMORY_BUDGET, label_gradients
from .model_forward import model_forward
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
    "ctc_label_log_probs",
    "ctc_occupancy",
    "function_forward",
    "gradient_scores",
    "label_gradients",
    "model_forward",
    "score_matrix",
    "score_matrix_loop",
]
