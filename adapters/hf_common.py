"""What the Hugging Face adapters share: matching by the family's python module, site bindings
built from a per-family table, the frontend relay, length helpers, and the capabilities probes use
(running a :class:`~attnprobe.batch.SpeechBatch`, teacher-forced label log-probabilities).

A family module only says which module classes hold its stacks and which attribute of a block is
which branch (:class:`Branch`); :class:`HuggingFaceAdapter` turns that into sites named
``encoder.{i}``, ``encoder.{i}.self_attn``, ``decoder.{i}.cross_attn``, ... with attention
probabilities captured through the attention-function registry (:mod:`.hf_attention`).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from attnprobe.capture import pick_argument
from attnprobe.errors import CapabilityError, InputError
from attnprobe.sites import Site

from .base import Adapter, SiteBinding
from .hf_attention import ImplementationSwitch, RegistryAttention


class Branch(NamedTuple):
    """One branch of a block: site ``{stack}.{i}.{suffix}`` of ``kind``.

    ``module`` is the attribute of the block whose input is the branch input; ``output_module``
    (default: the same) the attribute whose output is the branch output, for feed-forward branches
    written inline as ``fc2(activation(fc1(x)))``.
    """

    suffix: str
    kind: str
    module: str
    output_module: str | None = None


# Blocks copied from MBart (Whisper, Speech2Text): feed-forward written inline as fc2(act(fc1(x))).
MBART_ENCODER_BRANCHES = (Branch("self_attn", "self_attn", "self_attn"),
                          Branch("ffn", "ffn", "fc1", "fc2"))
MBART_DECODER_BRANCHES = (Branch("self_attn", "self_attn", "self_attn"),
                          Branch("cross_attn", "cross_attn", "encoder_attn"),
                          Branch("ffn", "ffn", "fc1", "fc2"))


class EncoderDecoderStacks(NamedTuple):
    """The stacks of an encoder-decoder family; either may be missing (bare encoder, decoder)."""

    encoder: nn.Module | None
    decoder: nn.Module | None


class FrontendRelay(nn.Module):
    """The encoder frontend as one call: ``forward(features, encoder_input) -> encoder_input``.

    Hugging Face speech encoders spread their frontend over convolutions and inline code
    (positions, scaling, masking), so no module takes the features and returns what enters the
    first block. The relay stands in for that module. It is not part of the model: while any hook
    is registered on it (as a trace does), it listens with two pre-hooks on the model — one on
    ``features_module`` keeps the features, made ``(batch, frames, features)`` by ``to_frames``,
    and one on ``first_block`` calls the relay with the kept features and the block's input — and
    when the last hook on it is removed, those pre-hooks go too.
    """

    def __init__(self, features_module: nn.Module, first_block: nn.Module,
                 to_frames: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        # A tuple keeps the model's modules from being registered as the relay's submodules.
        self._watched = (features_module, first_block)
        self._to_frames = to_frames
        self._listeners = 0
        self._model_hooks: list[Any] = []
        self._features: torch.Tensor | None = None

    def forward(self, features: torch.Tensor | None, encoder_input: torch.Tensor) -> torch.Tensor:
        return encoder_input

    def register_forward_hook(self, hook: Callable[..., Any], **options: Any) -> _ListenerHandle:
        return self._listen(super().register_forward_hook(hook, **options))

    def register_forward_pre_hook(self, hook: Callable[..., Any], **options: Any
                                  ) -> _ListenerHandle:
        return self._listen(super().register_forward_pre_hook(hook, **options))

    def _listen(self, handle: Any) -> _ListenerHandle:
        self._listeners += 1
        if self._listeners == 1:
            features_module, first_block = self._watched
            self._model_hooks = [
                features_module.register_forward_pre_hook(self._keep_features, with_kwargs=True),
                first_block.register_forward_pre_hook(self._relay, with_kwargs=True),
            ]
        return _ListenerHandle(self, handle)

    def _stop_listening(self) -> None:
        self._listeners -= 1
        if self._listeners == 0:
            for handle in self._model_hooks:
                handle.remove()
            self._model_hooks = []
            self._features = None

    def _keep_features(self, _module: nn.Module, args: tuple, kwargs: dict) -> None:
        features = pick_argument(args, kwargs, 0, None)
        self._features = None if features is None else self._to_frames(features)

    def _relay(self, _module: nn.Module, args: tuple, kwargs: dict) -> None:
        encoder_input = pick_argument(args, kwargs, 0, "hidden_states")
        features, self._features = self._features, None
        if encoder_input is not None:
            self(features, encoder_input)


class _ListenerHandle:
    """Removes one hook from a :class:`FrontendRelay`, and stops it listening after the last."""

    def __init__(self, relay: FrontendRelay, handle: Any) -> None:
        self._relay = relay
        self._handle: Any = handle

    def remove(self) -> None:
        if self._handle is None:
            return
        self._handle.remove()
        self._handle = None
        self._relay._stop_listening()


class HuggingFaceAdapter(Adapter):
    """Common ground of the Hugging Face families.

    A subclass sets ``family_modules`` (python modules whose classes it knows, task models and bare
    models alike) and implements :meth:`locate` (``None`` when the structure is not there) and
    :meth:`bindings`, usually with :meth:`frontend_binding` and :meth:`stack_bindings`.
    """

    family_modules: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self._paths = {module: name for name, module in model.named_modules()}
        # One switch per adapter: every attention capture of this trace shares its hold.
        self._switch = ImplementationSwitch(model)

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        in_family = any(klass.__module__ in cls.family_modules for klass in type(model).__mro__)
        return in_family and cls.locate(model) is not None

    @classmethod
    @abstractmethod
    def locate(cls, model: nn.Module) -> Any:
        """The family's stacks inside ``model``, or ``None`` if ``model`` lacks them."""

    def path(self, module: nn.Module) -> str:
        """Dotted path of ``module`` in the model (``model.get_submodule(path)``)."""
        return self._paths[module]

    def frontend_binding(self, features_module: nn.Module, first_block: nn.Module,
                         to_frames: Callable[[torch.Tensor], torch.Tensor]) -> SiteBinding:
        """Site ``encoder.frontend``: input = the features ``features_module`` receives, as
        ``(batch, frames, features)``; output = what enters ``first_block``."""
        relay = FrontendRelay(features_module, first_block, to_frames)
        site = Site("encoder.frontend", "frontend", "encoder", None, self.path(features_module))
        return SiteBinding(site, relay, input_name="features")

    def stack_bindings(self, stack: str, blocks: Iterable[nn.Module], branches: Sequence[Branch]
                       ) -> list[SiteBinding]:
        """Sites ``{stack}.{i}`` (block: residual stream in and out) and its branches."""
        found = []
        for layer, block in enumerate(blocks):
            found.append(SiteBinding(Site(f"{stack}.{layer}", "block", stack, layer,
                                          self.path(block)), block))
            for branch in branches:
                module = block.get_submodule(branch.module)
                output_module = (None if branch.output_module is None
                                 else block.get_submodule(branch.output_module))
                is_attention = branch.kind in ("self_attn", "cross_attn")
                found.append(SiteBinding(
                    Site(f"{stack}.{layer}.{branch.suffix}", branch.kind, stack, layer,
                         self.path(module)),
                    module, output_module=output_module,
                    attention=RegistryAttention(module, self._switch) if is_attention else None))
        return found


def find_module(model: nn.Module, class_names: Iterable[str]) -> nn.Module | None:
    """The first module of ``model`` (itself included) whose class name is in ``class_names``."""
    names = set(class_names)
    return next((module for module in model.modules() if type(module).__name__ in names), None)


def argument(args: tuple, kwargs: Mapping[str, Any], position: int, *names: str) -> Any:
    """The forward argument at ``position``, or given by one of the keyword ``names``."""
    if position < len(args):
        return args[position]
    return next((kwargs[name] for name in names if kwargs.get(name) is not None), None)


def valid_lengths(mask: torch.Tensor | None, batch: int, frames: int) -> torch.Tensor:
    """``(batch,)`` valid positions: ones of a ``(batch, frames)`` padding mask, else all frames."""
    if mask is None:
        return torch.full((batch,), frames, dtype=torch.long)
    return mask.sum(-1).long()


def decoder_lengths(args: tuple, kwargs: Mapping[str, Any], mask_position: int,
                    cache_position: int) -> torch.Tensor | None:
    """Valid decoder positions of a decoder call ``(input_ids, attention_mask, ...)``.

    From the padding mask when given, else every position seen so far (cached plus new), which
    during cached generation is the key length of decoder self-attention.
    """
    tokens = argument(args, kwargs, 0, "input_ids")
    if tokens is None:
        tokens = kwargs.get("inputs_embeds")
    if not isinstance(tokens, torch.Tensor):
        return None
    mask = argument(args, kwargs, mask_position, "attention_mask")
    if isinstance(mask, torch.Tensor) and mask.dim() == 2:
        return mask.sum(-1).long()
    cache = argument(args, kwargs, cache_position, "cache", "past_key_values")
    seen = int(cache.get_seq_length()) if hasattr(cache, "get_seq_length") else 0
    return torch.full((tokens.shape[0],), seen + tokens.shape[1], dtype=torch.long)


# ----------------------------------------------------------------------------- capabilities
def model_input(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """``inputs`` on the model's device and in its floating dtype; the cast stays differentiable."""
    parameter = next(model.parameters(), None)
    if parameter is None:
        return inputs
    return inputs.to(device=parameter.device, dtype=parameter.dtype)


def padding_mask(lengths: torch.Tensor, frames: int, device: torch.device) -> torch.Tensor:
    """``(batch, frames)`` bool, True on the first ``lengths[i]`` frames of sequence ``i``."""
    return torch.arange(frames, device=device)[None, :] < lengths.to(device)[:, None]


def zero_padding(inputs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``inputs`` ``(batch, frames, ...)`` with zeros past each length, and the ``(batch, frames)``
    int64 attention mask saying which frames are valid.

    The feature extractors pad with zeros, and the convolutional frontends read past the last valid
    frame; zeroing makes a padded batch compute what each sequence computes alone, whatever the
    padding held, and gives padded positions exactly zero gradient.
    """
    valid = padding_mask(lengths, inputs.shape[1], inputs.device)
    shaped = valid.view(*valid.shape, *(1,) * (inputs.dim() - 2))
    return torch.where(shaped, inputs, inputs.new_zeros(())), valid.long()


def require_rank(inputs: torch.Tensor, rank: int, layout: str, family: str, fix: str) -> None:
    """Raise :class:`InputError` unless ``inputs`` has ``rank`` dimensions."""
    if inputs.dim() != rank:
        raise InputError(f"the {family} adapter takes batch.inputs as {layout}, got shape "
                         f"{tuple(inputs.shape)}; {fix}")


def require_size(inputs: torch.Tensor, size: int, what: str, family: str) -> None:
    """Raise :class:`InputError` unless the last axis of ``inputs`` holds ``size`` ``what``."""
    if inputs.shape[-1] != size:
        raise InputError(f"this {family} model takes {size} {what} per frame, but batch.inputs "
                         f"has {inputs.shape[-1]} (shape {tuple(inputs.shape)}); extract the "
                         f"features with the checkpoint's own feature extractor")


def feature_extractor_default(class_name: str, parameter: str) -> Any:
    """The default of ``parameter`` in the constructor of transformers' ``class_name``."""
    import inspect

    import transformers

    constructor = inspect.signature(getattr(transformers, class_name).__init__)
    return constructor.parameters[parameter].default


def no_decoder_error(model: nn.Module, ctc_class: str, has_ctc_head: bool) -> CapabilityError:
    """What ``label_log_probs`` raises for an encoder-only family: where its label scores are."""
    name = type(model).__name__
    where = ("use adapter.ctc_log_probs(batch) for its per-frame label posteriors" if has_ctc_head
             else f"load {ctc_class} and use adapter.ctc_log_probs(batch) for per-frame label "
                  f"posteriors")
    return CapabilityError(f"{name} has no attention decoder to teacher-force labels with; "
                           f"{where}, or attnprobe.probes.frame_mapping, which needs no labels")
