"""One Hugging Face speech family through attnprobe's generic path only: the site map found by
structure and the runner read off the model, with no hand-written site map registered.

:func:`exercise` builds the family's tiny model (:mod:`tests.hf_families`) and measures what the
acceptance test asserts and ``benchmarks/generic_families.py`` tabulates: the trace (output
change, hooks left, registry entries left), the attention probabilities (captured, rows summing to
one over the valid keys), the reversal report (which probes ran) and gradient alignment (where
the model has labels to align), with the seconds each took.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

import attnprobe
from attnprobe import SpeechBatch
from attnprobe.adapters import generic_adapter, registry
from attnprobe.adapters.description import capabilities
from attnprobe.adapters.hf_inputs import main_tensor
from attnprobe.errors import CapabilityError
from attnprobe.lengths import valid_mask
from tests.hf_families import Family, tiny_model

CANNOT_WORK = {
    "dia": "text-to-speech: audio enters as codec tokens through input_ids",
    "kyutai_speech_to_text": "audio enters as Mimi codec tokens through input_ids; the codec runs "
                             "in generate / the processor",
    "pe_audio": "contrastive audio-text model: its forward needs input_ids as well",
    "pop2piano": "music to MIDI: its extractor needs essentia, and its input is not speech frames",
    "qwen2_5_omni": "omni wrapper: forward(input) takes no audio argument (its thinker's audio "
                    "tower is the Qwen2-Audio encoder, which works)",
    "qwen3_omni_moe": "its default config does not build (the talker config lacks "
                      "shared_expert_intermediate_size)",
    "muse_spark_audio": "a convolution-only tower: no attention, so no blocks",
    "vibevoice": "text-to-speech; its audio tokenizer is a convolutional VAE without attention",
    "vibevoice_asr": "its audio tokenizers are convolutional VAEs without attention (only the "
                     "LLM has blocks)",
    "qwen2_audio": "speech LLM without get_audio_features: the number of audio placeholder "
                   "tokens is the processor's business (its encoder, qwen2_audio_encoder, works)",
    "voxtral": "speech LLM whose default config has no audio_token_id (checkpoints set it; its "
               "encoder works)",
    "voxtral_realtime": "streaming-only: its forward needs input_ids or embeddings and caches "
                        "(its encoder works)",
    "granite_speech": "speech LLM whose projector windows the audio: the placeholder count "
                      "comes from its processor",
    "granite_speech_plus": "as granite_speech",
    "moss_transcribe_diarize": "speech LLM whose get_audio_features also needs a waveform-level "
                               "padding mask (its audio tower works)",
    "nemo_speechlm": "speech LLM whose prompt layout comes from its processor (its audio "
                     "towers work)",
    "qwen3_asr": "packs every utterance into one sequence of fixed chunks (cu_seqlens): the "
                 "blocks see no batch or per-utterance time axis",
    "qwen3_asr_encoder": "as qwen3_asr",
}
"""Families the generic path does not handle, and why (the README lists them)."""

NO_PROBABILITIES = {
    "gemma3n_audio": "attention over local chunks (a 5-d softmax): no (queries, keys) matrix",
    "gemma4_audio": "as gemma3n_audio",
}
"""Families whose blocks are found but whose attention probabilities are not captured."""

MAX_FRAMES = 4
"""Output frames per sequence the report's frame mapping probes (keeps every family < 20 s)."""


@dataclass
class FamilyResult:
    """What :func:`exercise` measured for one family (``None``: not reached)."""

    family: Family
    sites: int = 0
    output_difference: float | None = None
    hooks_left: bool | None = None
    registry_left: bool | None = None
    attention_sites: int = 0
    attention_captured: int = 0
    attention_row_error: float = 0.0
    report_ran: list[str] = field(default_factory=list)
    report_unavailable: dict[str, str] = field(default_factory=dict)
    verdict: str | None = None
    alignments: int | None = None
    alignment_in_seconds: bool | None = None
    alignment_refusal: str | None = None
    batch_size: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


@contextmanager
def generic_only() -> Iterator[None]:
    """No site map registered: only the generic path can answer."""
    saved = list(registry.site_maps)
    registry.site_maps[:] = []
    try:
        yield
    finally:
        registry.site_maps[:] = saved


STAGES = ("trace", "report", "alignment")


@functools.cache
def prepared(family: Family) -> tuple[torch.nn.Module, Any, SpeechBatch, float]:
    """The family's tiny model, its generic adapter, its runner's example batch and the seconds
    this took (built once per process: the acceptance test checks its stages separately)."""
    started = time.perf_counter()
    with generic_only():
        model = tiny_model(family)
        adapter = generic_adapter(model)
    assert adapter.site_map.family == "generic"
    if adapter.runner.family != "hf-generic":
        raise CapabilityError("; ".join(adapter.site_map.notes))
    return model, adapter, adapter.runner.example_batch(), time.perf_counter() - started


def exercise(family: Family, stages: tuple[str, ...] = STAGES) -> FamilyResult:
    """Run ``family`` through the generic path (module docstring); raises where it fails."""
    model, adapter, batch, build_seconds = prepared(family)
    result = FamilyResult(family, batch_size=batch.batch_size)
    result.seconds["build"] = build_seconds
    with generic_only():
        if "trace" in stages:
            mark = time.perf_counter()
            _trace(model, adapter, batch, result)
            result.seconds["trace"] = time.perf_counter() - mark
        if "report" in stages:
            mark = time.perf_counter()
            report = attnprobe.reversal_report(model, batch, projections=1,
                                               max_frames=MAX_FRAMES, chunk_size=1,
                                               adapter=adapter)
            result.report_ran, result.verdict = report.ran, report.verdict
            result.report_unavailable = dict(report.unavailable)
            result.seconds["report"] = time.perf_counter() - mark
        if "alignment" in stages:
            mark = time.perf_counter()
            _align(model, adapter, batch, result)
            result.seconds["alignment"] = time.perf_counter() - mark
    return result


def _trace(model: torch.nn.Module, adapter: attnprobe.adapters.Adapter, batch: SpeechBatch,
           result: FamilyResult) -> None:
    from transformers import AttentionInterface

    hooks_before = _hooks(model)
    with torch.no_grad():
        expected = main_tensor(adapter.runner.run(batch))
        with attnprobe.trace(model, adapter=adapter.site_map,
                             input_lengths=batch.input_lengths) as traced:
            output = main_tensor(adapter.runner.run(batch))
    both_nan = torch.isnan(expected) & torch.isnan(output)
    result.output_difference = float((output - expected).masked_fill(both_nan, 0).abs().max())
    result.hooks_left = _hooks(model) != hooks_before
    result.registry_left = "attnprobe" in AttentionInterface._global_mapping
    result.sites = len(traced.sites)
    attention = [record for record in traced if record.site.is_attention]
    result.attention_sites = len(attention)
    for record in attention:
        if not record.attentions:
            continue
        result.attention_captured += 1
        for captured in record.attentions:
            # Every valid query's row is a distribution over the keys (padded rows may be
            # anything: some models mask them out entirely).
            sums = captured.value.float().sum(-1)
            rows = valid_mask(captured.lengths.to(sums.device), sums.shape[-1])[:, None, :]
            error = float(((sums - 1).abs() * rows).max())
            result.attention_row_error = max(result.attention_row_error, error)


def _align(model: torch.nn.Module, adapter: attnprobe.adapters.Adapter, batch: SpeechBatch,
           result: FamilyResult) -> None:
    can = capabilities(adapter.runner)
    # Three labels per item: each costs a backward pass through the whole model.
    if batch.labels is None:
        generator = torch.Generator().manual_seed(1)
        labels = torch.randint(1, 5, (batch.batch_size, 3), generator=generator)
    else:
        labels = batch.labels[:, :3]
    batch = SpeechBatch(batch.inputs, batch.input_lengths, labels,
                        torch.full((batch.batch_size,), labels.shape[1]))
    try:
        alignments = attnprobe.gradient_alignment(model, batch, adapter=adapter, chunk_size=1)
    except CapabilityError as refusal:
        assert not (can["label_log_probs"] or can["ctc_log_probs"]), refusal
        result.alignment_refusal = str(refusal)
        return
    result.alignments = len(alignments)
    result.alignment_in_seconds = all(alignment.in_seconds for alignment in alignments)


def _hooks(model: torch.nn.Module) -> list[tuple[str, int, int, int]]:
    return [(name, len(module._forward_hooks), len(module._forward_pre_hooks),
             len(module._backward_hooks)) for name, module in model.named_modules()]
