"""Discovery: the structure of a model nobody wrote a site map for, found once and remembered.

:func:`discover` combines what the modules show (:mod:`.structure`: attention modules, stacks,
branches from weight shapes) with what one forward pass shows when the runner can make one
(:mod:`.structure_calls`: roles, cross-attention, branch order, the frontend). Without a forward
pass the roles come from the modules alone: a stack whose blocks hold two attention modules is a
decoder (self-, then cross-attention), the first other stack the encoder; there is then no
frontend site. Results are kept per model (weakly) until its modules change.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .structure import (
    Stack,
    attention_modules,
    calls_attention_registry,
    find_stacks,
    relative,
    static_branches,
)
from .structure_calls import Observation, assign_roles, observe, observed_branches
from .structure_frontend import frontend_of, to_frames_kind

PROBED_ROLES = ("encoder", "decoder")
"""Stacks that become sites; an LLM, adapter or projector stack is described but not probed."""


@dataclass
class Frontend:
    """The frontend: the module that first receives the audio, and how what it receives becomes
    ``(batch, frames, features)`` (see :func:`.structure_frontend.to_frames_kind`)."""

    module: str
    to_frames: str


@dataclass
class Structure:
    """What discovery found in one model.

    Attributes:
        stacks: every stack, in call order (definition order without a forward pass).
        attention: path of every attention module -> how its probabilities are captured:
            ``"registry"`` (Hugging Face attention-function registry), ``"multihead"``
            (``nn.MultiheadAttention``) or ``"function"`` (a softmax or SDPA call it makes).
        frontend: ``None`` without a forward pass, or where no module before the first encoder
            block depends on the audio.
        batch_first: per stack path, whether its hidden states are ``(batch, frames, width)``.
        stream_arguments: per module path, how its hidden state is passed (0: positionally,
            else the keyword).
        observed: whether a forward pass was seen.
        notes: what was guessed, and what could not be found.
    """

    stacks: list[Stack]
    attention: dict[str, str]
    frontend: Frontend | None = None
    batch_first: dict[str, bool] = field(default_factory=dict)
    stream_arguments: dict[str, int | str] = field(default_factory=dict)
    observed: bool = False
    notes: list[str] = field(default_factory=list)

    def stack(self, role: str) -> Stack | None:
        return next((stack for stack in self.stacks if stack.role == role), None)


_remembered: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[int, ...], Structure]] = \
    weakref.WeakKeyDictionary()


def discover(model: nn.Module, run: Callable[[torch.Tensor], Any] | None = None,
             audio: torch.Tensor | None = None) -> Structure:
    """The structure of ``model``; with ``run`` (runs the model on an audio tensor such as
    ``audio``) from a forward pass as well as its modules.

    A forward pass that fails leaves the structure to the modules alone, with a note saying why.
    """
    fingerprint = tuple(id(module) for module in model.modules())
    known = _remembered.get(model)
    if known is not None and known[0] == fingerprint and (known[1].observed or run is None):
        return known[1]
    structure = _from_modules(model)
    if run is not None and audio is not None and structure.stacks:
        try:
            observation = observe(model, run, audio, structure.stacks)
        except Exception as error:  # noqa: BLE001 (any failure of user code: fall back, say why)
            structure.notes.append(f"the discovery pass failed ({type(error).__name__}: "
                                   f"{error}); sites from the modules alone")
        else:
            _refine(model, structure, observation)
    if not structure.observed:
        _static_roles(structure)
    _remembered[model] = (fingerprint, structure)
    return structure


def _from_modules(model: nn.Module) -> Structure:
    attention = attention_modules(model)
    kinds = {path: ("multihead" if isinstance(module, nn.MultiheadAttention) else
                    "registry" if calls_attention_registry(type(module))
                    and hasattr(getattr(module, "config", None), "_attn_implementation_internal")
                    else "function")
             for path, module in attention.items()}
    stacks = []
    for path in find_stacks(model, attention):
        container = model.get_submodule(path)
        blocks = [f"{path}.{name}" if path else name for name, _ in container.named_children()]
        branches = [static_branches(model.get_submodule(block),
                                    [relative(found, block) for found in attention
                                     if found.startswith(block + ".")])
                    for block in blocks]
        stacks.append(Stack(path, "", blocks, branches))
    structure = Structure(stacks, kinds)
    for stack in stacks:
        first = model.get_submodule(stack.blocks[0])
        multihead = [module for module in first.modules() if isinstance(module, nn.MultiheadAttention)]
        structure.batch_first[stack.path] = multihead[0].batch_first if multihead else True
    if not attention:
        structure.notes.append("no attention module: no module computes a softmax over keys or "
                               "calls an attention kernel")
    elif not stacks:
        structure.notes.append("no stack: no nn.ModuleList / nn.Sequential of layers of one "
                               "class that each contain attention")
    return structure


def _refine(model: nn.Module, structure: Structure, observation: Observation) -> None:
    """Roles, cross-attention, branch order, batch layout and the frontend from the pass."""
    calls = observation.calls
    attention = list(structure.attention)
    for stack in structure.stacks:
        for index, block in enumerate(stack.blocks):
            seen = observed_branches(model, block, attention, calls)
            if seen is not None:
                stack.branches[index] = seen
        first = calls.get(stack.blocks[0])
        if first is not None and first.stream_shape is not None and len(first.stream_shape) == 3:
            batch = observation.audio_shape[0]
            structure.batch_first[stack.path] = not (first.stream_shape[0] != batch
                                                     and first.stream_shape[1] == batch)
    structure.stream_arguments = {path: call.stream_argument for path, call in calls.items()}
    structure.notes += assign_roles(structure.stacks, observation)
    for stack in structure.stacks:
        changing = [block for block in stack.blocks if block in calls
                    and calls[block].output_shape and calls[block].stream_shape
                    and calls[block].output_shape[:2] != calls[block].stream_shape[:2]]
        if changing and stack.role in PROBED_ROLES:
            structure.notes.append(
                f"{len(changing)} {stack.role} blocks change the number of frames (subsampling "
                f"inside the blocks): one length per stack cannot describe them, so frame "
                f"mappings and lengths past the first such block are approximate")
    structure.observed = True
    encoder = structure.stack("encoder")
    if encoder is None:
        structure.notes.append("no encoder: no stack's first block depends on the audio alone")
        return
    module, note = frontend_of(encoder, calls)
    if note is not None:
        structure.notes.append(f"frontend: {note}")
    if module is None:
        return
    if not structure.batch_first.get(encoder.path, True):
        structure.notes.append("no frontend site: the encoder's hidden states are time-first, "
                               "and the probes differentiate a batch-first encoder input")
        return
    kind = to_frames_kind(calls[module].stream_shape, observation.audio_shape)
    if kind == "unknown":
        structure.notes.append(f"frontend {module} receives {calls[module].stream_shape}, which "
                               f"is not the audio {observation.audio_shape} in any layout "
                               f"attnprobe knows; its input is recorded as received")
    structure.frontend = Frontend(module, kind)


def _static_roles(structure: Structure) -> None:
    """Roles without a forward pass (module docstring)."""
    encoder_taken = False
    for stack in structure.stacks:
        kinds = [branch.kind for branch in stack.branches[0]] if stack.branches else []
        if "cross_attn" in kinds:
            stack.role = "decoder"
        elif not encoder_taken:
            stack.role, encoder_taken = "encoder", True
        else:
            stack.role = "extra"
    if structure.stacks:
        structure.notes.append("no forward pass to learn from (the runner made no example "
                               "batch): roles from the modules alone (a block with two attention "
                               "modules is a decoder's: self, then cross), branches in "
                               "definition order, no frontend site")
