"""Hyper-parameters of attnprobe's Conformer attention encoder-decoder, and the label conventions.

The defaults are the model in which Schmitt et al. (ICASSP 2025) saw the encoder reverse time:
VGG frontend with 6x time downsampling, 12 Conformer blocks of width 512, a one-layer LSTM decoder
with additive attention, 1k BPE labels. Sizes the paper does not print (target embedding 640,
readout 1024 with maxout over pairs) come from the authors' public RETURNN setup.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

BLANK_INDEX = 0
"""CTC blank, also the padding value of label tensors."""

END_OF_SENTENCE_INDEX = 1
"""Ends every hypothesis; the decoder also starts from it (begin-of-sentence)."""

FIRST_REAL_LABEL = 2
"""Real vocabulary labels are ``FIRST_REAL_LABEL .. vocab_size - 1``."""

HARD_CROSS_ATTENTION_TARGETS = ("centre", "start", "reversed", "diagonal")
"""Where :attr:`ConformerAEDConfig.hard_cross_attention_target` can pin cross-attention."""


@dataclass(frozen=True)
class ConformerAEDConfig:
    """Everything needed to build a :class:`~attnprobe.models.ConformerAED`.

    Frozen, so a model and the config it was built from cannot drift apart; derive variants with
    ``dataclasses.replace(config, ...)`` or :meth:`tiny`.
    """

    n_mels: int = 80
    frontend_channels: tuple[int, ...] = (32, 64)
    time_pools: tuple[int, ...] = (3, 2)
    d_model: int = 512
    heads: int = 8
    ff_dim: int = 2048
    conv_kernel: int = 32
    blocks: int = 12
    dropout: float = 0.1
    rel_pos_clip: int = 16
    abs_pos: bool = False
    vocab_size: int = 1000
    embed_dim: int = 640
    lstm_dim: int = 1024
    attention_dim: int = 1024
    readout_dim: int = 1024
    aux_ctc_blocks: tuple[int, ...] = ()
    """0-based indices of the blocks whose outputs get an auxiliary CTC loss (paper: (3, 7))."""
    self_attention_off_steps: int = 0
    hard_cross_attention_steps: int = 0
    cross_attention_blend_steps: int = 0
    hard_cross_attention_target: str = "centre"
    """Where the hard cross-attention points: ``"centre"`` (the paper's mitigation: every label on
    frame ``floor(T / 2)``), ``"start"`` (every label on frame 0: the paper's explanation of the
    flip starts from a decoder that reads the first frames early in training) or ``"reversed"``
    (label position ``s`` of ``P`` on frame ``round((T - 1) (1 - s / (P - 1)))``, the
    anti-diagonal: forces the encoder to reverse time, to study a flipped model on purpose) or
    ``"diagonal"`` (frame ``round((T - 1) s / (P - 1))``: a decoder that reads in order, which
    :func:`attnprobe.testing.pin_cross_attention` uses to stand in for a trained decoder)."""
    label_smoothing: float = 0.1

    def __post_init__(self) -> None:
        # JSON round trips turn tuples into lists; normalise so equality and hashing still work.
        for name in ("frontend_channels", "time_pools", "aux_ctc_blocks"):
            object.__setattr__(self, name, tuple(int(value) for value in getattr(self, name)))
        self._validate()

    def _validate(self) -> None:
        if len(self.frontend_channels) != len(self.time_pools):
            raise ValueError(
                f"frontend_channels {self.frontend_channels} and time_pools {self.time_pools} must "
                "have one entry per frontend stage; give both the same length"
            )
        if not self.time_pools or min(self.time_pools) < 1:
            raise ValueError(f"time_pools must be positive integers, one per stage; got {self.time_pools}")
        if self.frequency_bins_after_frontend < 1:
            raise ValueError(
                f"{len(self.time_pools)} frontend stages halve the {self.n_mels} mel bins to nothing; "
                "use fewer stages or more mel bins"
            )
        if self.d_model % self.heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by heads {self.heads}; change one")
        if self.readout_dim % 2:
            raise ValueError(f"readout_dim {self.readout_dim} must be even (maxout over pairs)")
        if self.vocab_size <= FIRST_REAL_LABEL:
            raise ValueError(
                f"vocab_size {self.vocab_size} leaves no real labels: index {BLANK_INDEX} is blank and "
                f"{END_OF_SENTENCE_INDEX} is end-of-sentence; use vocab_size > {FIRST_REAL_LABEL}"
            )
        bad_blocks = [block for block in self.aux_ctc_blocks if not 0 <= block < self.blocks]
        if bad_blocks:
            raise ValueError(
                f"aux_ctc_blocks {bad_blocks} are outside the {self.blocks} blocks; indices are 0-based "
                f"(the paper's blocks 4 and 8 are (3, 7))"
            )
        for name in ("self_attention_off_steps", "hard_cross_attention_steps", "cross_attention_blend_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.hard_cross_attention_target not in HARD_CROSS_ATTENTION_TARGETS:
            raise ValueError(f"hard_cross_attention_target must be one of "
                             f"{', '.join(map(repr, HARD_CROSS_ATTENTION_TARGETS))}, got "
                             f"{self.hard_cross_attention_target!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.conv_kernel < 1 or self.rel_pos_clip < 0:
            raise ValueError(
                f"conv_kernel must be >= 1 and rel_pos_clip >= 0; "
                f"got {self.conv_kernel} and {self.rel_pos_clip}"
            )

    @property
    def time_downsampling(self) -> int:
        """Input frames per encoder frame (paper: 6, i.e. 60 ms encoder frames)."""
        return math.prod(self.time_pools)

    @property
    def frequency_bins_after_frontend(self) -> int:
        """Mel bins left after every frontend stage halved them."""
        return self.n_mels // 2 ** len(self.time_pools)

    @classmethod
    def tiny(cls, **overrides: Any) -> ConformerAEDConfig:
        """A model small enough to train on a 2-core CPU; keyword arguments override any field."""
        sizes: dict[str, Any] = dict(
            frontend_channels=(16, 32),
            d_model=96,
            heads=4,
            ff_dim=384,
            conv_kernel=15,
            blocks=6,
            embed_dim=64,
            lstm_dim=192,
            attention_dim=192,
            readout_dim=192,
        )
        sizes.update(overrides)
        return cls(**sizes)

    @classmethod
    def paper(cls, **overrides: Any) -> ConformerAEDConfig:
        """The paper's model (the defaults: 12 Conformer blocks of width 512, 8 heads, FF 2048,
        conv kernel 32, LSTM decoder 1024); keyword arguments override any field. About 15x the
        arithmetic of :meth:`tiny` per frame; meant for a GPU."""
        return cls(**overrides)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable values, for checkpoints."""
        values = dataclasses.asdict(self)
        return {name: list(value) if isinstance(value, tuple) else value for name, value in values.items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ConformerAEDConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error, missing keys take the defaults."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown ConformerAEDConfig fields {unknown}; the checkpoint was written by another "
                f"version of attnprobe. Known fields: {sorted(known)}"
            )
        return cls(**values)
