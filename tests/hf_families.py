"""Every speech family of the pinned transformers, as a tiny random model built without any
per-family code (for the generic-path tests and ``benchmarks/generic_families.py``).

:func:`speech_families` lists the model types that take audio, read from transformers' auto
mappings: the CTC, speech-to-text, RNN-T, TDT and audio / frame classification / x-vector task
classes, the multimodal LMs whose feature extractor is a speech one, and the ``*_encoder`` /
``*_audio`` towers. Each gets one class, the first of its task classes in :data:`TASK_MAPPINGS`
order.

:func:`tiny_model` takes the config class's defaults and shrinks them by attribute *name*,
recursing into sub-configs (widths 32, feed-forward 64, 2 heads, 2 layers, vocabularies 256 but
never below the largest special token id, channels at most 32, fixed input windows 64, dropout and
SpecAugment off). Frontend geometry (mel bins, kernels, strides, sample rates) is kept, so a tiny
model subsamples like the released ones. :data:`OVERRIDES` holds the few fixes the name rules
cannot make, each with its reason.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

WIDTH, FFN, HEADS, LAYERS, VOCAB = 32, 64, 2, 2, 256

_NOT_WIDTH = re.compile(r"mel|feat|input|sampl|position|vocab|token|kernel|stride|window|chunk|"
                        r"bins|rope|freq|fft|hop|codebook|quantiz|context|offset|length|"
                        r"_size_factor")
_WIDTH = re.compile(r"(^|_)(hidden_size|d_model|embed_dim|n_embd|hidden_dim|model_dim|dim|width|"
                    r"proj_size|projection_dim|codevector_dim|output_hidden_size|"
                    r"xvector_output_dim|classifier_proj_size|encoder_hidden_size|"
                    r"text_hidden_size|audio_hidden_size|d_inner_attn)$")
_FFN = re.compile(r"(intermediate_size|ffn_dim|^d_ff$|ffn_hidden_size|intermediate_dim|"
                  r"feedforward_dim|ff_dim|mlp_dim)$")
_HEADS = re.compile(r"(^|_)(num_attention_heads|attention_heads|num_heads|n_head|n_heads|"
                    r"num_attn_heads)$")
_KV_HEADS = re.compile(r"(key_value_heads|num_kv_heads|n_kv_heads)$")
_HEAD_DIM = re.compile(r"(^|_)(head_dim|dim_head|d_kv|attention_head_dim|kv_channels)$")
_DEPTH = re.compile(r"(^|_)(num_hidden_layers|n_layer|n_layers|num_layers|depth|[a-z]+_layers)$")
_NOT_DEPTH = re.compile(r"conv|feat_extract|codebook|quantiz|pos_emb|hidden_layers_to|_layer_")
_CHANNELS = re.compile(r"(^conv_dim$|^tdnn_dim$|channel)")
_EXPERTS = re.compile(r"(num_experts|num_local_experts|n_routed_experts)$")
_TOP_K = re.compile(r"(num_experts_per_tok|moe_topk|top_k)$")
_TOKEN_ID = re.compile(r"(token_id|token_index|_token)$")
_ZERO = re.compile(r"dropout|layerdrop|mask_time_prob|mask_feature_prob|drop_path")
_WINDOW = re.compile(r"^(max_source_positions|max_length)$")
WINDOW = 64
"""Fixed input windows (Whisper's 1500 positions, AST's 1024 frames) shrink to this: the runner
finds the window it must pad to by trial."""

TASK_MAPPINGS = (
    ("ctc", "MODEL_FOR_CTC_MAPPING_NAMES"),
    ("speech-seq2seq", "MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES"),
    ("rnnt", "MODEL_FOR_RNNT_MAPPING_NAMES"),
    ("tdt", "MODEL_FOR_TDT_MAPPING_NAMES"),
    ("audio-lm", "MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES"),
    ("audio-lm", "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES"),
    ("frame-classification", "MODEL_FOR_AUDIO_FRAME_CLASSIFICATION_MAPPING_NAMES"),
    ("audio-classification", "MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES"),
    ("xvector", "MODEL_FOR_AUDIO_XVECTOR_MAPPING_NAMES"),
    ("base", "MODEL_MAPPING_NAMES"),
)
SPEECH_TASKS = tuple(mapping for task, mapping in TASK_MAPPINGS
                     if task not in ("audio-lm", "base"))
SPEECH_EXTRACTORS = ("WhisperFeatureExtractor", "NemotronAsrStreamingFeatureExtractor",
                     "MossTranscribeDiarizeFeatureExtractor", "FunAsrNanoFeatureExtractor",
                     "OmniASRFeatureExtractor", "Qwen3ASRFeatureExtractor",
                     "GraniteSpeechFeatureExtractor")
"""Multimodal LMs whose feature extractor is one of these take speech."""
AUDIO_TOWER = re.compile(r"(_encoder|_audio)$")
NOT_SPEECH_TOWERS = ("mimi_encoder", "wavtokenizer_encoder", "pe_video_encoder", "t5gemma2_encoder",
                     "pocket_tts_audio_tokenizer_encoder", "vibevoice_acoustic_tokenizer_encoder",
                     "pe_audio_encoder", "pe_audio_video_encoder")
"""``*_encoder`` / ``*_audio`` types that are codecs, video or text towers, not speech encoders."""

OVERRIDES: dict[str, tuple[dict, str]] = {
    "fun_asr_nano": ({"adaptor_config": {"intermediate_size": WIDTH // 4}},
                     "a validator wants adaptor intermediate_size == text hidden_size // 4"),
    "moonshine_streaming": ({"num_key_value_heads": HEADS},
                            "its default config lacks num_key_value_heads"),
}


@dataclass(frozen=True)
class Family:
    """A model type and the class built for it."""

    model_type: str
    task: str
    class_name: str


def speech_families() -> list[Family]:
    """Every model type of the installed transformers that takes speech (module docstring)."""
    from transformers.models.auto import feature_extraction_auto, modeling_auto

    extractors = dict(feature_extraction_auto.FEATURE_EXTRACTOR_MAPPING_NAMES)
    types: set[str] = set()
    for mapping in SPEECH_TASKS:
        types |= set(getattr(modeling_auto, mapping))
    for mapping in ("MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES",
                    "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES"):
        types |= {name for name in getattr(modeling_auto, mapping)
                  if extractors.get(name) in SPEECH_EXTRACTORS}
    types |= {name for name in modeling_auto.MODEL_MAPPING_NAMES
              if AUDIO_TOWER.search(name) and name not in NOT_SPEECH_TOWERS
              and "video" not in name}
    families = []
    for model_type in sorted(types):
        for task, mapping in TASK_MAPPINGS:
            names = getattr(modeling_auto, mapping)
            if model_type in names:
                class_name = names[model_type]
                if isinstance(class_name, (tuple, list)):
                    class_name = class_name[0]
                families.append(Family(model_type, task, class_name))
                break
    return families


def tiny_model(family: Family, attn_implementation: str = "eager") -> Any:
    """The family's class on a tiny config (module docstring), seeded, in eval mode."""
    import torch
    import transformers

    config = tiny_config(family.model_type)
    model_class = getattr(transformers, family.class_name)
    torch.manual_seed(0)
    try:
        model = model_class._from_config(config, attn_implementation=attn_implementation)
    except (ValueError, ImportError):  # families without that attention implementation
        model = model_class._from_config(config)
    return model.eval()


def tiny_config(model_type: str) -> Any:
    """The default config of ``model_type``, shrunk by name, with any :data:`OVERRIDES`."""
    from transformers import CONFIG_MAPPING

    if model_type == "speech-encoder-decoder":
        return _speech_encoder_decoder()
    config = shrunk(CONFIG_MAPPING[model_type]())
    if model_type in OVERRIDES:
        _apply(config, OVERRIDES[model_type][0])
    return config


def shrunk(config: Any) -> Any:
    """A copy of ``config`` shrunk by the name rules of the module docstring."""
    config = copy.deepcopy(config)
    _shrink(config, _largest_token_id(config.to_dict()))
    return config


def _speech_encoder_decoder() -> Any:
    """Its config has no defaults: a tiny Wav2Vec2 encoder with a tiny BERT decoder."""
    from transformers import BertConfig, SpeechEncoderDecoderConfig, Wav2Vec2Config

    config = SpeechEncoderDecoderConfig.from_encoder_decoder_configs(
        shrunk(Wav2Vec2Config()), shrunk(BertConfig(is_decoder=True, add_cross_attention=True)))
    config.decoder_start_token_id, config.pad_token_id = 1, 0
    return config


def _largest_token_id(tree: Any) -> int:
    largest = -1
    for key, value in tree.items() if isinstance(tree, dict) else ():
        if isinstance(value, dict):
            largest = max(largest, _largest_token_id(value))
        elif (isinstance(value, int) and not isinstance(value, bool) and _TOKEN_ID.search(key)
              and not key.startswith("num")):
            largest = max(largest, value)
    return largest


def _shrunk_value(key: str, value: Any, heads_before: set[int], largest_token: int) -> Any:
    if isinstance(value, bool):
        return value
    if key == "downsample_hidden_size":  # convolution channels, named like a sampling setting
        return min(value, WIDTH)
    if isinstance(value, float) and _ZERO.search(key):
        return 0.0
    if isinstance(value, (list, tuple)) and value and all(
            isinstance(item, int) and not isinstance(item, bool) for item in value):
        if key == "depths":
            return type(value)(min(item, 1) for item in value)
        if _CHANNELS.search(key) and not _NOT_WIDTH.search(key.replace("channel", "")):
            return type(value)(min(item, WIDTH) for item in value)
        return value
    if _WINDOW.search(key) and isinstance(value, int) and value > WINDOW:
        return WINDOW
    if key == "vocab_size" and value is None:
        return 32  # the CTC heads of Wav2Vec2-Conformer / -BERT have no default vocabulary
    if not isinstance(value, int):
        return value
    rules = ((key == "vocab_size", lambda: max(min(value, VOCAB), largest_token + 1)
              if largest_token < value else value),
             (bool(_EXPERTS.search(key)), lambda: min(value, 4)),
             (bool(_TOP_K.search(key)), lambda: min(value, 2)),
             (bool(_KV_HEADS.search(key)), lambda: HEADS if value in heads_before else 1),
             (bool(_HEADS.search(key)), lambda: min(value, HEADS)),
             (bool(_HEAD_DIM.search(key)), lambda: min(value, WIDTH // HEADS)),
             (bool(_DEPTH.search(key)) and not _NOT_DEPTH.search(key),
              lambda: min(value, LAYERS)),
             (key in ("num_filters", "base_channels"), lambda: min(value, 8)),
             (bool(_NOT_WIDTH.search(key)), lambda: value),
             (bool(_FFN.search(key)), lambda: min(value, FFN)),
             (bool(_WIDTH.search(key) or _CHANNELS.search(key)), lambda: min(value, WIDTH)))
    return next((rule() for applies, rule in rules if applies), value)


def _shrink(config: Any, largest_token: int) -> None:
    """Shrink ``config`` in place: attributes of the object itself, so that values its class
    derives in ``__init__`` survive (a ``to_dict`` / ``from_dict`` round trip loses some)."""
    from transformers import PretrainedConfig

    attributes = {key: value for key, value in vars(config).items() if not key.startswith("_")}
    heads_before = {value for key, value in attributes.items()
                    if _HEADS.search(key) and isinstance(value, int)}
    widths: dict[int, int] = {}
    depths: dict[int, int] = {}
    for key, value in attributes.items():
        if key in ("id2label", "label2id") or (isinstance(value, dict) and "model_type" in value):
            continue
        if isinstance(value, PretrainedConfig):
            _shrink(value, largest_token)
            continue
        new = _shrunk_value(key, value, heads_before, largest_token)
        if new is not value and new != value:
            if isinstance(value, int) and _DEPTH.search(key):
                depths[value] = new
            if isinstance(value, int) and _WIDTH.search(key):
                widths[value] = new
            setattr(config, key, new)
    for key, value in attributes.items():
        # grouped convolutions over the width follow the width; per-layer lists the depth
        if key.endswith("groups") and isinstance(value, int) and value in widths:
            setattr(config, key, widths[value])
        if (isinstance(value, (list, tuple)) and len(value) in depths
                and not _CHANNELS.search(key)):
            setattr(config, key, value[: depths[len(value)]])


def _apply(config: Any, overrides: dict) -> None:
    for key, value in overrides.items():
        if isinstance(value, dict) and not isinstance(getattr(config, key, None), dict):
            _apply(getattr(config, key), value)
        else:
            setattr(config, key, value)
