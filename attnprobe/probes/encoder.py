"""The encoder as the gradient probes see it: its blocks, and the input they are differentiated
with respect to (the ``encoder.frontend`` output, or the model input where there is no frontend
site)."""

from __future__ import annotations

import torch

from attnprobe.adapters import SiteMap
from attnprobe.batch import SpeechBatch
from attnprobe.errors import CapabilityError, GradientUnavailableError, InputError
from attnprobe.sites import FRONTEND_SITE
from attnprobe.trace import Trace


def encoder_layers(site_map: SiteMap) -> list[int]:
    """Indices of the site map's encoder blocks, in order.

    Raises:
        CapabilityError: the site map has no ``encoder.<i>`` sites.
    """
    layers = site_map.encoder_layers
    if not layers:
        raise CapabilityError(f"the {site_map.family} site map found no encoder blocks "
                              f"('encoder.<i>' sites; attnprobe.describe(model) says why); these "
                              f"probes need them")
    return layers


def differentiable_inputs(batch: SpeechBatch) -> SpeechBatch:
    """``batch`` with inputs that are a fresh leaf requiring grad, so that every tensor computed
    from them is in the graph even if the model's parameters are frozen."""
    if not batch.inputs.is_floating_point():
        return batch
    return batch.with_inputs(batch.inputs.detach().clone().requires_grad_(True))


def encoder_input_of(traced: Trace, batch: SpeechBatch, site_map: SiteMap
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The encoder input ``(batch, frames, width)`` and its lengths ``(batch,)``: the frontend
    output when the site map has a frontend site (traced with ``attach=True``), otherwise the
    model input itself."""
    if FRONTEND_SITE in traced:
        binding = site_map.binding(FRONTEND_SITE)
        if binding is not None and not binding.batch_first:
            raise GradientUnavailableError(
                f"the {site_map.family} frontend output is time-first; the trace hands it over "
                f"transposed, a copy that is not on the path to the blocks, so gradients with "
                f"respect to it are zero. Make its binding batch-first in the adapter")
        record = traced[FRONTEND_SITE]
        return record.output, record.lengths
    if batch.inputs.dim() != 3:
        raise InputError(f"the {site_map.family} adapter has no '{FRONTEND_SITE}' site and the "
                         f"model input is not (batch, frames, features); add a frontend site to "
                         f"the adapter so the probes know the encoder input")
    return batch.inputs, batch.input_lengths
