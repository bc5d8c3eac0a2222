"""The trial forward passes that settle what a Hugging Face model's signature and extractor leave
open (:mod:`.hf_inputs`): the feature size and fixed window it runs with, and the polarity and
dtype of its padding mask. Each trial runs on a little noise, without gradients.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from attnprobe.model_state import side_pass

from .hf_inputs import (
    COMMON_FEATURE_SIZES,
    InputSpec,
    audio_feature_function,
    audio_features,
    main_tensor,
    model_arguments,
    read_inputs,
    synthetic_batch,
)

TRIAL_FRAMES = 64
TRIAL_SAMPLES = 4000
"""Trial forward passes run on this much noise (a quarter second of 16 kHz audio)."""


def describe_inputs(model: nn.Module) -> InputSpec:
    """The :class:`~.hf_inputs.InputSpec` of a Hugging Face model: read, then settled by trial.

    Raises:
        ValueError: the forward signature has no audio argument (the model does not take speech).
    """
    spec = read_inputs(model)
    if not spec.takes_waveform:
        _settle_feature_size(model, spec, spec.configured_feature_size)
    _settle_mask(model, spec)
    return spec


def _settle_feature_size(model: nn.Module, spec: InputSpec, configured: int | None) -> None:
    """Keep the first feature size (and, for a fixed window, window length) with which the model
    runs, without its mask (which may be at another rate) unless it needs one."""
    windows: list[int | None] = [spec.fixed_frames]
    if spec.fixed_frames is not None:
        positions = [*_config_ints(model.config, "max_source_positions"),
                     *_config_ints(model.config, "max_position_embeddings")]
        windows = list(dict.fromkeys([spec.fixed_frames, *(2 * value for value in positions),
                                      *positions, *_config_ints(model.config, "max_length")]))
    sizes = [size for size in dict.fromkeys([spec.feature_size, configured,
                                             *COMMON_FEATURE_SIZES]) if size is not None]
    mask, spec.mask_argument = spec.mask_argument, None
    first = (spec.fixed_frames, spec.feature_size)
    try:
        for window in windows:
            for size in sizes:
                spec.fixed_frames, spec.feature_size = window, size
                if _runs(model, spec, mask):
                    if size != first[1]:
                        spec.notes.append(f"feature size {size} found by trial (the extractor "
                                          f"gives {first[1]}, the config says {configured})")
                    if window != first[0]:
                        spec.notes.append(f"window of {window} frames found by trial (the "
                                          f"extractor pads to {first[0]})")
                    return
        spec.fixed_frames, spec.feature_size = first
        spec.notes.append(f"no feature size of {sizes} runs without a mask")
    finally:
        spec.mask_argument = mask


def _config_ints(config: Any, name: str) -> list[int]:
    """Every integer ``name`` in ``config`` and its sub-configs."""
    found, pending = [], [config]
    while pending:
        current = pending.pop(0)
        value = getattr(current, name, None)
        if isinstance(value, int):
            found.append(value)
        pending += [value for value in vars(current).values()
                    if hasattr(value, "to_dict") and hasattr(value, "model_type")]
    return found


def _runs(model: nn.Module, spec: InputSpec, mask: str | None) -> bool:
    """Whether the model runs on noise shaped by ``spec``: without a mask, or else with an
    all-valid ``mask`` (some models require one)."""
    batch = synthetic_batch(spec, [min(TRIAL_FRAMES, spec.fixed_frames or TRIAL_FRAMES)])
    arguments = model_arguments(model, spec, batch)
    frames = batch.inputs.shape[1] if spec.fixed_frames is None else spec.fixed_frames
    trials: list[dict[str, Any]] = [{}]
    if mask is not None:
        trials += [{mask: torch.ones(1, frames, dtype=dtype)} for dtype in (torch.long, torch.bool)]
    # A speech LLM runs its audio tower alone: its forward also wants the audio tokens.
    tower = spec.token_argument is not None and audio_feature_function(model) is not None
    for extra in trials:
        try:
            with side_pass(model):
                if tower:
                    audio_features(model, spec, {**arguments, **extra})
                else:
                    model(**arguments, **extra)
        except Exception:  # noqa: BLE001 (any failure means this shape is not the model's)
            continue
        return True
    return False


def _settle_mask(model: nn.Module, spec: InputSpec) -> None:
    """Measure the mask's polarity and dtype (module docstring)."""
    if spec.mask_argument is None:
        return
    name = spec.mask_argument
    batch = synthetic_batch(spec, [spec.fixed_frames or (TRIAL_SAMPLES if spec.takes_waveform
                                                          else TRIAL_FRAMES)])
    arguments = model_arguments(model, spec, batch)
    shape = arguments[name].shape
    without = {key: value for key, value in arguments.items() if key != name}
    outputs: dict[tuple[bool, torch.dtype], torch.Tensor] = {}
    with side_pass(model):
        try:
            reference: torch.Tensor | None = main_tensor(model(**without))
        except Exception:  # noqa: BLE001 (the mask is required)
            reference = None
        for valid_is_one in (True, False):
            for dtype in (torch.long, torch.bool):
                mask = (torch.ones if valid_is_one else torch.zeros)(shape, dtype=dtype)
                try:
                    outputs[(valid_is_one, dtype)] = main_tensor(model(**without, **{name: mask}))
                except Exception:  # noqa: BLE001 (this dtype or polarity is refused)
                    continue
    if not outputs:
        if reference is not None:
            spec.notes.append(f"{name} is refused at the input frame rate (it is at another "
                              f"rate): left out, so padding is not masked")
            spec.mask_argument = None
        return
    if reference is not None:
        same = [key for key, output in outputs.items() if output.shape == reference.shape
                and torch.allclose(output, reference, atol=1e-5)]
        if len({valid_is_one for valid_is_one, _ in same}) == 1:
            chosen = same[0]
        else:
            chosen = next(iter(outputs))
            spec.notes.append(f"{name}: the model gives the same output with an all-valid and an "
                              f"all-padding mask, so its polarity is assumed (1 = valid)")
    else:
        usable = [key for key, output in outputs.items()
                  if torch.isfinite(output).all() and output.float().std() > 1e-6]
        chosen = usable[0] if usable else next(iter(outputs))
    spec.mask_valid_is_one, spec.mask_dtype = chosen
