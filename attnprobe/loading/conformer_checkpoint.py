"""Checkpoints of attnprobe's own Conformer AED: one ``torch.save`` file holding everything needed
to run it on audio.

Format (``format = "attnprobe-conformer-aed/1"``), a dict of plain values and tensors, so that
``torch.load(..., weights_only=True)`` reads it::

    {"format": "attnprobe-conformer-aed/1",
     "config": ConformerAEDConfig.to_dict(),
     "state_dict": model.state_dict(),
     "labels": [" ", "'", "a", ..., "z"],     # symbols of label ids 2, 3, ... (0 blank, 1 end)
     "feature_mean": [80 floats] or None,    # training statistics of the log-mel features;
     "feature_std": [80 floats] or None,     #   None: each utterance normalised by itself
     "description": "my-run, 1200 steps"}

:func:`load_conformer` turns a checkpoint into a :class:`~attnprobe.loading.LoadedModel` (what
``--model`` gives the command line).

A checkpoint folder holds ``model.pt`` in this format (or exactly one ``*.pt`` file). The training
checkpoints of ``benchmarks/reproduction/train.py`` are read too: ``{"step", "model_config",
"state_dict"}`` with float16 tensors and character labels, no feature statistics (each utterance
is then normalised by itself); a folder of them (``step-000100.pt``, ...) or a run folder holding
``checkpoints/`` gives its last step.

Usage::

    save_conformer_checkpoint(model, "checkpoints/my-run/model.pt",
                              feature_mean=mean, feature_std=std, description="my-run")
    checkpoint = read_conformer_checkpoint("checkpoints/my-run")
    model = checkpoint.build_model()
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from attnprobe.adapters import resolve_adapter
from attnprobe.errors import CheckpointError, ModelLoadError
from attnprobe.labels import CHARACTER_LABELS

from .loaded_model import LoadedModel
from .transcripts import CharacterTokenizer

CHECKPOINT_FORMAT = "attnprobe-conformer-aed/1"
CHECKPOINT_FILE = "model.pt"
TRAINING_STEP = re.compile(r"step-\d+\.pt")
"""Names of the reproduction's training checkpoints; zero-padded, so they sort by step."""


@dataclass(frozen=True)
class ConformerCheckpoint:
    """The contents of a checkpoint file.

    Attributes:
        path: the file it was read from.
        config: keyword values of :class:`~attnprobe.models.ConformerAEDConfig`.
        state_dict: parameter name -> tensor.
        labels: symbol of every real label id, from id 2 on.
        feature_mean / feature_std: ``(80,)`` normalisation statistics, or ``None``.
        description: free text written by the trainer.
    """

    path: Path
    config: dict
    state_dict: dict[str, torch.Tensor]
    labels: tuple[str, ...]
    feature_mean: torch.Tensor | None
    feature_std: torch.Tensor | None
    description: str

    def build_model(self) -> torch.nn.Module:
        """The :class:`~attnprobe.models.ConformerAED` with these weights, in eval mode."""
        from attnprobe.models import ConformerAED, ConformerAEDConfig

        try:
            config = ConformerAEDConfig.from_dict(self.config)
        except (TypeError, ValueError) as error:
            raise CheckpointError(f"{self.path}: its config does not build a ConformerAED "
                                  f"({error}); re-save it with save_conformer_checkpoint"
                                  ) from error
        model = ConformerAED(config)
        try:
            model.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as error:
            reason = str(error).strip().splitlines()[0]
            raise CheckpointError(f"{self.path}: its weights do not fit its config ({reason}); "
                                  f"the file is damaged or was written by another model") from error
        return model.eval()


def save_conformer_checkpoint(model: torch.nn.Module, path: str | Path, *,
                              labels: Sequence[str] | None = None,
                              feature_mean: torch.Tensor | None = None,
                              feature_std: torch.Tensor | None = None,
                              description: str = "") -> Path:
    """Write ``model`` (a ConformerAED) and what its inputs need to ``path``; returns the path.

    Args:
        labels: symbols of label ids 2, 3, ...; default: the character labels
            (:data:`attnprobe.labels.CHARACTER_LABELS`).
        feature_mean / feature_std: ``(80,)`` per-bin statistics the model was trained with.
    """
    symbols = list(CHARACTER_LABELS.symbols if labels is None else labels)
    real_labels = model.config.vocab_size - 2
    if len(symbols) != real_labels:
        raise CheckpointError(f"{len(symbols)} label symbols for a model with {real_labels} real "
                              f"labels (vocab_size {model.config.vocab_size} minus blank and end); "
                              f"pass labels= one symbol per id from 2 on")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "format": CHECKPOINT_FORMAT,
        "config": model.config.to_dict(),
        "state_dict": {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()},
        "labels": symbols,
        "feature_mean": None if feature_mean is None else torch.as_tensor(feature_mean).float(),
        "feature_std": None if feature_std is None else torch.as_tensor(feature_std).float(),
        "description": description,
    }
    temporary = path.with_name(f".{path.name}.partial")
    torch.save(document, temporary)
    temporary.replace(path)
    return path


def checkpoint_file(path: str | Path) -> Path:
    """The checkpoint file that ``path`` (a file, or a folder holding one) names."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise CheckpointError(f"{path} does not exist; pass a checkpoint file or its folder")
    if (path / CHECKPOINT_FILE).is_file():
        return path / CHECKPOINT_FILE
    if (path / "checkpoints").is_dir():
        return checkpoint_file(path / "checkpoints")
    candidates = sorted(path.glob("*.pt"))
    steps = [candidate for candidate in candidates if TRAINING_STEP.fullmatch(candidate.name)]
    if len(candidates) == 1 or (candidates and steps == candidates):
        return candidates[-1]
    if not candidates:
        raise CheckpointError(f"{path} holds no weights: an attnprobe checkpoint folder needs "
                              f"{CHECKPOINT_FILE} (written by save_conformer_checkpoint)")
    raise CheckpointError(f"{path} holds {len(candidates)} .pt files "
                          f"({', '.join(candidate.name for candidate in candidates)}); pass one of "
                          f"them, or name the one to use {CHECKPOINT_FILE}")


def read_conformer_checkpoint(path: str | Path) -> ConformerCheckpoint:
    """Read a checkpoint file, or the one in a checkpoint folder.

    Raises:
        CheckpointError: no file, an unreadable file, or one in another format; the message says
            which and how to fix it.
    """
    file = checkpoint_file(path)
    try:
        document = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for damaged files
        reason = str(error).strip().split(". ")[0].splitlines()[0] if str(error).strip() else ""
        raise CheckpointError(f"cannot read {file} as a torch checkpoint ({type(error).__name__}: "
                              f"{reason}); the file is damaged or not a checkpoint") from error
    if isinstance(document, dict) and document and all(
            isinstance(value, torch.Tensor) for value in document.values()):
        raise CheckpointError(f"{file} holds bare weights (a state dict) without a model config; "
                              f"for torchaudio wav2vec2 / HuBERT weights pass "
                              f"torchaudio:<builder>:{file} (e.g. torchaudio:wav2vec2_base:{file})")
    if isinstance(document, dict) and {"model_config", "state_dict"} <= set(document):
        return _training_checkpoint(file, document)
    if not isinstance(document, dict) or document.get("format") != CHECKPOINT_FORMAT:
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise CheckpointError(f"{file} is not an attnprobe Conformer checkpoint (format "
                              f"{found!r}, expected {CHECKPOINT_FORMAT!r}); write it with "
                              f"attnprobe.loading.save_conformer_checkpoint")
    missing = [key for key in ("config", "state_dict", "labels") if key not in document]
    if missing:
        raise CheckpointError(f"{file} lacks {', '.join(missing)}; re-save it with "
                              f"save_conformer_checkpoint")
    return ConformerCheckpoint(file, dict(document["config"]), dict(document["state_dict"]),
                               tuple(document["labels"]), document.get("feature_mean"),
                               document.get("feature_std"), str(document.get("description", "")))


def _training_checkpoint(file: Path, document: dict) -> ConformerCheckpoint:
    """A checkpoint of the reproduction's training loop, widened to float32."""
    state = {name: tensor.float() if tensor.is_floating_point() else tensor
             for name, tensor in document["state_dict"].items()}
    run = file.parent.parent.name if file.parent.name == "checkpoints" else file.parent.name
    description = f"{run} step {document['step']}" if "step" in document else file.stem
    return ConformerCheckpoint(file, dict(document["model_config"]), state,
                               tuple(CHARACTER_LABELS.symbols), None, None, description)


def load_conformer(path: Path) -> LoadedModel:
    """The attnprobe Conformer checkpoint file or folder at ``path``, ready for audio."""
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
    from attnprobe.features import SAMPLE_RATE, log_mel
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
    return LoadedModel(model.eval(), resolve_adapter(model), name, SAMPLE_RATE, extract,
                       tokenizer=tokenizer, transcriber=transcribe, alignment_heads=[(0, 0)],
                       trained=trained, notes=notes)
