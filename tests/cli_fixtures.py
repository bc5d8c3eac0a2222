"""Small inputs for the command-line tests: a tiny random Conformer checkpoint, clips of the
shipped utterance written in any format, and a command runner that captures what it prints."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from attnprobe.audio import SHIPPED_UTTERANCE
from attnprobe.cli import main
from attnprobe.loading.conformer_checkpoint import save_conformer_checkpoint
from attnprobe.models import ConformerAED, ConformerAEDConfig

TINY_CONFORMER = dict(vocab_size=30, frontend_channels=(4, 4), d_model=16, heads=2, ff_dim=32,
                      conv_kernel=3, blocks=2, embed_dim=8, lstm_dim=16, attention_dim=16,
                      readout_dim=16, dropout=0.0)
CLIP_SECONDS = 0.8
CLIP_TEXT = "my brother"
"""The first two words of the shipped utterance end at 0.705 s, inside the first 0.8 s."""


def tiny_checkpoint(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised 2-block Conformer AED with character labels, saved to ``folder``."""
    torch.manual_seed(seed)
    model = ConformerAED(ConformerAEDConfig.tiny(**TINY_CONFORMER))
    return save_conformer_checkpoint(model, folder / "model.pt", description="tiny test model")


def tiny_wav2vec2_ctc_folder(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised 1-layer Wav2Vec2ForCTC saved with ``save_pretrained`` (no tokenizer:
    the report then probes the encoder alone)."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    torch.manual_seed(seed)
    config = Wav2Vec2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=16, conv_dim=(8, 8), conv_stride=(5, 4),
                            conv_kernel=(10, 8), num_feat_extract_layers=2, vocab_size=10,
                            num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2)
    Wav2Vec2ForCTC(config).save_pretrained(folder)
    return folder


def shipped_words() -> list[dict]:
    return json.loads(SHIPPED_UTTERANCE.with_suffix(".json").read_text())["words"]


def write_clip(path: Path, seconds: float = CLIP_SECONDS, rate: int = 16000,
               channels: int = 1, sidecar_text: str | None = None) -> Path:
    """The first ``seconds`` of the shipped utterance, written by soundfile in the format of
    ``path``'s suffix, at ``rate`` with ``channels`` identical channels; with ``sidecar_text``
    also ``<name>.json`` holding the text and the words' exact times."""
    import soundfile
    import torchaudio.functional

    samples, source_rate = soundfile.read(str(SHIPPED_UTTERANCE), dtype="float32")
    clip = torch.from_numpy(samples[: int(seconds * source_rate)])
    if rate != source_rate:
        clip = torchaudio.functional.resample(clip, source_rate, rate)
    data = np.repeat(clip.numpy()[:, None], channels, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), data, rate)
    if sidecar_text is not None:
        count = len(sidecar_text.split())
        path.with_suffix(".json").write_text(json.dumps(
            {"text": sidecar_text, "words": shipped_words()[:count]}))
    return path


def words_within(seconds: float) -> str:
    """The shipped utterance's words that end within its first ``seconds``."""
    return " ".join(word["word"] for word in shipped_words() if word["end"] <= seconds)


def write_manifest(folder: Path, seconds: list[float], extra: list[dict] | None = None) -> Path:
    """``folder/manifest.jsonl`` over clips of the shipped utterance lasting ``seconds`` (ids
    ``utt0``, ``utt1``, ...; each with its words and their exact times), then ``extra`` entries."""
    entries = []
    for index, length in enumerate(seconds):
        text = words_within(length)
        clip = write_clip(folder / f"utt{index}.wav", seconds=length)
        count = len(text.split())
        entries.append({"id": f"utt{index}", "audio": clip.name, "text": text,
                        "words": shipped_words()[:count]})
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(entry) + "\n" for entry in entries + (extra or [])))
    return manifest


def files_of(folder: Path) -> dict[str, bytes]:
    """Every visible file under ``folder`` (the job state in ``.attnprobe`` left out)."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*"))
            if path.is_file() and ".attnprobe" not in path.relative_to(folder).parts}


@dataclass
class Run:
    """What one command-line call returned and printed."""

    code: int
    out: str
    err: str


def run_cli(capsys: pytest.CaptureFixture[str], *arguments: object) -> Run:
    """``attnprobe <arguments>`` in this process, with its output captured."""
    capsys.readouterr()
    code = main([str(argument) for argument in arguments])
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)
