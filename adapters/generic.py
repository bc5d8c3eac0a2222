"""The generic site map: sites of any model, found by structure (:mod:`.discovery`).

Used for every model that no hand-written site map matches, and on request for any model
(``adapter=DiscoveredSites``, or :func:`attnprobe.adapters.generic_adapter`). Sites keep the
documented names: ``encoder.frontend``, ``encoder.{i}`` (the blocks of the encoder stack),
``encoder.{i}.self_attn`` / ``ffn`` (``ffn1``, ``ffn2``) / ``conv``, ``decoder.{i}``,
``decoder.{i}.self_attn`` / ``cross_attn`` / ``ffn``. Stacks that are neither (an LLM, an adapter,
a projector) are not sites; :func:`attnprobe.describe` lists them.

Attention probabilities come from the attention-function registry for Hugging Face modules, from
``nn.MultiheadAttention``'s own weights, and otherwise from the softmax or SDPA call the module
makes (:mod:`.function_attention`).

Lengths: each probed stack's first block reveals them through whatever padding mask it receives
(:func:`attnprobe.lengths.lengths_from_attention_mask`), or through nested tensors; and when the
trace is told the batch's valid input frames (the probes always do), the runner's
``encoder_lengths`` maps them to encoder frames — which is how models whose encoder ignores
padding (Whisper pads to 30 s) get only the frames that carry audio.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from attnprobe.batch import SpeechBatch
from attnprobe.capture import AttentionCapture, pick_argument
from attnprobe.lengths import lengths_from_attention_mask
from attnprobe.sites import Site

from .discovery import PROBED_ROLES, Structure, discover
from .function_attention import FunctionAttention
from .hf_common import FrontendRelay
from .recompute import DerivedTap
from .runner import Runner
from .site_map import LengthEntry, SiteBinding, SiteMap
from .structure_calls import stream_argument
from .torch_mha import MultiheadAttentionCapture

TO_FRAMES = {
    "frames": lambda received: received,
    "transposed": lambda received: received.transpose(1, 2),
    "samples": lambda received: received.unsqueeze(-1),
    "unknown": lambda received: received,
}
"""What the frontend receives -> ``(batch, frames, features)``, per :class:`.discovery.Frontend`
kind."""

_warned: weakref.WeakSet[nn.Module] = weakref.WeakSet()


class DiscoveredSites(SiteMap):
    """Sites found by structure; see the module docstring.

    Args:
        model: any model.
        runner: how to run it (default: :func:`generic_runner`'s); discovery runs it once on
            ``example`` to see roles, cross-attention, branch order and the frontend.
        example: a batch to run for that (default: the runner's ``example_batch()``; without one,
            discovery reads the modules alone).
    """

    family = "generic"
    description = "any model: sites found by structure (attention modules, stacks of blocks)"

    def __init__(self, model: nn.Module, runner: Runner | None = None,
                 example: SpeechBatch | None = None) -> None:
        super().__init__(model)
        if runner is None:
            runner, reason = generic_runner(model)
            if reason is not None:
                self.notes.append(reason)
        self.runner = runner
        if example is None:
            example = self.runner.example_batch()
        run = None
        if example is not None:
            runner_of = self.runner

            def run(audio: torch.Tensor) -> Any:
                return runner_of.run(example.with_inputs(audio))

        self.structure: Structure = discover(model, run, None if example is None
                                             else example.inputs)
        self.notes += self.structure.notes
        self._switch: Any = None

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return False

    @classmethod
    def bind(cls, model: nn.Module, runner: Runner | None = None,
             example: SpeechBatch | None = None) -> DiscoveredSites:
        return cls(model, runner, example)

    def default_runner(self) -> Runner:
        return self.runner

    def bindings(self) -> list[SiteBinding]:
        structure = self.structure
        found: list[SiteBinding] = []
        encoder = structure.stack("encoder")
        if encoder is not None and structure.frontend is not None:
            frontend = structure.frontend
            first_block = encoder.blocks[0]
            relay = FrontendRelay(self.model.get_submodule(frontend.module),
                                  self.model.get_submodule(first_block),
                                  TO_FRAMES[frontend.to_frames],
                                  features_name=self._keyword(frontend.module),
                                  stream_name=self._keyword(first_block) or "hidden_states")
            site = Site("encoder.frontend", "frontend", "encoder", None, frontend.module)
            found.append(SiteBinding(site, relay, input_name="features"))
        for role in PROBED_ROLES:
            stack = structure.stack(role)
            if stack is None:
                continue
            batch_first = structure.batch_first.get(stack.path, True)
            for layer, (block, branches) in enumerate(zip(stack.blocks, stack.branches)):
                found.append(SiteBinding(Site(f"{role}.{layer}", "block", role, layer, block),
                                         self.model.get_submodule(block),
                                         input_name=self._keyword(block) or "hidden_states",
                                         batch_first=batch_first))
                for branch in branches:
                    path = f"{block}.{branch.module}"
                    site = Site(f"{role}.{layer}.{branch.suffix}", branch.kind, role, layer, path)
                    found.append(self._branch_binding(
                        site, path, branch.output_module and f"{block}.{branch.output_module}",
                        f"{block}.{branch.attention_module or branch.module}", batch_first))
        return found

    def _branch_binding(self, site: Site, path: str, output_path: str | None,
                        attention_path: str, batch_first: bool) -> SiteBinding:
        module = self.model.get_submodule(path)
        if isinstance(module, nn.MultiheadAttention):
            return SiteBinding(site, DerivedTap(module, _dense_query, observe="input"),
                               output_module=DerivedTap(module, _dense_output), input_name=None,
                               batch_first=module.batch_first,
                               attention=MultiheadAttentionCapture(module))
        output_module = None if output_path is None else self.model.get_submodule(output_path)
        return SiteBinding(site, module, output_module=output_module,
                           input_name=self._keyword(path) or "hidden_states",
                           batch_first=batch_first,
                           attention=self._capture(attention_path) if site.is_attention
                           else None)

    def _capture(self, path: str) -> AttentionCapture:
        module = self.model.get_submodule(path)
        if self.structure.attention.get(path) == "registry":
            from .hf_attention import ImplementationSwitch, RegistryAttention

            if self._switch is None:
                # One switch per site map: every attention capture of a trace shares its hold.
                self._switch = ImplementationSwitch(self.model)
            return RegistryAttention(module, self._switch)
        return FunctionAttention(module)

    def _keyword(self, path: str) -> str | None:
        where = self.structure.stream_arguments.get(path, 0)
        return where if isinstance(where, str) else None

    def length_entries(self) -> list[LengthEntry]:
        entries = []
        for role in PROBED_ROLES:
            stack = self.structure.stack(role)
            if stack is not None:
                entries.append(LengthEntry(self.model.get_submodule(stack.blocks[0]),
                                           _mask_lengths(role, self.structure.batch_first.get(
                                               stack.path, True))))
        return entries

    def lengths_for_inputs(self, input_lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        found = {"features": input_lengths}
        encoder = self.runner.encoder_lengths(input_lengths)
        if encoder is not None:
            found["encoder"] = encoder
        return found


def generic_runner(model: nn.Module) -> tuple[Runner, str | None]:
    """The runner the generic site map pairs with ``model``, and why it cannot run the model when
    it cannot: the Hugging Face one for a ``transformers`` speech model, else the base
    :class:`Runner` (its ``run`` asks for ``runner=``)."""
    try:
        from transformers import PreTrainedModel
    except ImportError:
        return Runner(model), None
    if not isinstance(model, PreTrainedModel):
        return Runner(model), None
    from attnprobe.errors import CapabilityError

    from .hf_generic import HuggingFaceGenericRunner

    try:
        return HuggingFaceGenericRunner(model), None
    except CapabilityError as error:
        return Runner(model), f"no runner: {error}"


def discover_site_map(model: nn.Module, runner: Runner | None = None,
                      example: SpeechBatch | None = None) -> DiscoveredSites | None:
    """A :class:`DiscoveredSites` for a model no site map matches, or ``None`` when it has no
    sites. Warns once per model, naming what was found."""
    site_map = DiscoveredSites(model, runner, example)
    found = site_map.bindings()
    if not found:
        return None
    if model not in _warned:
        _warned.add(model)
        stacks = ", ".join(f"{stack.role} {stack.path} ({len(stack.blocks)} blocks)"
                           for stack in site_map.structure.stacks)
        warnings.warn(
            f"attnprobe has no adapter for {type(model).__qualname__}; found by structure: "
            f"{stacks}; {len(found)} sites. attnprobe.describe(model) shows them and what was "
            f"not found; register a site map for exact sites (attnprobe.adapters."
            f"register_adapter).", stacklevel=3)
    return site_map


def _mask_lengths(axis: str, batch_first: bool) -> Any:
    """Lengths along ``axis`` from the padding mask (or nested tensor) a block receives."""
    def lengths(args: tuple, kwargs: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        stream, _ = stream_argument(tuple(args), dict(kwargs))
        if stream is None:
            return {}
        if stream.is_nested:
            return {axis: torch.tensor([item.size(0) for item in stream.unbind()])}
        if stream.dim() != 3:
            return {}
        batch, frames = stream.shape[:2] if batch_first else (stream.shape[1], stream.shape[0])
        found = [lengths_from_attention_mask(value, batch, frames)
                 for value in (*args, *kwargs.values())
                 if isinstance(value, torch.Tensor) and value is not stream]
        known = [item for item in found if item is not None]
        if not known:
            return {}
        return {axis: torch.stack(known).amin(dim=0).cpu()}

    return lengths


def _dense(tensor: torch.Tensor | None) -> torch.Tensor | None:
    if tensor is not None and tensor.is_nested:
        return tensor.to_padded_tensor(0.0)
    return tensor


def _dense_query(args: tuple, kwargs: dict, _output: Any) -> torch.Tensor | None:
    return _dense(pick_argument(args, kwargs, 0, "query"))


def _dense_output(_args: tuple, _kwargs: dict, output: Any) -> torch.Tensor | None:
    return _dense(output[0])
