"""Cross-attention monotonicity: does the decoder read the encoder output forwards or backwards?

For every decoder layer and head, each label's centre of mass over the encoder frames is ranked
against the label index (Spearman). An unflipped trained model attends later frames for later labels
(+1); a model whose encoder reversed time attends them in decreasing order (-1; paper section 3.1).

Usage, on stored records or streaming::

    with attnprobe.trace(model, kind="cross_attn") as t:
        model(features, feature_lengths, labels, label_lengths)
    cross_attention_monotonicity(t).verdict            # "monotone", "reversed" or "not monotone"

    reducer = CrossAttentionMonotonicityReducer()
    with attnprobe.trace(model, kind="cross_attn", reducers=[reducer], store=False):
        model(features, feature_lengths, labels, label_lengths)
    reducer.result()                                   # the same result, O(layers x heads) memory
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from attnprobe.errors import CapabilityError, InputError
from attnprobe.lengths import full_lengths
from attnprobe.records import Captured, RecordSource, records_of
from attnprobe.reducers import replay
from attnprobe.sites import Site

from .result import ProbeResult
from .statistics import centre_of_mass, rank_correlation_with_position, require_positions
from .verdict import REVERSAL_THRESHOLD


@dataclass(repr=False)
class CrossAttentionMonotonicity(ProbeResult):
    """Spearman correlation of label index with attended encoder frame.

    Attributes:
        sites: the cross-attention sites, one per decoder layer, in layer order.
        per_sequence: ``(sequences, layers, heads)`` correlations in [-1, 1]; NaN where a layer has
            fewer heads than the widest one.
        threshold: see :data:`attnprobe.probes.result.REVERSAL_THRESHOLD`.
        example: ``(labels, frames)`` attention of the first sequence in the last layer, averaged
            over heads, over the positions that were ranked (for plots).
        notes: caveats found while reading the records (e.g. unknown lengths).
    """

    sites: list[str]
    per_sequence: np.ndarray
    threshold: float = REVERSAL_THRESHOLD
    example: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    derived: ClassVar[tuple[str, ...]] = ("scores", "overall", "verdict")

    @property
    def scores(self) -> np.ndarray:
        """``(layers, heads)`` correlations averaged over sequences."""
        return self.per_sequence.mean(axis=0)

    @property
    def overall(self) -> float:
        """Mean over layers and heads. Models with many heads that do not align (Whisper) dilute
        it; look at :attr:`scores` for the alignment heads."""
        return float(np.nanmean(self.scores))

    @property
    def verdict(self) -> str:
        """``"reversed"`` (overall <= -threshold), ``"monotone"`` (>= threshold) or
        ``"not monotone"`` (untrained decoder, or one that does not align)."""
        if self.overall <= -self.threshold:
            return "reversed"
        if self.overall >= self.threshold:
            return "monotone"
        return "not monotone"

    def summary(self) -> str:
        lines = [f"cross-attention monotonicity: {self.verdict} (mean Spearman "
                 f"{self.overall:+.2f}, threshold +-{self.threshold}, "
                 f"{self.per_sequence.shape[0]} sequences)"]
        for site, row in zip(self.sites, self.scores):
            heads = " ".join(f"{value:+.2f}" for value in row if not np.isnan(value))
            lines.append(f"  {site}: {heads}")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


class CrossAttentionMonotonicityReducer:
    """Streaming version: folds each cross-attention call into per-sequence correlations.

    Args:
        exclude_end: leave out the last valid decoder position of every sequence (the
            end-of-sequence prediction, which attends wherever the model looks for silence).
        threshold: see :data:`attnprobe.probes.result.REVERSAL_THRESHOLD`.
        first_label_position: decoder positions before the one that predicts the first label
            (a prompt of ``P`` tokens, as Hugging Face encoder-decoders take, has ``P - 1``).
    """

    def __init__(self, exclude_end: bool = True, threshold: float = REVERSAL_THRESHOLD,
                 first_label_position: int = 0) -> None:
        self.exclude_end = exclude_end
        self.threshold = threshold
        self.first_label_position = first_label_position
        self._scores: dict[Site, list[np.ndarray]] = {}
        self._examples: dict[Site, np.ndarray] = {}
        self._notes: list[str] = []

    def update(self, site: Site, what: str, captured: Captured) -> None:
        if site.kind != "cross_attn" or what != "attention":
            return
        scores, example = monotonicity_of_call(captured, self.exclude_end,
                                               self.first_label_position)
        self._scores.setdefault(site, []).append(scores)
        self._examples.setdefault(site, example)
        if not captured.lengths_known and captured.value.shape[0] > 1:
            note = (f"{site.name}: valid lengths unknown, so padded label positions and frames "
                    f"were ranked too; call the model itself (not a submodule) inside the trace")
            if note not in self._notes:
                self._notes.append(note)

    def result(self) -> CrossAttentionMonotonicity:
        """The result over every call seen so far.

        Raises:
            CapabilityError: no cross-attention was captured (encoder-only model, or no labels).
        """
        if not self._scores:
            raise CapabilityError(
                "no cross-attention was captured: cross-attention monotonicity needs an "
                "attention decoder run teacher-forced (pass labels). For encoder-only or CTC "
                "models use attnprobe.probes.frame_mapping, which needs no decoder")
        sites = sorted(self._scores, key=lambda site: (site.layer is None, site.layer, site.name))
        per_site = [np.concatenate(self._scores[site], axis=0) for site in sites]
        sequences = {scores.shape[0] for scores in per_site}
        if len(sequences) != 1:
            raise InputError(
                f"decoder layers ran for different numbers of sequences {sorted(sequences)}; "
                f"trace whole forward passes of the model")
        heads = max(scores.shape[1] for scores in per_site)
        per_sequence = np.full((sequences.pop(), len(sites), heads), np.nan)
        for layer, scores in enumerate(per_site):
            per_sequence[:, layer, : scores.shape[1]] = scores
        return CrossAttentionMonotonicity(
            sites=[site.name for site in sites], per_sequence=per_sequence,
            threshold=self.threshold, example=self._examples[sites[-1]], notes=list(self._notes))


def monotonicity_of_call(captured: Captured, exclude_end: bool = True,
                         first_label_position: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Correlations of one cross-attention call.

    Args:
        captured: attention ``(batch, heads, label_positions, encoder_frames)`` with decoder
            ``lengths`` and encoder ``key_lengths``.
        exclude_end: drop the last valid label position of each sequence.
        first_label_position: drop this many positions at the start (prompt positions).

    Returns:
        ``(batch, heads)`` Spearman correlations, and the first sequence's head-averaged map
        ``(labels, frames)``.
    """
    attention = captured.value.detach().float()
    batch, heads, _, frames = attention.shape
    label_counts = captured.lengths - (1 if exclude_end else 0) - first_label_position
    key_lengths = captured.key_lengths if captured.key_lengths is not None else \
        full_lengths(batch, frames)
    what = "label positions" + (" (end of sequence excluded)" if exclude_end else "")
    fix = ("teacher-force more labels in one forward call (cross-attention captured one "
           "decoding step at a time cannot be ranked)")
    require_positions(label_counts, what, fix)
    require_positions(key_lengths, "encoder frames", "use longer inputs")
    scores = np.empty((batch, heads))
    example = np.empty(0)
    for index in range(batch):
        count, length = int(label_counts[index]), int(key_lengths[index])
        rows = attention[index, :, first_label_position : first_label_position + count, :length]
        centres = centre_of_mass(rows).cpu().numpy()
        scores[index] = [rank_correlation_with_position(centres[head]) for head in range(heads)]
        if index == 0:
            example = rows.mean(0).cpu().numpy()
    return scores, example


def cross_attention_monotonicity(source: RecordSource, exclude_end: bool = True,
                                 threshold: float = REVERSAL_THRESHOLD,
                                 first_label_position: int = 0) -> CrossAttentionMonotonicity:
    """Cross-attention monotonicity from stored records (a trace of a teacher-forced forward).

    Args:
        source: a trace, ``{name: Record}`` or records; their ``cross_attn`` attentions are used.
        exclude_end: leave out each sequence's end-of-sequence position.
        threshold: |Spearman| beyond which the verdict is monotone or reversed.
        first_label_position: decoder positions before the one predicting the first label.

    Raises:
        CapabilityError: the records hold no cross-attention (encoder-only model).
        InputError: fewer than 4 labels or frames in a sequence.
    """
    reducer = CrossAttentionMonotonicityReducer(exclude_end, threshold, first_label_position)
    replay(records_of(source), reducer)
    return reducer.result()
