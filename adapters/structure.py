"""What a model is made of, read from its modules alone (no forward pass): attention modules,
stacks of blocks, and the branches inside each block.

The rules look at structure, never at class or attribute names:

- an **attention module** is ``torch.nn.MultiheadAttention``, or a module with at least two
  ``nn.Linear`` (or one fused query-key-value ``nn.Linear``) whose class's ``forward`` — or a
  method of the class it calls — computes attention: its source mentions the attention-function
  registry of ``transformers``, ``scaled_dot_product_attention``, an ``eager_attention_forward``,
  ``multi_head_attention_forward`` or a softmax. Only the innermost such module counts (an encoder
  whose forward has a CTC softmax holds the real ones);
- a **stack** is an ``nn.ModuleList`` / ``nn.Sequential`` of layers of one class, every one of
  which contains an attention module; only the innermost such container counts, so convolutional
  frontends, attention-free adapters and the layers of one block are never stacks;
- the **branches** of a block, from the shapes of its weights: its attention modules
  (``self_attn``, and ``cross_attn`` for the second one of a block with two); ``conv``, the
  innermost module holding every ``nn.Conv1d`` of the block outside attention; ``ffn``, the
  innermost modules with two or more ``nn.Linear`` whose first takes and last returns the block's
  width, or, with none, two children holding one ``nn.Linear`` each that widen the stream and
  narrow it back (an inline ``fc2(act(fc1(x)))``). Two of a kind are numbered in order (``ffn1``, ``ffn2``).

What this cannot see without running the model — the order branches are called in, which stack
reads the audio and which the tokens, which attention reads another stack's output, where the
frontend ends — :mod:`.structure_calls` measures from one forward pass, when there is one.
"""

from __future__ import annotations

import functools
import inspect
import re
from dataclasses import dataclass, field

from torch import nn

from .hf_common import Branch

ATTENTION_MARKERS = ("all_attention_functions", "scaled_dot_product_attention",
                     "eager_attention_forward", "attention_interface",
                     "multi_head_attention_forward", "softmax")
"""Lower-cased words whose presence in a forward's source means it computes attention."""

REGISTRY_MARKER = "ALL_ATTENTION_FUNCTIONS"
"""Hugging Face attention modules look their kernel up in this registry (transformers >= 4.48)."""


@dataclass
class Stack:
    """A container of repeated blocks.

    Attributes:
        path: module path of the container.
        role: ``"encoder"``, ``"decoder"`` (reads the encoder through cross-attention), ``"lm"``
            (a text stack without cross-attention, e.g. the LLM of a speech LLM) or ``"extra"``
            (anything else: adapters after the encoder, projectors, a second tower).
        blocks: module paths of the blocks, in order.
        branches: per block, its branches (module paths relative to the block), in call order
            when a forward pass was seen, else in definition order.
    """

    path: str
    role: str
    blocks: list[str]
    branches: list[list[Branch]] = field(default_factory=list)


@functools.cache
def computes_attention(module_class: type) -> bool:
    """Whether ``module_class.forward``, or a method of the class it calls as ``self.name(``,
    mentions one of :data:`ATTENTION_MARKERS`."""
    source = _source(module_class.forward)
    for name in set(re.findall(r"self\.(\w+)\(", source)):
        method = getattr(module_class, name, None)
        if name != "forward" and inspect.isfunction(method):
            source += _source(method)
    return any(marker in source.lower() for marker in ATTENTION_MARKERS)


@functools.cache
def calls_attention_registry(module_class: type) -> bool:
    """Whether ``module_class.forward`` looks its kernel up in transformers' registry."""
    return REGISTRY_MARKER in _source(module_class.forward)


def _source(function: object) -> str:
    try:
        return inspect.getsource(function)  # type: ignore[arg-type]
    except (OSError, TypeError):
        return ""


def is_attention_module(module: nn.Module) -> bool:
    """See the module docstring: attention by what the module holds and computes."""
    if isinstance(module, nn.MultiheadAttention):
        return True
    if isinstance(module, (nn.ModuleList, nn.Sequential, nn.ModuleDict)):
        return False
    linears = [child for child in module.modules() if isinstance(child, nn.Linear)]
    fused = any(isinstance(child, nn.Linear) and child.out_features >= 3 * child.in_features
                for child in module.children())
    return (len(linears) >= 2 or fused) and computes_attention(type(module))


def attention_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The innermost attention modules of ``model`` by path, in module order."""
    qualifying = {path: module for path, module in model.named_modules()
                  if path and is_attention_module(module)}
    return {path: module for path, module in qualifying.items()
            if not any(other.startswith(path + ".") for other in qualifying)}


def find_stacks(model: nn.Module, attention: dict[str, nn.Module]) -> list[str]:
    """Paths of the stacks of ``model`` (see the module docstring), in module order."""
    def holds_attention(path: str) -> bool:
        return any(inside(found, path) for found in attention)

    candidates = []
    for path, module in model.named_modules():
        if not isinstance(module, (nn.ModuleList, nn.Sequential)) or len(module) == 0:
            continue
        if any(inside(path, found) and path != found for found in attention):
            continue
        layers = list(module.children())
        if len({type(layer) for layer in layers}) != 1:
            continue
        names = [join(path, name) for name, _ in module.named_children()]
        if all(holds_attention(name) for name in names):
            candidates.append(path)
    return [path for path in candidates
            if not any(other != path and inside(other, path) for other in candidates)]


def static_branches(block: nn.Module, attention: list[str]) -> list[Branch]:
    """The branches of ``block`` from its weights alone, in definition order.

    Args:
        block: one block of a stack.
        attention: paths (relative to ``block``) of the attention modules inside it.
    """
    width = block_width(block, attention)
    modules = dict(block.named_modules())
    outside = {path: module for path, module in modules.items()
               if path and not any(inside(path, found) or inside(found, path)
                                   for found in attention)}
    order = {path: index for index, path in enumerate(modules)}
    found: list[Branch] = []
    for index, path in enumerate(attention):
        kind = "cross_attn" if index == 1 else "self_attn"
        found.append(Branch(kind, kind, path))
    convolutions = [path for path, module in outside.items() if isinstance(module, nn.Conv1d)]
    holders = [path for path in outside
               if convolutions and all(inside(conv, path) for conv in convolutions)]
    conv_holder = max(holders, key=len) if holders else None
    if conv_holder is not None:
        found.append(Branch("conv", "conv", conv_holder))
    feed_forwards = [path for path, module in outside.items()
                     if not (conv_holder and (inside(path, conv_holder)
                                              or inside(conv_holder, path)))
                     and keeps_width(module, width)]
    feed_forwards = [path for path in feed_forwards
                     if not any(other != path and inside(other, path) for other in feed_forwards)]
    found += [Branch("ffn", "ffn", path) for path in feed_forwards]
    if not feed_forwards:
        inline = inline_feed_forward(block, width, attention)
        if inline is not None:
            found.append(inline)
    found.sort(key=lambda branch: order[branch.module])
    return numbered(found)


def block_width(block: nn.Module, attention: list[str]) -> int | None:
    """The width of the residual stream: what the first attention module projects from."""
    for path in attention:
        module = block.get_submodule(path)
        if isinstance(module, nn.MultiheadAttention):
            return module.embed_dim
        first = next((child for child in module.modules() if isinstance(child, nn.Linear)), None)
        if first is not None:
            return first.in_features
    return None


def keeps_width(module: nn.Module, width: int | None) -> bool:
    """Two or more ``nn.Linear``, the first taking and the last returning ``width`` features,
    and no convolution: the shape of a feed-forward branch."""
    linears = [child for child in module.modules() if isinstance(child, nn.Linear)]
    if len(linears) < 2 or width is None or any(isinstance(child, nn.Conv1d)
                                               for child in module.modules()):
        return False
    return linears[0].in_features == width and linears[-1].out_features == width


def inline_feed_forward(block: nn.Module, width: int | None, attention: list[str]
                        ) -> Branch | None:
    """Two children of ``block`` holding one ``nn.Linear`` each, the first widening the stream and
    a later one narrowing it back (``fc1`` / ``fc2``, or BERT's ``intermediate`` / ``output``), as
    ``Branch("ffn", "ffn", first, second)``."""
    if width is None:
        return None
    children = []
    for name, module in block.named_children():
        linears = [child for child in module.modules() if isinstance(child, nn.Linear)]
        if len(linears) == 1 and not any(inside(found, name) for found in attention):
            children.append((name, linears[0]))
    for index, (first, widening) in enumerate(children):
        if widening.in_features != width or widening.out_features == width:
            continue
        for second, narrowing in children[index + 1:]:
            if narrowing.out_features == width and narrowing.in_features != width:
                return Branch("ffn", "ffn", first, second)
    return None


def numbered(branches: list[Branch]) -> list[Branch]:
    """``branches`` with each kind that occurs more than once numbered in order (``ffn1``,
    ``ffn2``)."""
    counts: dict[str, int] = {}
    for branch in branches:
        counts[branch.kind] = counts.get(branch.kind, 0) + 1
    seen: dict[str, int] = {}
    result = []
    for branch in branches:
        if counts[branch.kind] == 1:
            result.append(branch._replace(suffix=branch.kind))
            continue
        seen[branch.kind] = seen.get(branch.kind, 0) + 1
        result.append(branch._replace(suffix=f"{branch.kind}{seen[branch.kind]}"))
    return result


def inside(path: str, ancestor: str) -> bool:
    """Whether module ``path`` is ``ancestor`` or lies inside it (``""`` is the root)."""
    return ancestor == "" or path == ancestor or path.startswith(ancestor + ".")


def join(parent: str, child: str) -> str:
    return f"{parent}.{child}" if parent else child


def relative(path: str, parent: str) -> str:
    return path[len(parent) + 1:] if parent else path
