"""Gradients at the output of an encoder block (``gradient_input="encoder.<i>"``).

The trace keeps the block's output attached to the autograd graph (``attach=True``), so the
labels' gradients are taken there: frames at the encoder's rate (Whisper: 20 ms), and a backward
pass that stops at that block instead of running through the blocks below it. Zeyer et al. (2026)
found intermediate encoder layers can beat the input for Whisper; on TIMIT the last block of
Whisper tiny.en and base won (``benchmarks/alignment_timit.py``). Only meaningful where time keeps
its order up to that block: a reversed encoder's output frames run backwards.

For the last block, gradients at the padding frames are never needed and cannot reach the valid
frames, so the runner may skip their backward work (``encoder_output_gradients_only``).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from attnprobe.adapters import Adapter
from attnprobe.batch import SpeechBatch
from attnprobe.errors import CapabilityError
from attnprobe.model_state import evaluation_mode, frozen_parameters
from attnprobe.trace import trace

from .forward import ForwardPass, InputTransform, LabelForward


def block_site(adapter: Adapter, block: int | str) -> tuple[str, bool]:
    """The site name of ``block`` (an index or ``"last"``) and whether it is the last block."""
    blocks = [f"encoder.{layer}" for layer in adapter.site_map.encoder_layers]
    if not blocks:
        raise CapabilityError(f"the {adapter.family} adapter has no encoder blocks to take "
                              f"gradients at; use gradient_input='features'")
    name = blocks[-1] if block == "last" else f"encoder.{block}"
    if name not in blocks:
        raise CapabilityError(f"gradient_input='encoder.{block}', but the encoder has blocks "
                              f"encoder.0 .. encoder.{len(blocks) - 1}; pick one of them or "
                              f"'encoder.last'")
    return name, name == blocks[-1]


def block_output_forward(model: nn.Module, adapter: Adapter, batch: SpeechBatch, block: int | str,
                         label_log_probs: object, subsampling: int) -> LabelForward:
    """A :class:`LabelForward` whose scored input is the output of encoder ``block``.

    Args:
        label_log_probs: ``(runner, batch) -> (batch, labels)``, the per-label quantity.
        subsampling: input frames per encoder frame.
    """
    site, last = block_site(adapter, block)

    def run(transform: InputTransform | None) -> ForwardPass:
        if transform is not None:
            raise CapabilityError(
                "SmoothGrad and Integrated Gradients change the model input; use them with "
                "gradient_input='features' or 'encoder_input', not an encoder block")
        encoder_frames = -(-batch.input_lengths // subsampling)
        # The block's output joins the autograd graph through the inputs (the parameters stay
        # frozen); the backward stops at the block all the same.
        inputs = batch.inputs.detach()
        if inputs.is_floating_point():
            inputs = inputs.clone().requires_grad_(True)
        skipping = (adapter.runner.encoder_output_gradients_only(encoder_frames) if last
                    else contextlib.nullcontext())
        with evaluation_mode(model), frozen_parameters(model), \
                trace(model, site, capture={"output"}, attach=True,
                      adapter=adapter.site_map) as traced, skipping:
            log_probs = label_log_probs(adapter.runner,  # type: ignore[operator]
                                        batch.with_inputs(inputs))
        record = traced[site]
        if record.calls != 1:
            raise CapabilityError(f"the {site} site ran {record.calls} times in one "
                                  f"teacher-forced pass; score gradient_input='features'")
        captured = record.outputs[0]
        if not captured.value.requires_grad:
            raise CapabilityError(f"the output of {site} is not in the autograd graph of the "
                                  f"label log-probabilities; score gradient_input='features'")
        frames = torch.minimum(captured.lengths.to(encoder_frames.device), encoder_frames)
        assert batch.label_lengths is not None
        return ForwardPass(log_probs, captured.value, frames.to(captured.value.device),
                           batch.label_lengths.to(captured.value.device))

    return LabelForward(run, subsampling)
