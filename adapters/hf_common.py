"""What the Hugging Face site maps share: matching by the family's python module, site bindings
built from a per-family table, the frontend relay and the decoder's lengths. (What their runners
share is in :mod:`.hf_runner`.)

A family module only says which module classes hold its stacks and which attribute of a block is
which branch (:class:`Branch`); :class:`HuggingFaceSiteMap` turns that into sites named
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
from attnprobe.sites import Site

from .hf_attention import ImplementationSwitch, RegistryAttention
from .site_map import SiteBinding, SiteMap


class Branch(NamedTuple):
    """One branch of a block: site ``{stack}.{i}.{suffix}`` of ``kind``.

    ``module`` is the attribute of the block whose input is the branch input; ``output_module``
    (default: the same) the attribute whose output is the branch output, for feed-forward branches
    written inline as ``fc2(activation(fc1(x)))``; ``attention_module`` (default: ``module``) the
    one whose attention probabilities an attention branch captures, where the module that
    computes them does not itself return the residual stream's shape.
    """

    suffix: str
    kind: str
    module: str
    output_module: str | None = None
    attention_module: str | None = None


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
    when the last hook on it is removed, those pre-hooks go too. ``features_name`` and
    ``stream_name`` are the keywords the two modules take their tensors by when not positionally.
    """

    def __init__(self, features_module: nn.Module, first_block: nn.Module,
                 to_frames: Callable[[torch.Tensor], torch.Tensor],
                 features_name: str | None = None, stream_name: str = "hidden_states") -> None:
        super().__init__()
        # A tuple keeps the model's modules from being registered as the relay's submodules.
        self._watched = (features_module, first_block)
        self._to_frames = to_frames
        self._names = (features_name, stream_name)
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
        features = pick_argument(args, kwargs, 0, self._names[0])
        self._features = None if features is None else self._to_frames(features)

    def _relay(self, _module: nn.Module, args: tuple, kwargs: dict) -> None:
        encoder_input = pick_argument(args, kwargs, 0, self._names[1])
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


class HuggingFaceSiteMap(SiteMap):
    """Common ground of the Hugging Face site maps.

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


def encoder_decoder_stacks(model: nn.Module, encoder_class: str, decoder_class: str
                           ) -> EncoderDecoderStacks | None:
    """The modules of classes ``encoder_class`` and ``decoder_class`` in ``model`` (either may be
    missing), or ``None`` when neither is there."""
    stacks = EncoderDecoderStacks(find_module(model, [encoder_class]),
                                  find_module(model, [decoder_class]))
    return stacks if stacks.encoder is not None or stacks.decoder is not None else None


def find_module(model: nn.Module, class_names: Iterable[str]) -> nn.Module | None:
    """The first module of ``model`` (itself included) whose class name is in ``class_names``."""
    names = set(class_names)
    return next((module for module in model.modules() if type(module).__name__ in names), None)


def argument(args: tuple, kwargs: Mapping[str, Any], position: int, *names: str) -> Any:
    """The forward argument at ``position``, or given by one of the keyword ``names``."""
    if position < len(args):
        return args[position]
    return next((kwargs[name] for name in names if kwargs.get(name) is not None), None)


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
