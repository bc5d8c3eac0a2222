"""The generic Hugging Face runner: runs any ``transformers`` speech model on a
:class:`~attnprobe.batch.SpeechBatch` the way :mod:`.hf_inputs` read it off the model.

- ``run``: the audio in the model's layout with its padding mask, teacher-forced when the batch
  has labels: ``decoder_input_ids = [start] + labels`` for an encoder-decoder, ``input_ids =
  [audio placeholder] * N + labels`` for a speech LLM (``N`` = what ``get_audio_features``
  returns per item). A language / task prompt or chat template is not added: set
  ``runner.prompt_ids`` where a checkpoint needs one.
- ``label_log_probs``: the log-softmax of the logits at the positions that predict each label.
- ``ctc_log_probs``: for the task classes of transformers' CTC mapping; blank = ``pad_token_id``;
  valid frames from the model's own length function (``_get_feat_extract_output_lengths``,
  ``_get_subsampling_output_length`` or ``_get_output_lengths``, on the model or a submodule).
- ``subsampling``: input frames per frame entering the first encoder block, measured on two
  lengths and rounded; ``frame_shift_seconds`` from the extractor.
- ``encoder_lengths``: the same length function, so that models whose encoder ignores padding
  are probed on the frames that carry audio.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import nn

from attnprobe.batch import SpeechBatch
from attnprobe.errors import CapabilityError, InputError
from attnprobe.model_state import side_pass

from .hf_input_trials import describe_inputs
from .hf_inputs import (
    InputSpec,
    audio_feature_function,
    audio_features,
    main_tensor,
    model_arguments,
    padded_labels,
    synthetic_batch,
)
from .runner import Runner

LENGTH_FUNCTIONS = ("_get_feat_extract_output_lengths", "_get_subsampling_output_length",
                    "_get_output_lengths")
EXAMPLE_SECONDS = 0.5
EXAMPLE_LABELS = 5
"""Enough labels for every decoder probe (they rank at least 4 label positions)."""
SUBSAMPLING_SPANS = {"waveform": (23040, 46080), "frames": (240, 480)}
"""Input lengths the subsampling is measured between: multiples of the usual strides (2, 3, 4, 5,
8, 320, 384, 640), so that rounding at the edges does not bias the ratio."""

_specs: weakref.WeakKeyDictionary[nn.Module, InputSpec] = weakref.WeakKeyDictionary()


def input_spec(model: nn.Module) -> InputSpec:
    """:func:`.hf_input_trials.describe_inputs` of ``model``, remembered per model."""
    spec = _specs.get(model)
    if spec is None:
        spec = _specs[model] = describe_inputs(model)
    return spec


class HuggingFaceGenericRunner(Runner):
    """Runs any Hugging Face speech model (module docstring).

    Raises (at construction):
        CapabilityError: the model's forward takes no audio.
    """

    family = "hf-generic"

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        try:
            self.spec = input_spec(model)
        except ValueError as error:
            raise CapabilityError(f"{error}; attnprobe probes speech models") from None
        self.prompt_ids: list[int] = ([] if self.spec.decoder_start is None
                                      else [int(self.spec.decoder_start)])
        self._audio_tokens: dict[int, int] = {}
        self._subsampling: int | None = None

    @property
    def frame_shift_seconds(self) -> float | None:  # type: ignore[override]
        return self.spec.frame_shift_seconds

    @property
    def first_label_position(self) -> int:  # type: ignore[override]
        """The last prompt position of an encoder-decoder (a speech LLM's differs per item)."""
        return max(len(self.prompt_ids) - 1, 0)

    @property
    def ctc_blank(self) -> int | None:  # type: ignore[override]
        return getattr(self.model.config, "pad_token_id", None) if self._has_ctc_head() else None

    def capabilities(self) -> dict[str, bool]:
        """What this model lets the runner do (see :mod:`.description`)."""
        return {"run": True, "ctc_log_probs": self._has_ctc_head(),
                "label_log_probs": (self.spec.decoder_argument is not None
                                    or self.spec.token_argument is not None)
                and not self._is_transducer()}

    def example_batch(self) -> SpeechBatch:
        """Half a second of noise (two items, the second shorter), with five labels each when the
        model teacher-forces labels."""
        spec = self.spec
        rate = round(1 / spec.frame_shift_seconds) if spec.frame_shift_seconds else 100
        # Whole multiples of 64 frames: some encoders refuse lengths their subsampling does not
        # divide.
        length = max(64, round(EXAMPLE_SECONDS * rate / 64) * 64)
        if spec.fixed_frames is not None:
            length = min(length, spec.fixed_frames)
        batch = synthetic_batch(spec, [length, length - 16 if length <= 64 else length // 2])
        if spec.decoder_argument is None and spec.token_argument is None:
            return batch
        labels = torch.full((2, EXAMPLE_LABELS), self._label_id(), dtype=torch.long)
        return SpeechBatch(batch.inputs, batch.input_lengths, labels,
                           torch.tensor([EXAMPLE_LABELS, EXAMPLE_LABELS]))

    def run(self, batch: SpeechBatch) -> Any:
        """One forward pass (teacher-forced with ``batch.labels``); see the module docstring."""
        self._check(batch)
        arguments = model_arguments(self.model, self.spec, batch, self._placeholders(batch))
        if self.spec.decoder_argument is not None and len(self.prompt_ids) > 1:
            arguments.update(self._prompted(arguments))
        return self.model(**arguments)

    def label_log_probs(self, batch: SpeechBatch) -> torch.Tensor:
        """``(batch, labels)`` teacher-forced ``log p(a_s | prompt, a_<s, X)``, 0 at padded labels;
        differentiable with respect to ``batch.inputs``."""
        if batch.labels is None or batch.label_lengths is None:
            raise InputError("teacher forcing needs reference labels: give SpeechBatch(..., "
                             "labels=..., label_lengths=...)")
        if not self.capabilities()["label_log_probs"]:
            raise CapabilityError(self._no_decoder())
        logits = main_tensor(self.run(batch))
        labels, valid = padded_labels(self.model, batch, logits.device)
        # Position p's logits predict token p + 1: label s follows the prompt (encoder-decoder)
        # or item i's audio placeholders (speech LLM).
        first = torch.full((batch.batch_size,), self.first_label_position, device=logits.device)
        if self.spec.decoder_argument is None:
            first = torch.tensor(self._placeholders(batch), device=logits.device) - 1
        positions = first[:, None] + torch.arange(labels.shape[1], device=logits.device)
        if logits.dim() != 3 or (positions.numel() and logits.shape[1] <= int(positions.max())):
            raise CapabilityError(
                f"{type(self.model).__name__}'s output {tuple(logits.shape)} is not one logit row "
                f"per decoder position (an RNN-T / TDT joint is not); {self._no_decoder()}")
        predicting = logits.gather(1, positions[..., None].expand(-1, -1, logits.shape[-1]))
        per_label = predicting.float().log_softmax(-1).gather(-1, labels[..., None]).squeeze(-1)
        return per_label.masked_fill(~valid, 0.0)

    def ctc_log_probs(self, batch: SpeechBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(batch, frames, vocab)`` CTC log-posteriors and ``(batch,)`` valid frames."""
        if not self._has_ctc_head():
            raise CapabilityError(f"{type(self.model).__name__} has no CTC head (it is not in "
                                  f"transformers' CTC mapping); load the ...ForCTC class")
        log_probs = main_tensor(self.run(batch)).float().log_softmax(-1)
        lengths = self.encoder_lengths(batch.input_lengths.to(log_probs.device))
        if lengths is None:
            lengths = self._measured_lengths(batch)
        return log_probs, lengths.clamp(max=log_probs.shape[1])

    def encoder_lengths(self, input_lengths: torch.Tensor) -> torch.Tensor | None:
        """Valid encoder frames from the model's own length function, or ``None``."""
        for module in self.model.modules():
            for name in LENGTH_FUNCTIONS:
                function = getattr(module, name, None)
                if not callable(function):
                    continue
                try:
                    found = torch.as_tensor(function(input_lengths)).long()
                except Exception:  # noqa: BLE001 (signatures differ between families)
                    continue
                if found.shape == input_lengths.shape:
                    return found
        return None

    @property
    def subsampling(self) -> int:
        """Input frames per frame entering the first encoder block, measured (module docs)."""
        if self._subsampling is None:
            self._subsampling = self._measure_subsampling()
        return self._subsampling

    # ----------------------------------------------------------------- details
    def _check(self, batch: SpeechBatch) -> None:
        rank = 2 if self.spec.takes_waveform else 3
        if batch.inputs.dim() != rank:
            layout = "waveforms (batch, samples)" if rank == 2 else \
                f"features (batch, frames, {self.spec.feature_size})"
            raise InputError(f"{type(self.model).__name__} takes batch.inputs as {layout}, got "
                             f"shape {tuple(batch.inputs.shape)}")
        size = self.spec.feature_size
        if rank == 3 and size is not None and batch.inputs.shape[-1] != size:
            raise InputError(f"{type(self.model).__name__} takes {size} features per frame, "
                             f"batch.inputs has {batch.inputs.shape[-1]}; extract them with the "
                             f"checkpoint's feature extractor")
        fixed = self.spec.fixed_frames
        if fixed is not None and batch.inputs.shape[1] > fixed:
            raise InputError(f"{type(self.model).__name__} takes at most {fixed} frames at a "
                             f"time, got {batch.inputs.shape[1]}; split the audio into windows")

    def _has_ctc_head(self) -> bool:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CTC_MAPPING_NAMES

        return type(self.model).__name__ in set(MODEL_FOR_CTC_MAPPING_NAMES.values())

    def _is_transducer(self) -> bool:
        from transformers.models.auto import modeling_auto

        names = {*modeling_auto.MODEL_FOR_RNNT_MAPPING_NAMES.values(),
                 *modeling_auto.MODEL_FOR_TDT_MAPPING_NAMES.values()}
        return type(self.model).__name__ in names

    def _no_decoder(self) -> str:
        if self._is_transducer():
            return (f"{type(self.model).__name__} is a transducer: its joint network scores "
                    f"(frame, label) pairs, not one label per decoder position, so there are no "
                    f"teacher-forced label log-probabilities; the frame mapping needs no labels")
        ctc = " use ctc_log_probs (a CTC head) or" if self._has_ctc_head() else ""
        return (f"{type(self.model).__name__} has no decoder to teacher-force labels with;{ctc} "
                f"the frame mapping, which needs no labels")

    def _label_id(self) -> int:
        vocabulary = getattr(self.model.config, "vocab_size", None) or getattr(
            getattr(self.model.config, "text_config", None), "vocab_size", None) or 4
        special = {self.spec.decoder_start, self.spec.audio_token_id,
                   getattr(self.model.config, "pad_token_id", None)}
        return next(label for label in range(min(vocabulary, 64) - 1, -1, -1)
                    if label not in special)

    def _prompted(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """The decoder input with the whole prompt instead of the start token alone."""
        ids = arguments[self.spec.decoder_argument]  # type: ignore[index]
        prompt = torch.tensor(self.prompt_ids, dtype=ids.dtype, device=ids.device)
        changed = {self.spec.decoder_argument: torch.cat(
            [prompt.expand(ids.shape[0], -1), ids[:, 1:]], 1)}
        mask = self.spec.decoder_mask_argument
        if mask is not None:
            valid = arguments[mask]
            changed[mask] = torch.cat([torch.ones_like(valid[:, :1]).expand(
                -1, len(self.prompt_ids)), valid[:, 1:]], 1)
        return changed

    def _placeholders(self, batch: SpeechBatch) -> list[int]:
        """Audio placeholders a speech LLM expects for each item (none for other models): what
        its ``get_audio_features`` returns for the item alone, remembered per input length."""
        if self.spec.token_argument is None or self.spec.audio_token_id is None:
            return []
        counts = []
        for index, length in enumerate(batch.input_lengths.tolist()):
            if length not in self._audio_tokens:
                self._audio_tokens[length] = self._count_audio_tokens(batch.item(index))
            counts.append(self._audio_tokens[length])
        return counts

    def _count_audio_tokens(self, batch: SpeechBatch) -> int:
        if audio_feature_function(self.model) is None:
            raise CapabilityError(f"{type(self.model).__name__} is a speech LLM without "
                                  f"get_audio_features: attnprobe cannot tell how many audio "
                                  f"placeholder tokens its input needs")
        with side_pass(self.model):
            features = audio_features(self.model, self.spec,
                                      model_arguments(self.model, self.spec, batch))
        count = features.shape[1] if features.dim() == 3 else \
            features.shape[0] // batch.batch_size
        return int(count)

    def _measured_lengths(self, batch: SpeechBatch) -> torch.Tensor:
        """Output frames of each item run alone (when the model has no length function)."""
        frames = []
        with side_pass(self.model):
            for index in range(batch.batch_size):
                frames.append(main_tensor(self.run(batch.item(index))).shape[1])
        return torch.tensor(frames, device=batch.inputs.device)

    def _measure_subsampling(self) -> int:
        from .discovery import discover

        structure = discover(self.model)
        encoder = structure.stack("encoder")
        if encoder is None:
            raise CapabilityError(f"no encoder stack found in {type(self.model).__name__} to "
                                  f"measure the subsampling at; pass subsampling=<factor>")
        first_block = self.model.get_submodule(encoder.blocks[0])
        spans = [self.spec.fixed_frames] if self.spec.fixed_frames is not None else \
            list(SUBSAMPLING_SPANS["waveform" if self.spec.takes_waveform else "frames"])
        frames = [self._frames_entering(first_block, length) for length in spans]
        if len(spans) == 1:
            ratio = spans[0] / frames[0]
        elif frames[1] == frames[0]:
            raise CapabilityError("the encoder sees as many frames for a longer input: its "
                                  "subsampling cannot be measured; pass subsampling=<factor>")
        else:
            ratio = (spans[1] - spans[0]) / (frames[1] - frames[0])
        return max(1, round(ratio))

    def _frames_entering(self, block: nn.Module, length: int) -> int:
        seen: list[int] = []

        def note(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            stream = args[0] if args else next(iter(kwargs.values()))
            seen.append(stream.shape[1])

        handle = block.register_forward_pre_hook(note, with_kwargs=True)
        try:
            with side_pass(self.model):
                self.run(synthetic_batch(self.spec, [length]))
        finally:
            handle.remove()
        return seen[0]
