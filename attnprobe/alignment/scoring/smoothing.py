"""Smoothed gradient scores: SmoothGrad and Integrated Gradients.

Plain gradients are noisy (one point of a non-linear function); the SLT 2026 follow-up of the
alignment paper uses two standard remedies as variants:

- :class:`SmoothGrad` (Smilkov et al., 2017): average the gradient over copies of the input with
  Gaussian noise added.
- :class:`IntegratedGradients` (Sundararajan et al., 2017): average the gradient along the straight
  path from a baseline input to the actual one and multiply by ``input - baseline``; the
  attributions of a label then sum to ``log p(input) - log p(baseline)`` (completeness).

Both run one forward pass per sample (per noise draw, per path point) and, per pass, the gradients
of all labels in one batched backward, exactly like
:func:`~attnprobe.alignment.scoring.gradients.gradient_scores`.
The scored input is whatever ``forward`` scores: the features or the encoder input.

Usage::

    forward = model_forward(model, batch, input="features")
    scores = SmoothGrad(samples=16, noise_level=0.1).scores(forward)       # GradientScores
    scores = IntegratedGradients(steps=32).scores(forward)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from attnprobe.lengths import valid_mask

from .forward import ForwardPass, InputTransform, LabelForward
from .gradients import (
    GradientScores,
    check_alignable,
    check_finite_log_probs,
    check_norm,
    finish_scores,
    frame_norms,
)
from .label_batches import DEFAULT_MEMORY_BUDGET, label_gradients, largest_chunk


@dataclass
class Attributions:
    """Per-feature attributions of every label.

    Attributes:
        values: ``(batch, labels, frames, *features)``; 0 on padded labels, any value on padded
            frames.
        label_lengths / frame_lengths: ``(batch,)`` valid labels / frames.
        subsampling: input feature frames per frame of ``values``.
    """

    values: torch.Tensor
    label_lengths: torch.Tensor
    frame_lengths: torch.Tensor
    subsampling: int

    def scores(self, p: float = 2.0) -> GradientScores:
        """Lp norm over the features of every frame: a score matrix."""
        check_norm(p)
        norms = frame_norms(self.values.transpose(0, 1), p).transpose(0, 1)
        return GradientScores(finish_scores(norms, self.label_lengths, self.frame_lengths),
                              self.label_lengths, self.frame_lengths, self.subsampling)


@dataclass(frozen=True)
class SmoothGrad:
    """Average the gradient over noisy copies of the scored input.

    Attributes:
        samples: noise draws (forward passes).
        noise_level: noise standard deviation as a fraction of each item's value range over its
            valid frames (Smilkov et al. found 0.1 to 0.2 good for images).
        seed: seeds the noise, so scores are reproducible.
    """

    samples: int = 16
    noise_level: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.samples < 1 or not self.noise_level >= 0:
            raise ValueError(f"SmoothGrad(samples={self.samples}, noise_level={self.noise_level}): "
                             f"use samples >= 1 and noise_level >= 0 (e.g. 16 and 0.1)")

    def attributions(self, forward: LabelForward, *, chunk_size: int | None = None,
                     memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
                     require_alignable: bool = False) -> Attributions:
        """Mean gradient over the noise draws, ``(batch, labels, frames, *features)``."""
        transforms = [self._noise(draw) for draw in range(self.samples)]
        total, first = _summed_gradients(forward, transforms, chunk_size, memory_budget,
                                         require_alignable)
        return _attributions(total / self.samples, first, forward)

    def scores(self, forward: LabelForward, *, p: float = 2.0, chunk_size: int | None = None,
               memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
               require_alignable: bool = False) -> GradientScores:
        """The norm over features of :meth:`attributions`: ``(batch, labels, frames)`` scores."""
        return self.attributions(forward, chunk_size=chunk_size, memory_budget=memory_budget,
                                 require_alignable=require_alignable).scores(p)

    def _noise(self, draw: int) -> InputTransform:
        def add_noise(values: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
            valid = _valid_frames(values, frame_lengths)
            spread = _per_item(values, valid, torch.amax) - _per_item(values, valid, torch.amin)
            generator = torch.Generator(device=values.device).manual_seed(self.seed + draw)
            noise = torch.randn(values.shape, generator=generator, device=values.device,
                                dtype=values.dtype)
            return torch.where(valid, values + self.noise_level * spread * noise, values)

        return add_noise


@dataclass(frozen=True)
class IntegratedGradients:
    """Path-integrated gradients from a baseline input to the actual one.

    Attributes:
        steps: points on the path (forward passes), at the midpoints ``(k + 0.5) / steps``.
        baseline: ``"zeros"``; ``"minimum"``: every value of an item set to its minimum over the
            valid frames (for log-mel features, a flat input at the silence floor); or a number.
    """

    steps: int = 16
    baseline: Literal["zeros", "minimum"] | float = "zeros"

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"IntegratedGradients(steps={self.steps}): use steps >= 1 (e.g. 16)")
        if isinstance(self.baseline, str) and self.baseline not in ("zeros", "minimum"):
            raise ValueError(f"IntegratedGradients(baseline={self.baseline!r}): use 'zeros', "
                             f"'minimum' or a number")

    def attributions(self, forward: LabelForward, *, chunk_size: int | None = None,
                     memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
                     require_alignable: bool = False) -> Attributions:
        """``(input - baseline) * mean path gradient``, ``(batch, labels, frames, *features)``.

        Summed over frames and features, label ``s``'s attributions approach
        ``log p(a_s | input) - log p(a_s | baseline)`` as ``steps`` grows.
        """
        endpoints: list[torch.Tensor] = []
        transforms = [self._path_point((step + 0.5) / self.steps, endpoints)
                      for step in range(self.steps)]
        total, first = _summed_gradients(forward, transforms, chunk_size, memory_budget,
                                         require_alignable)
        difference = endpoints[0] - endpoints[1]
        return _attributions(total / self.steps * difference[None], first, forward)

    def scores(self, forward: LabelForward, *, p: float = 2.0, chunk_size: int | None = None,
               memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
               require_alignable: bool = False) -> GradientScores:
        """The norm over features of :meth:`attributions`: ``(batch, labels, frames)`` scores."""
        return self.attributions(forward, chunk_size=chunk_size, memory_budget=memory_budget,
                                 require_alignable=require_alignable).scores(p)

    def baseline_for(self, values: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
        """The baseline input for ``values`` ``(batch, frames, *features)``; padding kept as is."""
        valid = _valid_frames(values, frame_lengths)
        if self.baseline == "zeros":
            baseline = torch.zeros_like(values)
        elif self.baseline == "minimum":
            baseline = _per_item(values, valid, torch.amin).expand_as(values)
        else:
            baseline = torch.full_like(values, float(self.baseline))
        return torch.where(valid, baseline, values)

    def _path_point(self, fraction: float, endpoints: list[torch.Tensor]) -> InputTransform:
        def interpolate(values: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
            baseline = self.baseline_for(values, frame_lengths)
            if not endpoints:
                endpoints.extend([values, baseline])
            return baseline + fraction * (values - baseline)

        return interpolate


def _summed_gradients(
    forward: LabelForward,
    transforms: Sequence[InputTransform],
    chunk_size: int | None,
    memory_budget: int | None,
    require_alignable: bool,
) -> tuple[torch.Tensor, ForwardPass]:
    """Sum over ``transforms`` of the label gradients ``(labels, batch, frames, *features)``.

    Holds one gradient per label and input value: ``labels x`` the scored input's size.
    """
    total: torch.Tensor | None = None
    first: ForwardPass | None = None
    for transform in transforms:
        result = forward(transform)
        if first is None:
            first = result
            if require_alignable:
                check_alignable(result.label_lengths, result.frame_lengths)
        check_finite_log_probs(result.label_log_probs, result.label_lengths)
        largest = largest_chunk(result.saved_bytes, result.target,
                                result.label_log_probs.shape[1], memory_budget)
        gradients = label_gradients(result.label_log_probs, result.target,
                                    chunk_size=chunk_size, max_chunk_size=largest)
        total = gradients if total is None else total + gradients
    assert total is not None and first is not None
    return total, first


def _attributions(values: torch.Tensor, first: ForwardPass, forward: LabelForward
                  ) -> Attributions:
    """``(labels, batch, ...)`` summed gradients -> :class:`Attributions` (batch first)."""
    labels = values.shape[0]
    label_valid = valid_mask(first.label_lengths.to(values.device), labels)
    batch_first = values.transpose(0, 1)
    mask = label_valid.reshape(*label_valid.shape, *([1] * (batch_first.dim() - 2)))
    return Attributions(batch_first.masked_fill(~mask, 0.0), first.label_lengths,
                        first.frame_lengths, forward.subsampling)


def _valid_frames(values: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
    """``(batch, frames, 1, ...)`` bool, broadcastable against ``values``."""
    frames = torch.arange(values.shape[1], device=values.device)
    valid = frames < frame_lengths.to(values.device)[:, None]
    return valid.reshape(*valid.shape, *([1] * (values.dim() - 2)))


def _per_item(values: torch.Tensor, valid: torch.Tensor,
              reduce: Callable[..., torch.Tensor]) -> torch.Tensor:
    """``reduce`` (amax / amin) of each item over its valid frames, shaped ``(batch, 1, ...)``."""
    fill = -math.inf if reduce is torch.amax else math.inf
    dims = tuple(range(1, values.dim()))
    return reduce(values.masked_fill(~valid, fill), dim=dims, keepdim=True)
