"""``--model torchaudio:<builder>:<weights.pt>``: a torchaudio wav2vec2 / HuBERT model built by
``torchaudio.models.<builder>`` with those weights, labels from ``labels.txt`` beside the weights
(or torchaudio's LibriSpeech characters for a 29-output head)."""

from __future__ import annotations

from pathlib import Path

import torch

from attnprobe.adapters import resolve_adapter
from attnprobe.errors import ModelLoadError

from .loaded_model import LoadedModel
from .transcripts import CharacterTokenizer, first_line

TORCHAUDIO_BUILDERS = ("wav2vec2_base", "wav2vec2_large", "wav2vec2_large_lv60k", "hubert_base",
                       "hubert_large", "hubert_xlarge")


def load_torchaudio(spec: str) -> LoadedModel:
    """The model ``torchaudio:<builder>:<weights.pt>`` names, with its CTC labels when known.

    Raises:
        ModelLoadError: unknown builder, missing or unreadable weights, weights of another model.
    """
    _, _, rest = spec.partition(":")
    builder_name, _, weights_text = rest.partition(":")
    usage = (f"use torchaudio:<builder>:<weights.pt> with builder one of "
             f"{', '.join(TORCHAUDIO_BUILDERS)}")
    if builder_name not in TORCHAUDIO_BUILDERS:
        raise ModelLoadError(f"unknown torchaudio builder {builder_name!r}; {usage}")
    weights = Path(weights_text).expanduser()
    if not weights_text or not weights.is_file():
        raise ModelLoadError(f"torchaudio weights {weights_text!r} do not exist; {usage}")
    import torchaudio

    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for damaged files
        raise ModelLoadError(f"cannot read {weights} as torch weights ({first_line(error)}); "
                             f"save them with torch.save(model.state_dict(), path)") from error
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"{weights} is not a state dict; save it with "
                             f"torch.save(model.state_dict(), path)")
    outputs = int(state["aux.weight"].shape[0]) if "aux.weight" in state else None
    model = getattr(torchaudio.models, builder_name)(aux_num_out=outputs)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ModelLoadError(f"{weights} does not fit torchaudio.models.{builder_name} "
                             f"({first_line(error)}); pick the builder the weights came from"
                             ) from error
    labels = _torchaudio_labels(weights, outputs)
    tokenizer = None
    if labels is not None:
        tokenizer = CharacterTokenizer({label: index for index, label in enumerate(labels)
                                        if index != 0}, separator="|", case="upper")
    rate = 16000
    return LoadedModel(model.eval(), resolve_adapter(model), f"{builder_name} ({weights.name})", rate,
                       lambda samples: torch.as_tensor(samples, dtype=torch.float32),
                       tokenizer=tokenizer, ctc_blank=0 if outputs else None)


def _torchaudio_labels(weights: Path, outputs: int | None) -> tuple[str, ...] | None:
    """Labels of a torchaudio CTC head: ``labels.txt`` beside the weights (one per line, the blank
    first), else torchaudio's LibriSpeech characters when the head has their 29 outputs."""
    listed = weights.with_name("labels.txt")
    if listed.is_file():
        labels = tuple(line.rstrip("\n") for line in listed.read_text().splitlines() if line)
        if outputs is not None and len(labels) != outputs:
            raise ModelLoadError(f"{listed} lists {len(labels)} labels but the CTC head has "
                                 f"{outputs} outputs; list one label per output, the blank first")
        return labels
    if outputs is None:
        return None
    import torchaudio

    librispeech = tuple(torchaudio.pipelines.WAV2VEC2_ASR_BASE_960H.get_labels())
    return librispeech if outputs == len(librispeech) else None
