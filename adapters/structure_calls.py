"""What one forward pass shows about a model's structure: which stack reads the audio and which
the tokens, which attention reads another stack's output, the order of the branches, and where
the frontend starts.

:func:`observe` runs the model once (twice for a model with token inputs) with hooks on every
module that note each module's first call: the shape of its hidden-state argument and output,
and two *taints*. In the first pass the audio tensor requires grad and every parameter is frozen,
so a tensor requires grad exactly when it depends on the audio; in the second, only the weights
of the ``nn.Embedding`` modules called on one of the model's integer inputs (its token
embeddings) require grad. Then:

- **roles**: the first stack whose first block reads audio but no tokens, and holds no
  cross-attention, is the ``encoder``; a stack with cross-attention is the ``decoder``; one
  reading tokens without it is an ``lm`` (the text model of a speech LLM, which reads audio and
  tokens alike); every other stack is ``extra``. The token taint only keeps an LLM from being
  taken for the encoder where the audio tower has no attention of its own;
- **cross-attention**: an attention call with a float argument besides its query that depends on
  the audio, lives in another storage and has the query's batch size (the encoder output). Masks,
  rotary tables and relative position embeddings never depend on the audio;
- **branches** of a block: modules whose input and output both have the block's hidden-state
  shape (*stream-shaped*) — the innermost one holding all of the block's convolutions is
  ``conv``, the innermost ones with two or more ``nn.Linear`` are ``ffn`` — and, lacking those, a
  child that
  widens the stream followed by one that narrows it back; all in call order;
- **frontend**: :mod:`.structure_frontend` reads it from the same calls.

Parameters' ``requires_grad`` flags, the training flags and the global random state are restored
afterwards, and every hook is removed, whatever happens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from attnprobe.model_state import evaluation_mode, frozen_parameters, private_random_state

from .hf_common import Branch
from .structure import Stack, inside, join, numbered, relative

STREAM_KEYWORDS = ("hidden_states", "hidden_state", "x", "xs", "query", "src", "tgt", "input",
                   "inputs", "inputs_embeds", "features")
"""Keyword names a block's hidden-state argument goes by when it is not passed positionally."""


@dataclass
class Call:
    """The first call of one module during a forward pass.

    Attributes:
        order: position among all first calls.
        stream_shape / output_shape: shapes of the hidden-state argument and of the output's first
            tensor (``None`` when there was none).
        stream_argument: ``0`` when the hidden state came positionally, else its keyword.
        tainted: the hidden-state argument requires grad (depends on what the pass taints).
        stream_storage: storage pointer of the hidden-state argument.
        receives_audio: some argument shares the audio tensor's storage.
        integer_storages: storages of the integer tensor arguments.
        float_arguments: ``(shape, requires_grad, storage)`` of every float tensor argument.
    """

    order: int
    stream_shape: tuple[int, ...] | None
    output_shape: tuple[int, ...] | None
    stream_argument: int | str
    tainted: bool
    stream_storage: int
    receives_audio: bool
    integer_storages: list[int]
    float_arguments: list[tuple[tuple[int, ...], bool, int]]


@dataclass
class Observation:
    """What the forward passes showed: the first call of every module, with the audio taint,
    and the stacks whose first block read the token taint."""

    calls: dict[str, Call]
    token_stacks: set[str] = field(default_factory=set)
    audio_shape: tuple[int, ...] = ()


def storage_of(tensor: torch.Tensor) -> int:
    """The storage pointer of ``tensor`` (``-1`` for tensors without one, e.g. nested)."""
    try:
        return tensor.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return -1


def stream_argument(args: tuple, kwargs: dict) -> tuple[torch.Tensor | None, int | str]:
    """The hidden-state argument of a call and where it was: position 0 or a keyword."""
    if args and isinstance(args[0], torch.Tensor):
        return args[0], 0
    for key in STREAM_KEYWORDS:
        if isinstance(kwargs.get(key), torch.Tensor):
            return kwargs[key], key
    for key, value in kwargs.items():
        if isinstance(value, torch.Tensor):
            return value, key
    return None, 0


def first_tensor(output: Any) -> torch.Tensor | None:
    """The first tensor of a module output (a tensor, a tuple or a Hugging Face output)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    for key in ("last_hidden_state", "logits", "hidden_states"):
        value = getattr(output, key, None)
        if isinstance(value, torch.Tensor):
            return value
    return None


def _shape(tensor: torch.Tensor | None) -> tuple[int, ...] | None:
    if tensor is None:
        return None
    if tensor.is_nested:
        return (tensor.size(0), -1, tensor.size(-1))
    return tuple(tensor.shape)


def record_calls(model: nn.Module, run: Callable[[], Any], audio: torch.Tensor | None
                 ) -> dict[str, Call]:
    """The first call of every module of ``model`` while ``run()`` runs."""
    paths = {module: path for path, module in model.named_modules()}
    calls: dict[str, Call] = {}
    audio_storages = {storage_of(audio)} if audio is not None else set()

    def before(module: nn.Module, args: tuple, kwargs: dict) -> None:
        path = paths[module]
        # Calls without gradients are the runner's side work (counting a speech LLM's audio
        # tokens), not the pass under observation.
        if path in calls or not torch.is_grad_enabled():
            return
        stream, where = stream_argument(args, kwargs)
        tensors = [value for value in (*args, *kwargs.values()) if isinstance(value, torch.Tensor)]
        if module is model and audio is not None:
            # The runner may pad, cast or transpose the audio before the model sees it: what
            # the model receives is the audio the frontend receives.
            audio_storages.update(storage_of(tensor) for tensor in tensors
                                  if tensor.is_floating_point() and tensor.requires_grad)
        calls[path] = Call(
            order=len(calls), stream_shape=_shape(stream), output_shape=None,
            stream_argument=where, tainted=bool(stream is not None and stream.requires_grad),
            stream_storage=storage_of(stream) if stream is not None else -1,
            receives_audio=any(storage_of(tensor) in audio_storages for tensor in tensors),
            integer_storages=[storage_of(tensor) for tensor in tensors
                              if not tensor.is_floating_point()],
            float_arguments=[(_shape(tensor) or (), tensor.requires_grad, storage_of(tensor))
                             for tensor in tensors if tensor.is_floating_point()])

    def after(module: nn.Module, _args: tuple, _kwargs: dict, output: Any) -> None:
        call = calls.get(paths[module])
        if call is not None and call.output_shape is None:
            call.output_shape = _shape(first_tensor(output)) or ()

    handles = []
    try:
        for module in paths:
            handles.append(module.register_forward_pre_hook(before, with_kwargs=True))
            handles.append(module.register_forward_hook(after, with_kwargs=True))
        run()
    finally:
        for handle in handles:
            handle.remove()
    return calls


def observe(model: nn.Module, run: Callable[[torch.Tensor], Any], audio: torch.Tensor,
            stacks: list[Stack]) -> Observation:
    """Run ``run(audio_copy)`` with the audio taint, then (for models with token inputs) again with
    the token taint; see the module docstring.

    Args:
        run: runs the model on the given audio tensor (the runner's ``run``).
        audio: the audio as ``run`` takes it (``batch.inputs``).
        stacks: the stacks whose first block's token taint to note.
    """
    # Discovery must not change what the model or a later random draw computes.
    with evaluation_mode(model), frozen_parameters(model), private_random_state(model), \
            torch.enable_grad():
        tainted = audio.detach().clone().requires_grad_(audio.is_floating_point())
        model_call: dict[str, list[int]] = {}

        def note_inputs(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            model_call.setdefault("integers", [
                storage_of(value) for value in (*args, *kwargs.values())
                if isinstance(value, torch.Tensor) and not value.is_floating_point()])

        handle = model.register_forward_pre_hook(note_inputs, with_kwargs=True)
        try:
            calls = record_calls(model, lambda: run(tainted), tainted)
        finally:
            handle.remove()
        observation = Observation(calls, audio_shape=tuple(audio.shape))
        integers = set(model_call.get("integers", []))
        embeddings = [module for path, module in model.named_modules()
                      if isinstance(module, nn.Embedding) and path in calls
                      and integers & set(calls[path].integer_storages)]
        if embeddings:
            for embedding in embeddings:
                embedding.weight.requires_grad_(True)
            try:
                token_calls = record_calls(model, lambda: run(audio.detach()), None)
            finally:
                for embedding in embeddings:
                    embedding.weight.requires_grad_(False)
            for stack in stacks:
                first = token_calls.get(stack.blocks[0])
                if first is not None and first.tainted:
                    observation.token_stacks.add(stack.path)
    return observation


def assign_roles(stacks: list[Stack], observation: Observation) -> list[str]:
    """Set each stack's role from the taints (module docstring); returns notes."""
    notes = []
    calls = observation.calls
    ordered = sorted(stacks, key=lambda stack: calls[stack.blocks[0]].order
                     if stack.blocks[0] in calls else len(calls))
    encoder_taken = False
    for stack in ordered:
        first = calls.get(stack.blocks[0])
        if first is None:
            stack.role = "extra"
            notes.append(f"{stack.path}: its blocks did not run in the discovery pass")
            continue
        if first.stream_shape is None or len(first.stream_shape) != 3:
            stack.role = "extra"
            notes.append(f"{stack.path}: its blocks take {first.stream_shape} hidden states, not "
                         f"(batch, frames, width) (packed sequences?): no time axis per "
                         f"utterance to probe")
            continue
        has_cross = any(branch.kind == "cross_attn" for branches in stack.branches
                        for branch in branches)
        tokens = stack.path in observation.token_stacks
        if first.tainted and not tokens and not has_cross and not encoder_taken:
            stack.role, encoder_taken = "encoder", True
        elif has_cross:
            stack.role = "decoder"
        elif tokens:
            stack.role = "lm"
        else:
            stack.role = "extra"
    stacks.sort(key=lambda stack: ordered.index(stack))
    return notes


def observed_branches(model: nn.Module, block_path: str, attention: list[str],
                      calls: dict[str, Call]) -> list[Branch] | None:
    """The branches of one block as the forward pass showed them (module docstring), with
    paths relative to the block; ``None`` when the block did not run."""
    block_call = calls.get(block_path)
    if block_call is None or block_call.stream_shape is None:
        return None
    stream = block_call.stream_shape
    block = model.get_submodule(block_path)
    inner = {join(block_path, path): module for path, module in block.named_modules() if path}
    mine = [path for path in attention if path.startswith(block_path + ".")]

    def stream_shaped(path: str) -> bool:
        call = calls.get(path)
        return call is not None and call.stream_shape == stream and call.output_shape == stream

    found: list[tuple[int, Branch]] = []
    for path in mine:
        call = calls.get(path)
        if call is None:
            continue
        cross = any(grad and storage != call.stream_storage and len(shape) == 3
                    and shape[0] == stream[0] for shape, grad, storage in call.float_arguments)
        kind = "cross_attn" if cross else "self_attn"
        # Where the attention module returns heads or a projection of another width, the branch
        # is its innermost enclosing module that returns the stream's shape.
        wrapper = path
        while not stream_shaped(wrapper) and wrapper.rsplit(".", 1)[0] != block_path:
            wrapper = wrapper.rsplit(".", 1)[0]
        if stream_shaped(wrapper) and wrapper != path:
            found.append((calls[wrapper].order, Branch(kind, kind, relative(wrapper, block_path),
                                                       None, relative(path, block_path))))
        else:
            found.append((call.order, Branch(kind, kind, relative(path, block_path))))

    def count(module: nn.Module, kind: type) -> int:
        return sum(isinstance(child, kind) for child in module.modules())

    wrappers = [f"{block_path}.{branch.module}" for _, branch in found]
    candidates = [path for path in inner if stream_shaped(path)
                  and not any(inside(path, found) or inside(found, path)
                              for found in (*mine, *wrappers))]
    # The convolution branch holds every convolution of the block: a depthwise convolution
    # alone can look stream-shaped when frames happen to equal the width.
    every_convolution = [path for path, module in inner.items() if isinstance(module, nn.Conv1d)
                         and not any(inside(path, found) for found in (*mine, *wrappers))]
    convolutions = _innermost([path for path in candidates if every_convolution and all(
        inside(convolution, path) for convolution in every_convolution)])
    feed_forwards = _innermost([path for path in candidates if count(inner[path], nn.Linear) >= 2
                                and not count(inner[path], nn.Conv1d)])
    found += [(calls[path].order, Branch("conv", "conv", relative(path, block_path)))
              for path in convolutions]
    found += [(calls[path].order, Branch("ffn", "ffn", relative(path, block_path)))
              for path in feed_forwards]
    if not feed_forwards:
        inline = _inline_feed_forward(block, block_path, mine, stream, calls)
        if inline is not None:
            found.append(inline)
    found.sort(key=lambda item: item[0])
    return numbered([branch for _, branch in found])


def _innermost(paths: list[str]) -> list[str]:
    return [path for path in paths if not any(other != path and inside(other, path)
                                              for other in paths)]


def _inline_feed_forward(block: nn.Module, block_path: str, attention: list[str],
                         stream: tuple[int, ...], calls: dict[str, Call]
                         ) -> tuple[int, Branch] | None:
    """A child that widens the stream (``fc1``) followed by one that narrows it back (``fc2``)."""
    children = [join(block_path, name) for name, module in block.named_children()
                if any(isinstance(child, nn.Linear) for child in module.modules())
                and not any(inside(found, join(block_path, name)) for found in attention)]

    def widens(path: str) -> bool:
        call = calls.get(path)
        return bool(call and call.stream_shape == stream and call.output_shape
                    and call.output_shape[:-1] == stream[:-1]
                    and call.output_shape[-1] != stream[-1])

    def narrows(path: str) -> bool:
        call = calls.get(path)
        return bool(call and call.output_shape == stream and call.stream_shape
                    and call.stream_shape[-1] != stream[-1])

    for first in (path for path in children if widens(path)):
        later = [path for path in children if narrows(path)
                 and calls[path].order > calls[first].order]
        if later:
            return calls[first].order, Branch("ffn", "ffn", relative(first, block_path),
                                              relative(later[0], block_path))
    return None
