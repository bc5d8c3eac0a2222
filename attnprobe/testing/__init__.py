"""Planting known behaviour in a model, to check that the probes find it.

Every helper is a context manager that works for any model attnprobe has an adapter for (except
:func:`pin_cross_attention`, attnprobe's Conformer AED only), and leaves the model exactly as it
was on exit (normal or by exception)::

    with plant_reversal(model, after_block=3):          # output of encoder.3 reversed in time
        report = attnprobe.reversal_report(model, batch)
    report.reversed_at                                   # 3

    with plant_branch_reversal(model, block=2, scale=3.0, spread=3) as planted:
        report = attnprobe.reversal_report(model, batch)
    planted.answer()                                     # 2: what a perfect probe says

- clean flips (:mod:`attnprobe.testing.plantings`): :func:`plant_permutation` /
  :func:`plant_reversal` (a whole block output), :func:`scale_branch`, :func:`force_attention`
  (what traces see of attention probabilities);
- flips like training's (:mod:`attnprobe.testing.flips`): :func:`plant_branch_reversal` (the
  paper's: an anti-diagonal branch outgrowing the residual), :func:`plant_channel_reversal`,
  :func:`plant_partial_reversal` (shares of frames, spread over blocks), each with a
  :class:`PlantedReversal` that says what a perfect probe answers;
- :func:`pin_cross_attention`: a decoder that aligns without training (``channels=k``: one that
  reads only a subspace of the encoder output, as a trained one does).
"""

from .decoder import pin_cross_attention
from .flips import (
    PlantedReversal,
    cumulative_pairs,
    plant_branch_reversal,
    plant_channel_reversal,
    plant_partial_reversal,
)
from .plantings import (
    PATTERNS,
    Permutation,
    attention_pattern,
    force_attention,
    plant_permutation,
    plant_reversal,
    reversal,
    scale_branch,
)

__all__ = [
    "PATTERNS",
    "Permutation",
    "PlantedReversal",
    "attention_pattern",
    "cumulative_pairs",
    "force_attention",
    "pin_cross_attention",
    "plant_branch_reversal",
    "plant_channel_reversal",
    "plant_partial_reversal",
    "plant_permutation",
    "plant_reversal",
    "reversal",
    "scale_branch",
]
