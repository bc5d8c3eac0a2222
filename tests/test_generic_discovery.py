"""The generic site map on its own terms: the sites it finds agree with the hand-written site maps,
a module that is not a block is never named like one, a planted flip is found at its block in
models only the generic path knows, and Whisper's padded window is probed on its audio only."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import attnprobe
from attnprobe import SpeechBatch
from attnprobe.adapters import find_site_map, generic_adapter, resolve_adapter
from attnprobe.probes import streaming_probes
from attnprobe.testing import plant_reversal
from tests.hf_models import FAMILIES
from tests.toolkit_conformer import ToolkitRunner, toolkit_asr, toolkit_batch

pytest.importorskip("transformers")


def site_table(site_map: attnprobe.adapters.SiteMap, model: nn.Module) -> list[tuple]:
    paths = {module: path for path, module in model.named_modules()}
    return [(binding.site.name, binding.site.kind, binding.site.module_path,
             paths.get(binding.output_module) if binding.output_module is not None else None)
            for binding in site_map.bindings()]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_generic_sites_equal_the_hand_written_site_maps(name: str) -> None:
    model = FAMILIES[name].build("eager")
    hand_written = find_site_map(model)
    assert hand_written.family != "generic"
    generic = generic_adapter(model).site_map
    assert site_table(generic, model) == site_table(hand_written, model)


def test_an_attention_stack_after_the_encoder_is_not_named_like_its_blocks() -> None:
    from tests.hf_families import speech_families, tiny_model

    family = next(family for family in speech_families() if family.model_type == "seamless_m4t")
    model = tiny_model(family)
    adapter = generic_adapter(model)
    roles = {stack.path: stack.role for stack in adapter.site_map.structure.stacks}
    assert roles["speech_encoder.adapter.layers"] == "extra"
    assert roles["speech_encoder.encoder.layers"] == "encoder"
    assert not any(site.module_path.startswith("speech_encoder.adapter")
                   for site in (binding.site for binding in adapter.site_map.bindings()))
    assert "speech_encoder.adapter.layers (1 blocks): not probed" in str(
        attnprobe.describe(model, adapter=adapter))


class AdapterAfterSubsampling(nn.Module):
    """An attention layer between the frontend and the blocks: attention, but not a block."""

    def __init__(self) -> None:
        super().__init__()
        self.frontend = nn.Linear(6, 8)
        self.adapter = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.layers = nn.ModuleList(nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0,
                                                               batch_first=True)
                                    for _ in range(2))

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        padding = ~attnprobe.lengths.valid_mask(lengths, features.shape[1])
        x = self.adapter(self.frontend(features), src_key_padding_mask=padding)
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=padding)
        return x


class FeaturesRunner(attnprobe.adapters.Runner):
    def run(self, batch: SpeechBatch) -> torch.Tensor:
        return self.model(batch.inputs, batch.input_lengths)


def test_an_attention_layer_outside_the_stack_is_not_a_block() -> None:
    model = AdapterAfterSubsampling().eval()
    batch = SpeechBatch(torch.randn(2, 5, 6), torch.tensor([5, 3]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adapter = resolve_adapter(model, runner=FeaturesRunner, example=batch)
    blocks = [binding.site.module_path for binding in adapter.site_map.bindings()
              if binding.site.kind == "block"]
    assert blocks == ["layers.0", "layers.1"]
    assert adapter.site_map.binding("encoder.frontend").site.module_path == "frontend"


# ----------------------------------------------------------------------------- toolkit Conformer
def toolkit_adapter(model: nn.Module, batch: SpeechBatch) -> attnprobe.adapters.Adapter:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return resolve_adapter(model, runner=ToolkitRunner, example=batch)


def test_toolkit_conformer_sites_follow_the_call_order_and_the_audio() -> None:
    model, batch = toolkit_asr(), toolkit_batch([6, 4], [5, 4])
    adapter = toolkit_adapter(model, batch)
    names = [binding.site.name for binding in adapter.site_map.bindings()]
    assert names[:6] == ["encoder.frontend", "encoder.0", "encoder.0.ffn1", "encoder.0.self_attn",
                         "encoder.0.conv", "encoder.0.ffn2"]
    assert adapter.site_map.binding("encoder.0.ffn1").site.module_path == \
        "encoder.encoders.0.feed_forward_macaron"
    assert adapter.site_map.binding("decoder.1.cross_attn").site.module_path == \
        "decoder.decoders.1.src_attn"
    with attnprobe.trace(model, adapter=adapter) as traced:
        ToolkitRunner(model).run(batch)
    assert torch.equal(traced["encoder.2"].lengths, torch.tensor([6, 4]))
    assert torch.equal(traced["decoder.0.cross_attn"].key_lengths, torch.tensor([6, 4]))
    attention = traced["encoder.1.self_attn"]
    assert torch.allclose(attention.attention.sum(-1), torch.ones(2, 2, 6))
    assert torch.all(attention.attention[1, :, :, 4:] == 0)


@settings(max_examples=8, deadline=None)
@given(blocks=st.integers(2, 4), frames=st.lists(st.integers(5, 11), min_size=1, max_size=3),
       data=st.data())
def test_a_flip_planted_in_a_model_only_the_generic_path_knows_is_found_at_its_block(
        blocks: int, frames: list[int], data: st.DataObject) -> None:
    planted = data.draw(st.one_of(st.none(), st.integers(0, blocks - 1)), label="planted")
    model = toolkit_asr(blocks=blocks, seed=blocks)
    batch = toolkit_batch(frames, [5] * len(frames), seed=len(frames))
    adapter = toolkit_adapter(model, batch)
    if planted is None:
        report = attnprobe.reversal_report(model, batch, projections=1, adapter=adapter)
    else:
        with plant_reversal(model, planted, adapter=adapter):
            report = attnprobe.reversal_report(model, batch, projections=1, adapter=adapter)
    assert report.family == "generic"
    assert report.verdict == ("not reversed" if planted is None else
                              f"reversed at block {planted}")
    assert [item.shape[-1] for item in report.frame_mapping.maps] == frames


@settings(max_examples=5, deadline=None)
@given(lengths=st.lists(st.integers(120, 300), min_size=1, max_size=3), data=st.data())
def test_a_flip_planted_in_a_hugging_face_family_without_an_adapter_is_found(
        lengths: list[int], data: st.DataObject) -> None:
    planted = data.draw(st.one_of(st.none(), st.integers(0, 1)), label="planted")
    model, adapter = _lasr()
    generator = torch.Generator().manual_seed(len(lengths))
    batch = SpeechBatch(torch.randn(len(lengths), max(lengths), 128, generator=generator),
                        torch.tensor(lengths))
    if planted is None:
        report = attnprobe.reversal_report(model, batch, projections=1, adapter=adapter)
    else:
        with plant_reversal(model, planted, adapter=adapter):
            report = attnprobe.reversal_report(model, batch, projections=1, adapter=adapter)
    assert report.verdict == ("not reversed" if planted is None else
                              f"reversed at block {planted}")
    encoder_frames = adapter.runner.encoder_lengths(batch.input_lengths).tolist()
    assert [item.shape[-1] for item in report.frame_mapping.maps] == encoder_frames


_LASR: list = []


def _lasr() -> tuple[nn.Module, attnprobe.adapters.Adapter]:
    if not _LASR:
        from tests.hf_families import speech_families, tiny_model

        family = next(family for family in speech_families() if family.model_type == "lasr_ctc")
        model = tiny_model(family)
        _LASR.extend([model, generic_adapter(model)])
    return _LASR[0], _LASR[1]


def test_the_probes_take_a_runner_for_a_model_attnprobe_cannot_run() -> None:
    model, batch = toolkit_asr(), toolkit_batch([6, 5], [5, 5])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(attnprobe.CapabilityError, match="pass runner="):
            attnprobe.reversal_report(model, batch)
        streamed = streaming_probes(model, batch, runner=ToolkitRunner)
        monitor = attnprobe.FlipMonitor(model, batch, every=1, runner=ToolkitRunner,
                                        projections=1)
        record = monitor.step(1)
        alignments = attnprobe.gradient_alignment(model, batch, runner=ToolkitRunner)
    assert streamed.cross_attention is not None and streamed.dominance is not None
    assert record is not None and len(record.reversal_scores) == 3
    assert [len(alignment.labels) for alignment in alignments] == [5, 5]


class NoShiftRunner(ToolkitRunner):
    frame_shift_seconds = None


def test_an_unknown_frame_shift_gives_frames_instead_of_seconds() -> None:
    model, batch = toolkit_asr(), toolkit_batch([8], [4])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alignment, = attnprobe.gradient_alignment(model, batch, runner=NoShiftRunner)
        described = str(attnprobe.describe(model, runner=NoShiftRunner, example=batch))
    assert not alignment.in_seconds and alignment.duration_s is None
    assert all(word.start_s is None and word.end_frame > word.start_frame
               for word in alignment.words)
    assert "frame shift unknown" in str(alignment)
    assert "alignments count frames" in described
    with pytest.raises(attnprobe.CapabilityError, match="frame_shift_seconds"):
        attnprobe.alignment.decoding.export.ctm_text("utterance", alignment)


# ----------------------------------------------------------------------------- padded windows
def whisper_window(seed: int = 0) -> nn.Module:
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(seed)
    config = WhisperConfig(vocab_size=24, num_mel_bins=8, d_model=16, encoder_layers=3,
                           decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                           encoder_ffn_dim=24, decoder_ffn_dim=24, max_source_positions=40,
                           max_target_positions=16, pad_token_id=0, bos_token_id=1,
                           eos_token_id=2, decoder_start_token_id=1, attn_implementation="eager")
    return WhisperForConditionalGeneration(config).eval()


@pytest.mark.parametrize("generic", [False, True], ids=["hand-written", "generic"])
@pytest.mark.parametrize("planted", [None, 0, 2])
def test_a_flip_over_the_audio_frames_of_a_padded_whisper_window_is_found(
        generic: bool, planted: int | None) -> None:
    model = whisper_window()
    # 18 and 11 of the window's 80 mel frames carry audio: 9 and 6 of its 40 encoder frames.
    generator = torch.Generator().manual_seed(0)
    batch = SpeechBatch(torch.randn(2, 18, 8, generator=generator), torch.tensor([18, 11]),
                        torch.randint(3, 24, (2, 5), generator=generator), torch.tensor([5, 5]))
    adapter = generic_adapter(model) if generic else resolve_adapter(model)
    if planted is None:
        report = attnprobe.reversal_report(model, batch, projections=1, adapter=adapter)
    else:
        with plant_reversal(model, planted, adapter=adapter, input_lengths=batch.input_lengths):
            report = attnprobe.reversal_report(model, batch, projections=1, adapter=adapter)
    assert report.verdict == ("not reversed" if planted is None else
                              f"reversed at block {planted}")
    assert [item.shape[1:] for item in report.frame_mapping.maps] == [(9, 9), (6, 6)]


@pytest.mark.parametrize("generic", [False, True], ids=["hand-written", "generic"])
@pytest.mark.parametrize("planted", [None, 1])
def test_a_flip_in_a_padded_wav2vec2_batch_is_found(generic: bool, planted: int | None) -> None:
    from tests.test_probes_models import tiny_wav2vec2, waveform_batch

    model = tiny_wav2vec2()
    batch = waveform_batch([9, 5, 7])
    adapter = generic_adapter(model) if generic else resolve_adapter(model)
    if planted is None:
        report = attnprobe.reversal_report(model, batch, projections=1, adapter=adapter)
    else:
        with plant_reversal(model, planted, adapter=adapter):
            report = attnprobe.reversal_report(model, batch, projections=1, adapter=adapter)
    assert report.verdict == ("not reversed" if planted is None else
                              f"reversed at block {planted}")
    assert [item.shape[1] for item in report.frame_mapping.maps] == [9, 5, 7]
    assert np.allclose(report.frame_mapping.per_sequence[:, -1], -1.0 if planted else 1.0)


def test_discovery_draws_no_random_numbers_and_leaves_training_state_as_it_was() -> None:
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    torch.manual_seed(0)
    hf_model = Wav2Vec2ForCTC(Wav2Vec2Config(
        vocab_size=12, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=24, conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3),
        num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2, hidden_dropout=0.3,
        attention_dropout=0.3, feat_proj_dropout=0.3))
    toolkit = toolkit_asr()
    toolkit.train()
    batch = toolkit_batch([6, 4], [5, 4])
    statistics = toolkit.encoder.encoders[0].conv_module.norm.running_mean.clone()
    state = torch.get_rng_state()
    generic_adapter(hf_model)
    toolkit_adapter(toolkit, batch)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(module.training for module in (*hf_model.modules(), *toolkit.modules()))
    assert torch.equal(toolkit.encoder.encoders[0].conv_module.norm.running_mean, statistics)
    assert all(parameter.requires_grad for parameter in hf_model.parameters())
