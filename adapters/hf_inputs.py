"""How a Hugging Face speech model takes a batch, read from the model itself: its forward
signature, its config and its family's feature extractor — no per-family code.

:func:`read_inputs` and :func:`.hf_input_trials.describe_inputs` give an :class:`InputSpec`:

- the **audio argument**: ``model.main_input_name`` unless it is ``input_ids``, else the first
  forward parameter among :data:`AUDIO_ARGUMENTS`;
- its **layout**, from the feature extractor of the model's type (built with its defaults and the
  config's feature size, offline) run on 1 s and 2 s of noise: a rank-2 output is a waveform
  ``(batch, samples)``, ``(batch, 1, samples)`` a waveform with a channel axis; a rank-3 output
  holds features, the frames axis being the one that grew — or, where neither grew (the extractor
  pads to a fixed window, Whisper's 3000 frames), the one that is not the feature axis;
- the **frame shift**: one second over the frames the second second added (10 ms for mel
  features, 20 ms where the extractor stacks frames, ``1 / rate`` for waveforms); ``None`` where no
  extractor runs;
- the **feature size**: the extractor's, else the config's, else 80 / 128 / ... — the first with
  which a forward pass runs;
- the **padding mask**: ``attention_mask`` or an audio mask argument, with its polarity and dtype
  measured: the one whose all-valid mask reproduces the output without a mask (or, for a required
  mask, gives a finite, non-constant output). A mask the model refuses at the input frame rate is
  left out;
- **decoder inputs**: ``decoder_input_ids`` with the decoder start token (generation config,
  config, then ``bos``, then ``pad`` — the blank that starts RNN-T / TDT decoders); for a speech
  LLM, ``input_ids`` holding the audio placeholder token.

:func:`model_arguments` turns a :class:`~attnprobe.batch.SpeechBatch` into forward keyword
arguments according to the spec.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from attnprobe.batch import SpeechBatch
from attnprobe.lengths import valid_mask

AUDIO_ARGUMENTS = ("input_values", "input_features", "audio_mel", "audio_values", "inputs",
                   "audio_input_features", "input_audio_features")
AUDIO_MASKS = ("input_features_mask", "feature_attention_mask", "audio_mel_mask",
               "input_values_mask", "audio_attention_mask", "padding_mask")
FEATURE_SIZE_KEYS = ("num_mel_bins", "input_feat_per_channel", "feature_projection_input_dim",
                     "input_feat_size", "input_dim", "feature_size", "n_mels", "num_mels")
COMMON_FEATURE_SIZES = (80, 128, 64, 40)


@dataclass
class InputSpec:
    """How one Hugging Face model takes speech (see the module docstring).

    Attributes:
        audio_argument: the forward parameter the audio goes to.
        layout: ``"waveform"`` ``(batch, samples)``, ``"channel_waveform"`` ``(batch, 1,
            samples)``, ``"frames"`` ``(batch, frames, features)`` or ``"transposed"`` ``(batch,
            features, frames)``: how the model takes it. ``batch.inputs`` is always ``(batch,
            samples)`` or ``(batch, frames, features)``.
        feature_size: features per frame (``None`` for waveforms).
        fixed_frames: the window every input is padded to, where the extractor pads to one.
        frame_shift_seconds: seconds per frame of ``batch.inputs``, or ``None``.
        padding_value: what the extractor pads with.
        mask_argument / mask_valid_is_one / mask_dtype: the padding mask, as measured.
        decoder_argument / decoder_mask_argument / decoder_start: teacher forcing of an
            encoder-decoder.
        token_argument / audio_token_id: a speech LLM's token input and audio placeholder.
        configured_feature_size: features per frame as the config states them.
        notes: what was guessed or found by trial.
    """

    audio_argument: str
    layout: str = "frames"
    feature_size: int | None = None
    fixed_frames: int | None = None
    frame_shift_seconds: float | None = None
    padding_value: float = 0.0
    mask_argument: str | None = None
    mask_valid_is_one: bool = True
    mask_dtype: torch.dtype = torch.long
    decoder_argument: str | None = None
    decoder_mask_argument: str | None = None
    decoder_start: int | None = None
    token_argument: str | None = None
    audio_token_id: int | None = None
    configured_feature_size: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def takes_waveform(self) -> bool:
        return self.layout in ("waveform", "channel_waveform")


def read_inputs(model: nn.Module) -> InputSpec:
    """The :class:`InputSpec` of a Hugging Face model as its signature, config and extractor
    state it, before the trial forward passes (:mod:`.hf_input_trials`) settle the feature size
    and the mask.

    Raises:
        ValueError: the forward signature has no audio argument (the model does not take speech).
    """
    parameters = inspect.signature(model.forward).parameters
    main = getattr(model, "main_input_name", None)
    audio = main if main in parameters and main != "input_ids" else next(
        (name for name in AUDIO_ARGUMENTS if name in parameters), None)
    if audio is None:
        raise ValueError(f"{type(model).__name__}.forward takes no audio: none of its parameters "
                         f"({', '.join(list(parameters)[:8])}, ...) is one of {AUDIO_ARGUMENTS}")
    spec = InputSpec(audio)
    configured = configured_feature_size(model.config)
    _read_extractor(model, spec, configured)
    if "input_ids" in parameters and audio != "input_ids":
        spec.token_argument = "input_ids"
        spec.audio_token_id = _first_int(model.config, ("audio_token_id", "audio_token_index",
                                                        "audio_token"))
        spec.mask_argument = next((name for name in AUDIO_MASKS if name in parameters), None)
    else:
        spec.mask_argument = next((name for name in ("attention_mask", *AUDIO_MASKS)
                                   if name in parameters), None)
    if "decoder_input_ids" in parameters:
        spec.decoder_argument = "decoder_input_ids"
        if "decoder_attention_mask" in parameters:
            spec.decoder_mask_argument = "decoder_attention_mask"
        for name in ("decoder_start_token_id", "bos_token_id", "pad_token_id"):
            spec.decoder_start = generation_setting(model, name)
            if spec.decoder_start is not None:
                break
    spec.configured_feature_size = configured
    return spec


def feature_extractor_class(model: nn.Module) -> str | None:
    """The feature extractor class name of ``model``'s type, of the type it is a part of
    (``x_encoder`` -> ``x``), or of another type from the same python package."""
    from transformers.models.auto import configuration_auto, feature_extraction_auto

    extractors = dict(feature_extraction_auto.FEATURE_EXTRACTOR_MAPPING_NAMES)
    model_type = getattr(model.config, "model_type", "")
    for candidate in (model_type, re.sub(r"_(encoder|audio|ctc)$", "", model_type)):
        if candidate in extractors:
            return extractors[candidate]
    package = type(model).__module__.rsplit(".", 1)[0]
    for other in extractors:
        config = configuration_auto.CONFIG_MAPPING_NAMES.get(other)
        if config and _module_of(other).startswith(package):
            return extractors[other]
    return None


def _module_of(model_type: str) -> str:
    from transformers.models.auto.configuration_auto import model_type_to_module_name

    return f"transformers.models.{model_type_to_module_name(model_type)}"


def _read_extractor(model: nn.Module, spec: InputSpec, configured: int | None) -> None:
    """Layout, frame shift, fixed window, feature size and padding value from the extractor."""
    name = feature_extractor_class(model)
    wants_features = "feature" in spec.audio_argument or "mel" in spec.audio_argument
    shapes = extractor = None
    if name is not None:
        try:
            extractor, shapes = _run_extractor(name, spec.audio_argument, configured)
        except Exception as error:  # noqa: BLE001 (extractors need optional libraries, files)
            spec.notes.append(f"{name} does not run offline ({type(error).__name__}: {error})")
    if shapes is not None and (len(shapes[0]) == 2 or shapes[0][1] == shapes[1][1] == 1):
        if wants_features:
            spec.notes.append(f"{name} gives waveforms but the model takes {spec.audio_argument}: "
                              f"the extractor of its type is not the one it was trained with")
            shapes = None
        else:
            spec.layout = "waveform" if len(shapes[0]) == 2 else "channel_waveform"
            spec.frame_shift_seconds = 1 / extractor.sampling_rate
    if shapes is not None and len(shapes[0]) == 3 and not spec.takes_waveform:
        one, two = shapes
        grew = [axis for axis in (1, 2) if two[axis] != one[axis]]
        if grew:
            frames_axis = grew[0]
            spec.frame_shift_seconds = 1.0 / (two[frames_axis] - one[frames_axis])
        else:
            size = getattr(extractor, "feature_size", None)
            frames_axis = 2 if one[1] == size else 1
            spec.fixed_frames = one[frames_axis]
            hop = getattr(extractor, "hop_length", None)
            spec.frame_shift_seconds = hop / extractor.sampling_rate if hop else None
        spec.layout = "frames" if frames_axis == 1 else "transposed"
        spec.feature_size = one[3 - frames_axis]
        spec.padding_value = float(getattr(extractor, "padding_value", 0.0) or 0.0)
    elif shapes is None and not wants_features:
        spec.layout = "waveform"
        rate = getattr(model.config, "sampling_rate", None) or 16000
        spec.frame_shift_seconds = 1 / rate
        spec.notes.append(f"no feature extractor ran: waveforms at {rate} Hz assumed")
    elif shapes is None:
        spec.notes.append("no feature extractor ran: (batch, frames, features) assumed, frame "
                          "shift unknown")


def _run_extractor(name: str, audio_argument: str, configured: int | None
                   ) -> tuple[Any, list[tuple[int, ...]]]:
    import numpy as np
    import transformers

    extractor_class = getattr(transformers, name)
    extractor = extractor_class()
    if configured is not None and getattr(extractor, "feature_size", configured) != configured:
        try:
            extractor = extractor_class(feature_size=configured)
        except (TypeError, ValueError):
            pass
    rate = int(extractor.sampling_rate)
    noise = np.random.default_rng(0)
    shapes = []
    key = None
    for seconds in (1, 2):
        wave = (noise.standard_normal(rate * seconds) * 0.1).astype(np.float32)
        out = extractor(wave, sampling_rate=rate, return_tensors="pt")
        if key is None:
            floats = [name for name, value in out.items()
                      if isinstance(value, torch.Tensor) and value.is_floating_point()]
            key = audio_argument if audio_argument in floats else (
                "input_features" if "input_features" in floats else floats[0])
        shapes.append(tuple(out[key].shape))
    return extractor, shapes


def configured_feature_size(config: Any) -> int | None:
    """Features per frame as the config (or a sub-config) states it, or ``None``."""
    values: dict[str, int] = {}
    pending = [config]
    while pending:
        current = pending.pop(0)
        for key, value in vars(current).items():
            if hasattr(value, "to_dict") and hasattr(value, "model_type"):
                pending.append(value)
            elif key in FEATURE_SIZE_KEYS and isinstance(value, int) and key not in values:
                values[key] = value
    if "input_feat_per_channel" in values:
        return values["input_feat_per_channel"] * getattr(config, "input_channels", 1)
    return next((values[key] for key in FEATURE_SIZE_KEYS if key in values), None)


def generation_setting(model: nn.Module, name: str) -> Any:
    """``name`` from the generation config, the config or its decoder / text sub-config."""
    value = getattr(getattr(model, "generation_config", None), name, None)
    config = model.config
    for source in (config, getattr(config, "decoder", None), getattr(config, "text_config", None)):
        if value is None and source is not None:
            value = getattr(source, name, None)
    return value[0] if isinstance(value, (list, tuple)) and value else value


def _first_int(config: Any, names: tuple[str, ...]) -> int | None:
    return next((getattr(config, name) for name in names
                 if isinstance(getattr(config, name, None), int)), None)


def synthetic_batch(spec: InputSpec, lengths: list[int], seed: int = 0) -> SpeechBatch:
    """Noise in ``batch.inputs`` layout: ``lengths`` samples or frames per item."""
    generator = torch.Generator().manual_seed(seed)
    shape = (len(lengths), max(lengths))
    if not spec.takes_waveform:
        shape += (spec.feature_size or COMMON_FEATURE_SIZES[0],)
    return SpeechBatch(torch.randn(shape, generator=generator) * 0.1, torch.tensor(lengths))


def model_arguments(model: nn.Module, spec: InputSpec, batch: SpeechBatch,
                    audio_tokens: Sequence[int] = ()) -> dict[str, Any]:
    """Forward keyword arguments for ``batch``: the audio in the model's layout (padding value past
    each length; padded to the fixed window), its mask, and the decoder or LLM tokens (a start
    token, or ``audio_tokens[i]`` placeholders for item ``i``, then the labels)."""
    parameter = next(model.parameters(), None)
    audio = batch.inputs
    if parameter is not None:
        audio = audio.to(device=parameter.device, dtype=parameter.dtype)
    lengths = batch.input_lengths.to(audio.device)
    valid = valid_mask(lengths, audio.shape[1])
    shaped = valid.view(*valid.shape, *(1,) * (audio.dim() - 2))
    audio = torch.where(shaped, audio, torch.full((), spec.padding_value, dtype=audio.dtype,
                                                  device=audio.device))
    if spec.fixed_frames is not None and audio.shape[1] < spec.fixed_frames:
        padding = [0, 0] * (audio.dim() - 2) + [0, spec.fixed_frames - audio.shape[1]]
        audio = nn.functional.pad(audio, padding, value=spec.padding_value)
    frames = audio.shape[1]
    if spec.layout == "transposed":
        audio = audio.transpose(1, 2)
    elif spec.layout == "channel_waveform":
        audio = audio.unsqueeze(1)
    arguments: dict[str, Any] = {spec.audio_argument: audio}
    if spec.mask_argument is not None:
        mask = valid_mask(lengths, frames)
        if spec.fixed_frames is not None:
            # What the extractor's mask says of a padded window: every frame it made is valid.
            mask = torch.ones_like(mask)
        mask = mask if spec.mask_valid_is_one else ~mask
        arguments[spec.mask_argument] = mask.to(spec.mask_dtype)
    labels, label_valid = padded_labels(model, batch, audio.device)
    if spec.decoder_argument is not None and spec.decoder_start is not None:
        start = torch.full((labels.shape[0], 1), int(spec.decoder_start), device=audio.device)
        arguments[spec.decoder_argument] = torch.cat([start, labels], 1)
        if spec.decoder_mask_argument is not None:
            arguments[spec.decoder_mask_argument] = torch.cat(
                [torch.ones_like(start, dtype=torch.bool), label_valid], 1).long()
    if spec.token_argument is not None and spec.audio_token_id is not None and audio_tokens:
        ids, valid = llm_tokens(model, spec.audio_token_id, audio_tokens, labels, label_valid)
        arguments[spec.token_argument] = ids
        if "attention_mask" in inspect.signature(model.forward).parameters \
                and spec.mask_argument != "attention_mask":
            arguments["attention_mask"] = valid.long()
    if "use_cache" in inspect.signature(model.forward).parameters:
        arguments["use_cache"] = False
    return arguments


def llm_tokens(model: nn.Module, audio_token: int, audio_tokens: Sequence[int],
               labels: torch.Tensor, label_valid: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(batch, tokens)`` speech-LLM input: item ``i`` holds ``audio_tokens[i]`` placeholders,
    then its labels, then padding; and where it is valid."""
    counts = torch.tensor(list(audio_tokens), device=labels.device)
    label_counts = label_valid.sum(1)
    width = int((counts + label_counts).max())
    position = torch.arange(width, device=labels.device)[None, :]
    pad = generation_setting(model, "pad_token_id")
    ids = torch.full((labels.shape[0], width), 0 if pad is None else int(pad),
                     device=labels.device)
    ids = ids.masked_fill(position < counts[:, None], audio_token)
    offset = (position - counts[:, None]).clamp(min=0, max=max(labels.shape[1] - 1, 0))
    is_label = (position >= counts[:, None]) & (position < (counts + label_counts)[:, None])
    if labels.shape[1]:
        ids = torch.where(is_label, labels.gather(1, offset), ids)
    return ids, position < (counts + label_counts)[:, None]


def padded_labels(model: nn.Module, batch: SpeechBatch, device: torch.device
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(batch, labels)`` label ids with the pad token on padding, and ``(batch, labels)`` valid."""
    if batch.labels is None or batch.label_lengths is None:
        empty = torch.zeros(batch.batch_size, 0, dtype=torch.long, device=device)
        return empty, empty.bool()
    labels = batch.labels.to(device=device, dtype=torch.long)
    valid = valid_mask(batch.label_lengths.to(device), labels.shape[1])
    pad = generation_setting(model, "pad_token_id")
    return labels.masked_fill(~valid, 0 if pad is None else int(pad)), valid


def audio_feature_function(model: nn.Module) -> Any:
    """A speech LLM's ``get_audio_features`` (on the model or its ``model``), or ``None``."""
    return getattr(model, "get_audio_features", None) or getattr(
        getattr(model, "model", None), "get_audio_features", None)


def audio_features(model: nn.Module, spec: InputSpec, arguments: dict[str, Any]) -> torch.Tensor:
    """What a speech LLM's audio tower hands its LLM for the audio in ``arguments`` (forward
    keyword arguments): ``(batch, tokens, width)`` or ``(tokens, width)`` for the whole batch."""
    getter = audio_feature_function(model)
    names = inspect.signature(getter).parameters
    audio_name = (spec.audio_argument if spec.audio_argument in names
                  else next((name for name in AUDIO_ARGUMENTS if name in names),
                            spec.audio_argument))
    call = {audio_name: arguments[spec.audio_argument]}
    takes_any = any(parameter.kind == parameter.VAR_KEYWORD for parameter in names.values())
    for mask in ("attention_mask", *AUDIO_MASKS):
        if mask in arguments and (mask in names or (takes_any and mask != "attention_mask")):
            call[mask] = arguments[mask]
    output = getter(**call)
    # get_*_features return the projected features as pooler_output (transformers >= 5).
    pooled = getattr(output, "pooler_output", None)
    return pooled if isinstance(pooled, torch.Tensor) else main_tensor(output)


def main_tensor(output: Any) -> torch.Tensor:
    """The tensor a model's output is about: logits, else the last hidden state."""
    for name in ("logits", "last_hidden_state", "extract_features", "pooler_output"):
        value = getattr(output, name, None)
        if isinstance(value, torch.Tensor):
            return value
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"no tensor in the model's {type(output).__name__} output")
