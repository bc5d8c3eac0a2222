"""Tiny random torchaudio models, padded batches for them, and the checks every adapter test shares
(the model is left exactly as it was; attention rows are distributions over valid keys)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

DIM = 8
HEADS = 2
LAYERS = 2
SEGMENT = 4
WAVEFORM_CONVOLUTIONS = [(8, 10, 5), (8, 3, 2)]


def tiny_conformer(seed: int = 0, convolution_first: bool = False) -> nn.Module:
    """``torchaudio.models.Conformer``: 2 layers, dim 8, 2 heads, in eval mode."""
    from torchaudio.models import Conformer

    torch.manual_seed(seed)
    return Conformer(input_dim=DIM, num_heads=HEADS, ffn_dim=16, num_layers=LAYERS,
                     depthwise_conv_kernel_size=3, convolution_first=convolution_first).eval()


def tiny_emformer(seed: int = 0, right_context: int = 0, memory: int = 0,
                  left_context: int = 0) -> nn.Module:
    """``torchaudio.models.Emformer``: 2 layers, dim 8, 2 heads, segments of 4 frames, eval mode."""
    from torchaudio.models import Emformer

    torch.manual_seed(seed)
    return Emformer(input_dim=DIM, num_heads=HEADS, ffn_dim=16, num_layers=LAYERS,
                    segment_length=SEGMENT, left_context_length=left_context,
                    right_context_length=right_context, max_memory_size=memory).eval()


def tiny_wav2vec2(seed: int = 0, style: str = "hubert-base") -> nn.Module:
    """``torchaudio.models.wav2vec2_model`` with tiny sizes, in eval mode.

    ``style="hubert-base"`` takes ``hubert_base``'s choices (group-norm extractor, no conv bias,
    LayerNorm after each sub-layer); ``style="wav2vec2-large"`` takes ``wav2vec2_large``'s
    (layer-norm extractor, conv bias, LayerNorm first).
    """
    from torchaudio.models import wav2vec2_model

    large = style == "wav2vec2-large"
    torch.manual_seed(seed)
    return wav2vec2_model(
        extractor_mode="layer_norm" if large else "group_norm",
        extractor_conv_layer_config=WAVEFORM_CONVOLUTIONS, extractor_conv_bias=large,
        encoder_embed_dim=16, encoder_projection_dropout=0.0, encoder_pos_conv_kernel=4,
        encoder_pos_conv_groups=2, encoder_num_layers=LAYERS, encoder_num_heads=HEADS,
        encoder_attention_dropout=0.0, encoder_ff_interm_features=32,
        encoder_ff_interm_dropout=0.0, encoder_dropout=0.0, encoder_layer_norm_first=large,
        encoder_layer_drop=0.0, aux_num_out=5,
    ).eval()


def padded_features(lengths: list[int], extra_frames: int = 0, seed: int = 0
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(batch, max(lengths) + extra_frames, DIM)`` random features and ``(batch,)`` lengths."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(len(lengths), max(lengths) + extra_frames, DIM, generator=generator)
    return features, torch.tensor(lengths)


def padded_waveforms(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(batch, max(lengths))`` random waveforms, zero after each length, and ``(batch,)``."""
    generator = torch.Generator().manual_seed(seed)
    waveforms = torch.randn(len(lengths), max(lengths), generator=generator)
    valid = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
    return waveforms * valid, torch.tensor(lengths)


@dataclass
class ModelSnapshot:
    """Everything a trace must leave as it found it."""

    hooks: dict[str, tuple]
    attributes: dict[str, set[str]]
    tensors: dict[str, torch.Tensor]
    training: dict[str, bool]


def snapshot(model: nn.Module) -> ModelSnapshot:
    tensors = {f"parameter {name}": value.detach().clone()
               for name, value in model.named_parameters()}
    tensors |= {f"buffer {name}": value.clone() for name, value in model.named_buffers()}
    return ModelSnapshot(
        hooks={name: _hook_state(module) for name, module in model.named_modules()},
        attributes={name: set(vars(module)) for name, module in model.named_modules()},
        tensors=tensors,
        training={name: module.training for name, module in model.named_modules()},
    )


def _hook_state(module: nn.Module) -> tuple:
    return (list(module._forward_hooks.items()), list(module._forward_pre_hooks.items()),
            list(module._backward_hooks.items()), list(module._backward_pre_hooks.items()),
            set(module._forward_hooks_with_kwargs), set(module._forward_hooks_always_called),
            set(module._forward_pre_hooks_with_kwargs))


def assert_restored(model: nn.Module, before: ModelSnapshot) -> None:
    after = snapshot(model)
    assert after.hooks == before.hooks, "a hook was left on the model"
    assert after.attributes == before.attributes, "an instance attribute was added or removed"
    assert after.training == before.training
    assert after.tensors.keys() == before.tensors.keys()
    for name, value in before.tensors.items():
        assert torch.equal(after.tensors[name], value), f"{name} changed"


def assert_rows_are_distributions(attention: torch.Tensor, query_lengths: torch.Tensor,
                                  key_lengths: torch.Tensor) -> None:
    """Valid queries put mass 1 on valid keys and exactly 0 on padded keys.

    Args:
        attention: ``(batch, heads, query_frames, key_frames)``.
        query_lengths / key_lengths: ``(batch,)``.
    """
    for item in range(attention.shape[0]):
        rows = attention[item, :, : int(query_lengths[item])]
        valid_keys = int(key_lengths[item])
        assert torch.allclose(rows[..., :valid_keys].sum(-1), torch.ones(()), atol=1e-5)
        assert torch.all(rows[..., valid_keys:] == 0)
